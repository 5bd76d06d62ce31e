"""A run folder that travels: trained on one machine, predicted where the competition's
files lie elsewhere (a code competition's notebook reads them under /kaggle/input), and a
predict stage that never deletes what training made."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import build_config
from pipeline.data.decoded import clear_cache
from tests.test_competition import cli_config, edit_csv, run_cli


def _fold(cfg: dict[str, Any]) -> Path:
    return Path(cfg["output_dir"]) / cfg["name"] / "seed0" / "fold0"


def _trained(cfg: dict[str, Any]) -> dict[str, bytes]:
    """The files training made in fold 0, by name."""
    return {p.name: p.read_bytes() for p in _fold(cfg).iterdir()
            if p.name in ("metrics.json", "best.pt", "last.pt", "preprocess.json")}


def _image_run(competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
               ) -> tuple[dict[str, Any], Path]:
    cfg = cli_config(competition_factory, "image", "binary")
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    return cfg, path


def _images(cfg: dict[str, Any], split: str) -> list[Path]:
    folder = Path(cfg["competition"]["dir"])
    return [folder / rel for rel in pd.read_csv(folder / f"{split}.csv")["image"]]


def test_predict_refusing_a_fold_trained_on_other_images_deletes_nothing(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """`pipeline predict` found a fold stale (its train images changed) and reset it: its
    weights, checkpoint and metrics deleted, hours of training lost in a stage that only
    reads them. It refuses now, saying what changed and what to run, and deletes nothing."""
    from PIL import Image

    cfg, path = _image_run(competition_factory, tmp_path, capsys)
    before = _trained(cfg)
    assert {"metrics.json", "best.pt"} <= set(before)
    first = _images(cfg, "train")[0]
    Image.new("RGB", (30, 30), (9, 9, 9)).save(first)  # another image under its name
    clear_cache()
    assert main(["predict", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train file changed since it trained: run the train stage first" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _trained(cfg) == before


def test_train_images_with_new_times_alone_keep_their_folds(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, one_thread) -> None:
    """Images copied or re-extracted get new modification times: every fold was trained
    again (and `pipeline predict` refused). Names and sizes as recorded, they are the
    same images; a warning says so and how to retrain if they were edited."""
    cfg, path = _image_run(competition_factory, tmp_path, capsys)
    before = _trained(cfg)
    for image in _images(cfg, "train"):
        stat = image.stat()
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**12))
    clear_cache()
    with caplog.at_level(logging.WARNING):
        assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert _trained(cfg) == before
    assert "modification times changed since the folds trained" in caplog.text
    assert "trained again" not in caplog.text


def test_a_competition_read_from_another_folder_keeps_its_run(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """The competition folder was in the train hash: the same files under another path (a
    code competition's /kaggle/input, another disk) refused the run as another config's, so
    the notebook could only retrain it. The files are recorded by content; the folder is
    where they lie. The submission is checked against the folder it predicted from."""
    cfg, _ = _image_run(competition_factory, tmp_path, capsys)
    before = _trained(cfg)
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "kaggle" / "input" / old.name
    shutil.copytree(old, new, copy_function=shutil.copy)  # new modification times
    shutil.rmtree(old)
    cfg["competition"]["dir"] = str(new)
    clear_cache()
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert _trained(cfg) == before
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    assert json.loads((run_dir / "run.json").read_text())["competition_dir"] == str(new)
    assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    assert _trained(cfg) == before
    assert main(["submit", "--run", str(run_dir), "--submissions-dir",
                 cfg["submissions_dir"]]) == 0, capsys.readouterr().err


def test_the_train_hash_leaves_the_competition_folder_out_and_knows_the_old_one(
        competition_factory, tmp_path: Path) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    here = build_config(cfg)
    there = build_config({**cfg, "competition": {**cfg["competition"], "dir": "/elsewhere"}})
    assert here.train_hash() == there.train_hash()
    # releases before hashed the folder: their records are told apart by it, and still count
    assert here.legacy_train_hash() != there.legacy_train_hash()
    assert here.legacy_train_hash() != here.train_hash()
    other = build_config({**cfg, "train": {**cfg["train"], "epochs": 7}})
    assert other.train_hash() != here.train_hash()


@pytest.mark.parametrize("key", ["name", "pretrained", "tokenizer"])
def test_the_train_hash_names_encoder_files_by_their_own_name(
        competition_factory, key: str) -> None:
    """Weights attached to a notebook lie under /kaggle/input, trained elsewhere: their
    folder is where they lie (their contents are recorded with each fold); their own name
    still tells one model from another."""
    cfg = competition_factory("text" if key == "name" else "image", "binary")

    def encoder(path: str) -> str:
        enc = ({"name": f"hf:{path}"} if key == "name" else
               {"name": "timm:test_resnet", key: path})
        return build_config({**cfg, "model": {**cfg["model"], "encoders": [enc]}}).train_hash()

    assert encoder("/data/models/weights-a") == encoder("/kaggle/input/x/weights-a")
    assert encoder("/data/models/weights-a") != encoder("/data/models/weights-b")


def test_a_run_recorded_under_the_old_hash_is_not_trained_again(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run trained by a release that hashed the competition folder is this config's run:
    an upgrade retrains nothing and refuses nothing."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    legacy = build_config(yaml.safe_load(path.read_text())).legacy_train_hash()
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    for record in [run_dir / "run.json", *run_dir.glob("seed0/fold*/metrics.json")]:
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "config_hash": legacy}))
    before = _trained(cfg)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert _trained(cfg) == before
    assert main(["submit", "--config", str(path)]) == 0, capsys.readouterr().err


def test_a_consistency_run_predicts_a_new_test_set_with_its_weights(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A consistency run trains on the test rows as unlabelled ones. A new test file (the
    hidden set of a code competition) made `pipeline predict` reset every fold, weights
    deleted; a notebook cannot retrain them. Its weights predict the new rows as they are."""
    cfg = competition_factory("tabular", "binary")
    cfg["train"] = {"epochs": 1, "batch_size": 16, "consistency": {
        "method": "fixmatch", "stage": {"passes": 1}}}
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    before = _trained(cfg)
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(x1=f["x1"] * -1.0))
    assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    assert _trained(cfg) == before
    assert main(["submit", "--config", str(path)]) == 0, capsys.readouterr().err


def test_a_new_test_file_predicts_the_test_rows_alone(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A new test file (a code competition's hidden set) made every fold predict its
    held-out rows again too: same weights, rows and predict section, and in a notebook's
    time limit most of the work where the hidden set is small. Only the test rows are
    predicted now; a damaged held-out file is predicted again alone."""
    from pipeline.prediction_state import predictions_current

    cfg = competition_factory("tabular", "binary")
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    fold = _fold(cfg)

    def stamps() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in fold.glob("*.parquet")}

    before = stamps()
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(x1=f["x1"] * -1.0))
    assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    after = stamps()
    assert {n for n in before if after[n] != before[n]} == {"test.parquet", "tta_test.parquet"}
    built = build_config(yaml.safe_load(path.read_text()))
    assert predictions_current(built, 0, 0)

    (fold / "oof.parquet").write_bytes(b"damaged")
    assert not predictions_current(built, 0, 0)
    assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    again = stamps()
    assert {n for n in after if again[n] != after[n]} == {"oof.parquet", "tta_oof.parquet"}
    assert predictions_current(built, 0, 0)


def test_a_blend_follows_its_members_to_a_moved_competition(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Members predicted from the competition's new folder left their blend 'up to date'
    with the old folder recorded: `submit --blend` looked for the sample submission there
    (gone in a notebook) and refused. The blend now takes its members' folder."""
    from tests.test_data_files import _two_members

    cfg, ridge = _two_members(competition_factory, tmp_path, capsys)
    runs = [str(Path(c["output_dir"]) / c["name"]) for c in (cfg, ridge)]
    blend = ["blend", "--runs", *runs, "--method", "mean", "--name", "mix", "--blends-dir",
             str(tmp_path / "blends")]
    assert main(blend) == 0, capsys.readouterr().err
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "kaggle" / "input" / old.name
    shutil.copytree(old, new)
    shutil.rmtree(old)
    for run in (cfg, ridge):
        path = tmp_path / f"{run['name']}.yaml"
        path.write_text(yaml.safe_dump({**run, "competition": {**run["competition"],
                                                                "dir": str(new)}}))
        assert main(["predict", "--config", str(path)]) == 0, capsys.readouterr().err
    assert main(blend) == 0, capsys.readouterr().err
    assert main(["submit", "--blend", str(tmp_path / "blends" / "mix"), "--submissions-dir",
                 cfg["submissions_dir"]]) == 0, capsys.readouterr().err
    written = pd.read_csv(Path(cfg["submissions_dir"]) / "mix.csv")
    assert written["id"].tolist() == pd.read_csv(new / "sample_submission.csv")["id"].tolist()


def test_a_pseudo_label_round_moved_with_its_source_predicts(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A pseudo-label round trained here, copied with its source run to a notebook's folders
    (the config's `pseudo.source` set to the copy): the source's path was in the train hash,
    so `pipeline predict` refused every fold ('not trained under this config') and train
    could only retrain it. The source counts by its name, its labels by their contents."""
    from pipeline.data.decoded import clear_cache

    cfg = competition_factory("tabular", "binary")
    cfg["train"]["epochs"] = 1
    cfg["output_dir"] = str(tmp_path / "here" / "runs")
    source = Path(cfg["output_dir"]) / cfg["name"]
    round1 = {**cfg, "name": "round1", "pseudo": {"source": str(source), "threshold": 0.6}}
    for run in (cfg, round1):
        code, err, _ = run_cli(run, tmp_path, capsys)
        assert code == 0, err
    before = _trained(round1)
    new_runs = tmp_path / "working" / "runs"
    shutil.copytree(cfg["output_dir"], new_runs, copy_function=shutil.copy)
    shutil.rmtree(tmp_path / "here")
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(x1=f["x1"] * -1.0))  # the hidden test set
    clear_cache()
    moved = ["--set", f"output_dir={new_runs}"]
    path = tmp_path / "experiment.yaml"
    assert main(["predict", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    path.write_text(yaml.safe_dump(round1))
    moved += ["--set", f"pseudo.source={new_runs / cfg['name']}"]
    assert main(["predict", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    assert _trained({**round1, "output_dir": str(new_runs)}) == before
    assert main(["submit", "--config", str(path), *moved]) == 0, capsys.readouterr().err


def test_the_folds_file_named_as_where_the_run_trained_keeps_its_folds(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """The notebook's competition folder has another name, so the default folds name does
    too: the README says to set folds.name to the file brought along. A run trained under
    the default name was then another config's: predict refused every fold and said to
    train it again. It predicts now; the folds count by each fold's rows (those moved are
    refused), and the train stage still refuses the folds.name switch as another config
    rather than training the run again in place."""
    cfg = competition_factory("tabular", "binary")
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    before = _trained(cfg)
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "kaggle" / "input" / "the-competition"
    shutil.copytree(old, new, copy_function=shutil.copy)
    shutil.rmtree(old)
    (stem,) = [p.stem for p in Path(cfg["folds_dir"]).glob("*.csv")]
    moved = ["--set", f"competition.dir={new}", "--set", f"folds.name={stem}"]
    assert main(["predict", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    assert _trained(cfg) == before
    assert main(["submit", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    assert main(["train", "--config", str(path), *moved]) == 2
    assert "holds a run of another config (folds.name" in capsys.readouterr().err
    assert _trained(cfg) == before
    edit_csv(Path(cfg["folds_dir"]) / f"{stem}.csv",
             lambda f: f.assign(fold=(f["fold"] + (f.index < 4)) % 2))
    assert main(["predict", "--config", str(path), *moved]) == 2
    err = capsys.readouterr().err
    assert "folds file changed since it trained" in err, err
    assert _trained(cfg) == before


def test_a_moved_run_of_another_config_names_the_key_not_the_new_paths(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A run moved with its weights, its config changed by one key: the refusal listed the
    weights' new path first, a difference that is none (it counts by its name), before or
    in place of the key that made the run another config's."""
    import timm
    import torch

    cfg = cli_config(competition_factory, "image", "binary")
    weights = tmp_path / "here" / "test_resnet.pth"
    weights.parent.mkdir()
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    cfg["model"]["encoders"][0]["pretrained"] = str(weights)
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    moved = tmp_path / "kaggle" / "input" / "weights" / weights.name
    moved.parent.mkdir(parents=True)
    shutil.move(weights, moved)
    assert main(["train", "--config", str(path), "--set", f"model.encoders.0.pretrained={moved}",
                 "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "another config (train.epochs: 1 -> 2)" in err, err


def test_submit_config_follows_the_config_to_a_moved_competition(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """The run and its competition copied elsewhere, the config pointed at both: submit
    --config found the predictions current for the files there, then read the sample
    submission from the folder run.json recorded, gone: 'sample submission file ... not
    found'. It follows the config's folder, checked against the test file there."""
    cfg = competition_factory("tabular", "binary")
    cfg["train"]["epochs"] = 1
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "elsewhere" / old.name
    shutil.copytree(old, new, copy_function=shutil.copy)
    shutil.rmtree(old)
    runs = tmp_path / "elsewhere" / "runs"
    shutil.copytree(cfg["output_dir"], runs, copy_function=shutil.copy)
    shutil.rmtree(cfg["output_dir"])
    moved = ["--set", f"competition.dir={new}", "--set", f"output_dir={runs}"]
    assert main(["submit", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    written = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
    assert written["id"].tolist() == pd.read_csv(new / "sample_submission.csv")["id"].tolist()
    edit_csv(new / "test.csv", lambda f: f.assign(x1=f["x1"] * -1.0))
    assert main(["submit", "--config", str(path), *moved]) == 2
    err = capsys.readouterr().err
    assert f"run pipeline predict --config {path} {' '.join(moved)} first" in err, err


def test_the_leaderboard_leaves_a_moved_runs_competition_folder_out(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run predicted from its competition's new folder keeps the old one in its
    config.yaml: 'differs from best' listed competition.dir (the README: where a run lives
    does not count), in one of the three keys shown."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    code, err, path = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "kaggle" / "input" / old.name
    shutil.copytree(old, new)
    shutil.rmtree(old)
    moved = ["--set", f"competition.dir={new}"]
    assert main(["predict", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    assert main(["train", "--config", str(path), *moved, "--set", "name=other",
                 "--set", "model.encoders.0.params={C: 0.5}"]) == 0, capsys.readouterr().err
    csv = tmp_path / "board.csv"
    assert main(["leaderboard", "--runs-dir", cfg["output_dir"], "--csv", str(csv)]) == 0
    differs = " ".join(pd.read_csv(csv)["differs_from_best"].astype(str))
    assert "competition.dir" not in differs and "model.encoders.0.params.C" in differs, differs
