"""A run or blend copied as into a code competition's notebook, not predicted there:
``submit --run``, ``submit --blend`` and ``blend`` followed the competition folder its
run.json recorded, the old test set's predictions submitted without a word where that folder
was still there. Each refuses in one line naming the command to run first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from tests.test_competition import cli_config, edit_csv, run_cli


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _copied(competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
            hidden: bool) -> tuple[dict[str, Any], Path, Path, list[str]]:
    """Two scikit-learn runs (the config's and 'b') trained here, then the runs and the
    competition copied as into a notebook (working/runs, kaggle/input/<competition>), the
    copy's test file another one where ``hidden``. The original competition stays. Returns
    the config, its path, the copied runs' folder and the options that point at the copies."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    for name in (cfg["name"], "b"):
        code, err, path = run_cli({**cfg, "name": name}, tmp_path, capsys)
        assert code == 0, err
    path.write_text(yaml.safe_dump(cfg))
    old = Path(cfg["competition"]["dir"])
    new = tmp_path / "kaggle" / "input" / old.name
    shutil.copytree(old, new)
    if hidden:  # the hidden test set: same ids, other rows
        edit_csv(new / "test.csv", lambda f: f.assign(x1=f["x1"] * -1.0, x2=f["x2"] + 1.0))
    runs = tmp_path / "working" / "runs"
    shutil.copytree(cfg["output_dir"], runs)
    return cfg, path, runs, ["--set", f"competition.dir={new}", "--set", f"output_dir={runs}"]


def test_a_copied_run_not_predicted_where_it_lies_is_not_submitted(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, path, runs, moved = _copied(competition_factory, tmp_path, capsys, hidden=True)
    copy, subs = runs / cfg["name"], tmp_path / "notebook-submissions"
    submit_run = ["submit", "--run", str(copy), "--submissions-dir", str(subs)]
    assert main(submit_run) == 2  # it wrote the old test set's predictions
    _one_line(capsys, f"{copy} predicted {Path(cfg['competition']['dir']) / 'test.csv'} as "
              f"{(Path(cfg['output_dir']) / cfg['name']).resolve()} and was copied or moved",
              f"pipeline predict --config CONFIG --set output_dir={runs} --set competition.dir=")
    # a scikit-learn run predicts its test rows as it trains: the config's command is train
    submit_config = ["submit", "--config", str(path), *moved, "--submissions-dir", str(subs)]
    assert main(submit_config) == 2
    _one_line(capsys, f"not the test file {copy} predicted: run pipeline train --config "
              f"{path} {' '.join(moved)} first")
    assert not subs.exists()

    assert main(["train", "--config", str(path), *moved]) == 0, capsys.readouterr().err
    assert main(submit_run) == 0, capsys.readouterr().err
    by_run = pd.read_csv(subs / f"{cfg['name']}.csv")
    assert main(submit_config) == 0, capsys.readouterr().err
    by_config = pd.read_csv(subs / f"{cfg['name']}.csv")
    first = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")  # the public set's
    pd.testing.assert_frame_equal(by_run, by_config)
    assert by_run["id"].tolist() == first["id"].tolist()
    assert (by_run["target"] - first["target"]).abs().max() > 0.01  # the hidden rows' own


def _blended(competition_factory: Any, tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> tuple[Any, ...]:
    """:func:`_copied` (public test set) and a mean blend ``mix`` of the two runs where
    they were trained: (cfg, path, runs, moved, blends folder, the runs' folders)."""
    cfg, path, runs, moved = _copied(competition_factory, tmp_path, capsys, hidden=False)
    blends = tmp_path / "blends"
    here = [str(Path(cfg["output_dir"]) / n) for n in (cfg["name"], "b")]
    assert main(["blend", "--runs", *here, "--method", "mean", "--name", "mix",
                 "--blends-dir", str(blends)]) == 0, capsys.readouterr().err
    return cfg, path, runs, moved, blends, here


def test_a_blend_of_copied_members_is_made_and_submitted_once_they_predicted(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, path, runs, moved, blends, _ = _blended(competition_factory, tmp_path, capsys)
    copied_blends = tmp_path / "working" / "blends"
    shutil.copytree(blends, copied_blends)
    members = [str(runs / n) for n in (cfg["name"], "b")]
    blend = ["blend", "--runs", *members, "--method", "mean", "--name", "mix",
             "--blends-dir", str(copied_blends)]
    subs = tmp_path / "notebook-submissions"
    submit_blend = ["submit", "--blend", str(copied_blends / "mix"), "--submissions-dir",
                    str(subs)]
    assert main(blend) == 2
    _one_line(capsys, f"{members[0]} predicted", "copied or moved", "pipeline predict --config")
    assert main(submit_blend) == 2
    _one_line(capsys, "copied or moved", f"pipeline blend --runs <members> --name mix "
              f"--blends-dir {copied_blends}")
    assert not subs.exists()

    for name in (cfg["name"], "b"):  # the notebook's flow: predict, blend again, submit
        assert main(["predict", "--config", str(path), *moved, "--set", f"name={name}"]) == 0
    assert main(blend) == 0, capsys.readouterr().err
    assert main(submit_blend) == 0, capsys.readouterr().err
    written = pd.read_csv(subs / "mix.csv")
    runs_mean = sum(pd.read_parquet(Path(m) / "test.parquet")["target"] for m in members) / 2
    assert written["target"].to_numpy() == pytest.approx(runs_mean.to_numpy())


def test_a_competition_folder_gone_says_to_predict_first(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said 'sample submission file ... not found', not what to run."""
    cfg, _, _, _, blends, here = _blended(competition_factory, tmp_path, capsys)
    gone = Path(cfg["competition"]["dir"])
    shutil.rmtree(gone)
    subs = tmp_path / "notebook-submissions"
    assert main(["submit", "--run", here[0], "--submissions-dir", str(subs)]) == 2
    _one_line(capsys, f"{gone} is not found", "pipeline predict --config CONFIG --set "
              "competition.dir=<the competition's folder>")
    assert main(["submit", "--blend", str(blends / "mix"), "--submissions-dir", str(subs)]) == 2
    _one_line(capsys, f"{gone} is not found", "pipeline blend --runs <members> --name mix")
    assert not subs.exists()


def test_a_run_reached_by_another_path_to_its_own_folder_is_submitted(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The runs folder moved to another disk with a link left at its old place: the run's
    recorded folder still leads to this very folder (as does a case-insensitive disk's other
    spelling, or a second mount), so it is no copy. The string compare refused it, and a
    network run was told to predict every fold again."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    runs = Path(cfg["output_dir"])
    moved = tmp_path / "disk2" / "runs"
    moved.parent.mkdir()
    shutil.move(runs, moved)
    runs.symlink_to(moved, target_is_directory=True)
    subs = tmp_path / "subs"
    for given in (runs / cfg["name"], moved / cfg["name"], f"{moved / cfg['name']}/"):
        assert main(["submit", "--run", str(given), "--submissions-dir", str(subs)]) == 0, \
            capsys.readouterr().err
    first = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
    pd.testing.assert_frame_equal(pd.read_csv(subs / f"{cfg['name']}.csv"), first)
    # a copy beside it is still refused: its recorded folder is another one
    shutil.copytree(moved / cfg["name"], moved / "copy")
    assert main(["submit", "--run", str(moved / "copy"), "--submissions-dir", str(subs)]) == 2
    _one_line(capsys, "was copied or moved since")


def test_a_pseudo_round_on_another_test_file_refuses_the_sources_labels(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pseudo-label round run on the competition's copy with its hidden test set (same ids,
    other rows), its source not predicted there: the source's test file was checked where the
    source recorded it (the old one, unchanged), and its labels of the old rows were paired
    with the new rows' features without a word."""
    from pipeline import pseudo
    from pipeline.config import build_config
    from pipeline.errors import DataError

    cfg, _, _, moved = _copied(competition_factory, tmp_path, capsys, hidden=True)
    source = Path(cfg["output_dir"]) / cfg["name"]
    new_dir = moved[1].split("=", 1)[1]
    net = {"encoders": [{"name": "mlp", "params": {"hidden": [8]}}]}  # a round trains one
    rnd = build_config({**cfg, "name": "round1", "model": net,
                        "competition": {**cfg["competition"], "dir": new_dir},
                        "pseudo": {"source": str(source), "threshold": 0.6}})
    with pytest.raises(DataError) as info:
        pseudo.run(rnd)
    text = str(info.value)
    assert f"{Path(new_dir) / 'test.csv'} is not the test file {source} predicted" in text
    assert "\n" not in text and not (rnd.run_dir / "pseudo").exists()
    same = build_config({**cfg, "name": "round1", "model": net,
                         "pseudo": {"source": str(source), "threshold": 0.6}})
    assert pseudo.run(same).is_dir()  # its own competition's test file: labelled
