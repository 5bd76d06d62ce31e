"""An 'hf:' folder that is no transformers model folder (the dataset's top folder above the
one save_pretrained wrote; a sentence-transformers module folder) ended the run in a
traceback, "ValueError: Unrecognized model in <dir>. Should have a `model_type` key in its
config.json"; now one line, exit 2, naming the model folder below it where there is one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.models.hf_folder import folder_config
from tests.test_competition import run_cli
from tests.test_pretrain_text_image import _tiny_bert


def test_the_folder_above_the_model_is_refused_naming_it(competition_factory, tmp_path: Path,
                                                         capsys) -> None:
    model = _tiny_bert(tmp_path / "dataset" / "model")
    cfg = competition_factory("text", "binary", n_train=16, n_test=4)
    cfg["model"]["encoders"] = [{"name": f"hf:{tmp_path / 'dataset'}", "lr": 1e-4}]
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: encoder 'hf:{tmp_path / 'dataset'}': ")
    assert "holds no config.json" in line and f"'hf:{model.as_posix()}'" in line
    assert not (Path(cfg["output_dir"]) / cfg["name"]).exists()  # nothing half-written
    cfg["model"]["encoders"][0]["name"] = f"hf:{model}"  # the folder it names trains
    cfg["train"]["epochs"] = 1
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err


def test_a_config_json_transformers_cannot_read_is_one_line(tmp_path: Path) -> None:
    pooling = tmp_path / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(json.dumps({"word_embedding_dimension": 384}))
    with pytest.raises(ConfigError, match=r"transformers cannot read .*1_Pooling as a model "
                                          r"folder \(Unrecognized model"):
        folder_config("hf:x", str(pooling), {})
