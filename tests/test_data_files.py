"""Which train and test files a fold was made from (pipeline/data_files.py): a fold, run or
blend predicted from another test file, or trained on another train file, is made again or
refused, never submitted as it is."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.artifacts import read_meta, write_meta
from pipeline.cli import main
from tests.test_competition import cli_config, edit_csv, run_cli


def _submission(cfg: dict[str, Any]) -> pd.DataFrame:
    return pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")


def _test_predictions(cfg: dict[str, Any]) -> np.ndarray:
    frame = pd.read_parquet(Path(cfg["output_dir"]) / cfg["name"] / "test.parquet")
    return frame.select_dtypes("number").to_numpy()


def _metrics(cfg: dict[str, Any]) -> Path:
    return Path(cfg["output_dir"]) / cfg["name"] / "seed0" / "fold0" / "metrics.json"


def _regression(competition_factory) -> dict[str, Any]:
    cfg = cli_config(competition_factory, "tabular", "regression")
    cfg["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LinearRegression"}]}
    cfg["folds"]["scheme"] = "kfold"
    return cfg


def test_a_changed_test_file_is_predicted_again_under_the_same_ids(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A test file corrected under the same config (same ids, other values) left the folds'
    old test predictions in the submission: a scikit-learn fold predicts the test rows as it
    trains, and its record named the config alone."""
    cfg = _regression(competition_factory)
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    before = _submission(cfg)
    edit_csv(test, lambda f: f.assign(x1=f["x1"] + 10.0))
    # the stale run's predictions are refused by submit before any stage runs again
    code = main(["submit", "--run", str(Path(cfg["output_dir"]) / cfg["name"]),
                 "--submissions-dir", cfg["submissions_dir"]])
    err = capsys.readouterr().err
    assert code == 2 and str(test) in err and "changed since" in err, err
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "the test file changed since it trained" in caplog.text
    after = _submission(cfg)
    assert after["id"].tolist() == before["id"].tolist()
    assert not np.allclose(after["y"], before["y"])
    # the same as a run that never saw the old test file
    fresh = {**cfg, "output_dir": str(tmp_path / "fresh"), "submissions_dir":
             str(tmp_path / "fresh_subs")}
    code, err, _ = run_cli(fresh, tmp_path, capsys)
    assert code == 0, err
    np.testing.assert_allclose(after["y"], _submission(fresh)["y"])


def test_a_changed_train_file_trains_the_folds_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = _regression(competition_factory)
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    before = _submission(cfg)
    edit_csv(train, lambda f: f.assign(y=f["y"] * 3.0))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "the train file changed since it trained" in caplog.text
    assert not np.allclose(_submission(cfg)["y"], before["y"])


def test_a_network_fold_trained_again_on_a_changed_train_file_is_a_fresh_one(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fold trained again on a changed train file kept its preprocessing (the scaler, the
    category codes, the regression target's scale) fitted on the old rows: its OOF differed
    from a run that never saw the old file."""
    cfg = cli_config(competition_factory, "tabular", "regression")
    cfg["model"] = {"encoders": [{"name": "mlp", "params": {"hidden": [8]}}]}
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    edit_csv(train, lambda f: f.assign(y=f["y"] * 3.0 + 5.0, x2=f["x2"] * 2.0))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    fresh = {**cfg, "output_dir": str(tmp_path / "fresh")}
    code, err, _ = run_cli(fresh, tmp_path, capsys)
    assert code == 0, err
    oof = [pd.read_parquet(Path(c["output_dir"]) / c["name"] / "oof.parquet")
           for c in (cfg, fresh)]
    pd.testing.assert_frame_equal(*oof)


def test_a_fold_recorded_before_digests_is_not_trained_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A finished run from an earlier release (no digests) is not orphaned."""
    cfg = _regression(competition_factory)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    metrics = json.loads(_metrics(cfg).read_text())
    assert set(metrics["data"]) == {"train", "test", "folds"}
    del metrics["data"]
    _metrics(cfg).write_text(json.dumps(metrics))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "seed0/fold0 (of 2): complete, skipped" in caplog.text
    assert "changed since" not in caplog.text


def test_a_network_predicts_a_new_test_set_with_its_trained_weights(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A code competition swaps in its hidden test set (new ids) under the same config: the
    predict stage kept the folds' old predictions and stopped in a traceback (KeyError)."""
    cfg = cli_config(competition_factory, "tabular", "regression")
    cfg["model"] = {"encoders": [{"name": "mlp", "params": {"hidden": [8]}}]}
    cfg["folds"]["scheme"] = "kfold"
    folder = Path(cfg["competition"]["dir"])
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    trained = _metrics(cfg).read_bytes()
    for name in ("test.csv", "sample_submission.csv"):
        edit_csv(folder / name, lambda f: f.assign(id=f["id"].str.replace("r", "hidden")))
    code = main(["predict", "--config", str(path)])
    assert code == 0, capsys.readouterr().err
    assert _metrics(cfg).read_bytes() == trained  # not trained again
    code = main(["submit", "--config", str(path)])
    assert code == 0, capsys.readouterr().err
    sub = _submission(cfg)
    expected = pd.read_csv(folder / "sample_submission.csv")["id"]
    assert sub["id"].tolist() == expected.tolist()
    assert sub["id"].str.startswith("hidden").all()


def _two_members(competition_factory, tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> tuple[dict, dict]:
    """A regression trained as two runs to blend: the default member and a Ridge ('ridge')."""
    cfg = _regression(competition_factory)
    ridge = {**cfg, "name": "ridge",
             "model": {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}}
    for run in (cfg, ridge):
        code, err, _ = run_cli(run, tmp_path, capsys)
        assert code == 0, err
    return cfg, ridge


def test_blend_refuses_a_member_predicted_from_an_older_test_file(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = _two_members(competition_factory, tmp_path, capsys)
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(x1=f["x1"] * 2.0))
    runs = [str(Path(cfg["output_dir"]) / name) for name in (cfg["name"], "ridge")]
    code = main(["blend", "--runs", *runs, "--method", "mean", "--name", "mix",
                 "--blends-dir", str(tmp_path / "blends")])
    err = capsys.readouterr().err
    assert code == 2 and str(test) in err and "changed since" in err, err
    assert not (tmp_path / "blends" / "mix").exists()


def test_a_blend_of_an_older_test_file_says_to_blend_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A blend made before the test file changed was refused with 'run the train stage
    again', which the competitor had done (its members predicted the new file): the blend
    itself must be made again, and the line says so."""
    cfg, ridge = _two_members(competition_factory, tmp_path, capsys)
    runs = [str(Path(cfg["output_dir"]) / name) for name in (cfg["name"], "ridge")]
    blend = ["blend", "--runs", *runs, "--method", "mean", "--name", "mix",
             "--blends-dir", str(tmp_path / "blends")]
    assert main(blend) == 0
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(x1=f["x1"] * 2.0))
    for run in (cfg, ridge):  # the members predict the new test file
        code, err, _ = run_cli(run, tmp_path, capsys)
        assert code == 0, err
    submit = ["submit", "--blend", str(tmp_path / "blends" / "mix"),
              "--submissions-dir", cfg["submissions_dir"]]
    capsys.readouterr()
    assert main(submit) == 2
    err = capsys.readouterr().err
    assert str(test) in err and "pipeline blend again" in err, err
    assert main(blend) == 0 and main(submit) == 0  # what the line said to do


def test_images_rewritten_in_place_are_predicted_and_trained_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Images replaced under the same train and test files (cropped in place, another test
    set's under the same names) left every fold standing: `pipeline predict` did nothing and
    the submission held the old images' predictions."""
    from PIL import Image

    from pipeline.data.decoded import clear_cache

    cfg = cli_config(competition_factory, "image", "binary")
    cfg["train"]["epochs"] = 1
    folder = Path(cfg["competition"]["dir"])
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    trained = _metrics(cfg).read_bytes()
    before = _submission(cfg)
    assert {"train_images", "test_images"} <= set(json.loads(trained)["data"])
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    shutil.copytree(run_dir, run_dir.with_name("copy"))  # a second member for a blend,
    write_meta(run_dir.with_name("copy"), read_meta(run_dir))  # written where it lies
    blend = tmp_path / "blends" / "mix"
    assert main(["blend", "--runs", str(run_dir), str(run_dir.with_name("copy")), "--method",
                 "mean", "--name", "mix", "--blends-dir", str(blend.parent)]) == 0

    def invert(split: str) -> None:
        for rel in pd.read_csv(folder / f"{split}.csv")["image"]:
            pixels = np.asarray(Image.open(folder / rel))
            Image.fromarray(255 - pixels).save(folder / rel)

    invert("test")
    clear_cache()  # each `pipeline` command is a process of its own, with its own cache
    # test.csv unchanged: submitting alone refused the old images' predictions only since
    for source in (["--run", str(run_dir)], ["--blend", str(blend)]):
        code = main(["submit", *source, "--submissions-dir", cfg["submissions_dir"]])
        err = capsys.readouterr().err
        assert code == 2 and "test images listed in test.csv changed since" in err, err
    assert _submission(cfg).equals(before) and not Path(cfg["submissions_dir"], "mix.csv").exists()
    assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    assert _metrics(cfg).read_bytes() == trained  # a network's weights predict the new images
    assert main(["submit", "--config", str(path)]) == 0, capsys.readouterr().err
    after = _submission(cfg)
    assert after["id"].tolist() == before["id"].tolist()
    assert not np.allclose(after["target"], before["target"])
    invert("train")
    clear_cache()
    caplog.clear()
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "the train file changed since it trained" in caplog.text
    assert _metrics(cfg).read_bytes() != trained


def test_replaced_pretrained_weights_train_the_folds_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, one_thread: None) -> None:
    """The config names a timm encoder's weights by path alone: a file replaced under the
    same path (another version of the weights dataset) left the folds trained from the old
    weights standing, and the submission their predictions."""
    import timm
    import torch

    cfg = competition_factory("image", "binary", n_train=24, n_test=8)
    cfg["train"]["epochs"] = 1
    cfg["folds"]["scheme"] = "kfold"
    weights = tmp_path / "weights.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    cfg["model"]["encoders"][0]["pretrained"] = str(weights)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    before = _test_predictions(cfg)
    caplog.clear()
    code, err, _ = run_cli(cfg, tmp_path, capsys)  # the same weights: nothing retrained
    assert code == 0, err
    assert "changed since it trained" not in caplog.text
    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "the encoder weights file changed since it trained" in caplog.text
    after = _test_predictions(cfg)
    assert not np.allclose(after, before)
    # the same as a run that only ever saw the new weights
    fresh = {**cfg, "output_dir": str(tmp_path / "fresh"),
             "submissions_dir": str(tmp_path / "fresh_subs")}
    code, err, _ = run_cli(fresh, tmp_path, capsys)
    assert code == 0, err
    np.testing.assert_allclose(after, _test_predictions(fresh), rtol=1e-5)
def _tiny_bert(folder: Path, seed: int) -> None:
    """A 1-layer BERT over the test vocabulary saved with its tokenizer in ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    from tests.conftest import write_tokenizer

    write_tokenizer(folder)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(folder)


def test_weights_replaced_in_place_train_the_folds_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """An `hf:<dir>` whose weights were re-saved under the same path (further pretraining,
    another checkpoint copied over) left every fold standing: the config names the path
    alone, and the submission came from models fine-tuned from the old weights."""
    model = tmp_path / "bert"
    _tiny_bert(model, seed=0)
    cfg = cli_config(competition_factory, "text", "binary")
    cfg["model"]["encoders"] = [{"name": f"hf:{model}"}]
    cfg["train"]["epochs"] = 1
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    trained, before = _metrics(cfg).read_bytes(), _submission(cfg)
    assert "train_weights" in json.loads(trained)["data"]
    _tiny_bert(model, seed=0)  # the same weights written again: nothing to retrain
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert _metrics(cfg).read_bytes() == trained
    _tiny_bert(model, seed=1)
    caplog.clear()
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "the encoder weights file changed since it trained" in caplog.text
    assert _metrics(cfg).read_bytes() != trained
    assert not np.allclose(_submission(cfg)["target"], before["target"])
