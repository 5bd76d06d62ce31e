"""A config's output folders (pipeline/output_folders.py): one that is a file, or lies under
a file, is refused in one line when the config loads, before anything is trained or written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main


@pytest.mark.parametrize("key", ["output_dir", "folds_dir", "submissions_dir", "name"])
def test_an_output_folder_that_is_a_file_is_one_line_before_training(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        key: str) -> None:
    """output_dir a file: NotADirectoryError as the log opened; folds_dir: FileExistsError
    with the run folder's log left; submissions_dir: FileExistsError after every fold had
    trained, the run folder left; the run folder itself ('output_dir'/'name') a file."""
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    if key == "name":
        data["output_dir"] = str(tmp_path)
        data["name"] = blocker.name
    else:
        data[key] = str(blocker / "below")  # under a file, as deep as need be
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{key}' " in err and "not a folder" in err, err
    for folder in ("runs", "folds", "submissions"):
        assert not (tmp_path / folder).exists(), folder
    assert blocker.read_text() == "not a folder\n"
