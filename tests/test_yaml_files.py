"""Reading a user's YAML file (pipeline/yaml_files.py): every file that is no usable mapping
is one line naming the file, through ``pipeline <stage>`` as through ``load_config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.yaml_files import read_yaml_mapping

GOOD = "name: exp\nfolds:\n  n_splits: 3\n  seed: 1\n"


@pytest.mark.parametrize(("text", "said"), [
    # a second 'name:' silently replaced the first, a second 'seed:' inside 'folds' too:
    # the run trained under values the config seemed not to hold
    (GOOD + "name: other\n", "key 'name' is given twice in one mapping (lines 1 and 5)"),
    (GOOD.replace("seed: 1\n", "seed: 1\n  seed: 2\n"), "key 'seed' is given twice"),
    # empty or only comments: 'Field required' for name, competition and model said less
    ("", "is empty"), ("# nothing yet\n", "is empty"),
    # a scalar: '0' was read as {} ('Field required' again), 'hello' as a str
    ("0\n", "must hold a mapping at the top level"),
    ("hello\n", "must hold a mapping at the top level"),
    # PyYAML's own message spanned five lines, the file's line quoted under a caret
    ("name: [a\n", "is not valid YAML: expected ',' or ']'"),
    ("name: x\n\tfolds: 1\n", "found character '\\t' that cannot start any token at line 2"),
])
def test_a_yaml_file_that_is_no_usable_mapping_is_one_line(tmp_path: Path, text: str,
                                                           said: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml_mapping(path)
    message = str(info.value)
    assert said in message and str(path) in message and "\n" not in message, message


def test_a_config_that_is_not_utf8_is_one_line_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config saved as Latin-1 (a 'café' comment) raised UnicodeDecodeError from
    read_text: a traceback, exit 1."""
    path = tmp_path / "exp.yaml"
    path.write_bytes(GOOD.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)
    assert main(["folds", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not UTF-8 text" in err and str(path) in err


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """A YAML merge ('<<: *base') then a key of the mapping's own is what YAML means by an
    override, not a key given twice."""
    path = tmp_path / "exp.yaml"
    path.write_text("base: &b {n_splits: 3, seed: 1}\nfolds:\n  <<: *b\n  seed: 2\n")
    assert read_yaml_mapping(path)["folds"] == {"n_splits": 3, "seed": 2}
    assert yaml.safe_load(path.read_text()) == read_yaml_mapping(path)
