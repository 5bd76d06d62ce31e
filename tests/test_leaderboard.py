"""``pipeline leaderboard`` and ``pipeline lb`` (pipeline/leaderboard.py, pipeline/ledger.py):
rows read from real run and blend folders, ranking in the metric's direction, the config keys
that differ from the best run, the ledger's append and refusals, CV-vs-LB correlation and the
ranking-disagreement warning."""

from __future__ import annotations

import argparse
import copy
import csv
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import blend, ledger, train
from pipeline.artifacts import read_json, write_json
from pipeline.cli import build_parser
from pipeline.config import build_config
from pipeline.errors import DataError, PipelineError
from pipeline.leaderboard import config_differences, register
from tests.conftest import make_competition


def _parser() -> argparse.ArgumentParser:
    """The ``pipeline`` parser with this module's subcommands (added here until cli.py
    registers them itself)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "leaderboard" not in sub.choices:
        register(sub)
    return parser


def _call(root: Path, *argv: str) -> int:
    """Run a subcommand from ``root`` (default folders runs/, blends/, submissions/)."""
    args = _parser().parse_args(list(argv))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return int(args.fn(args))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real tabular runs (2 and 1 epochs, hidden 16 and 8) and their mean blend."""
    root = tmp_path_factory.mktemp("project")
    data = make_competition(root, "tabular", "binary")
    data.update(output_dir=str(root / "runs"), submissions_dir=str(root / "submissions"))
    train.run(build_config({**data, "name": "wide"}))
    narrow = copy.deepcopy(data)
    narrow["name"] = "narrow"
    narrow["train"]["epochs"] = 1
    narrow["model"]["encoders"][0]["params"]["hidden"] = [8]
    train.run(build_config(narrow))
    blend.run([root / "runs" / "wide", root / "runs" / "narrow"], method="mean", name="mix",
              blends_dir=root / "blends")
    return root


@pytest.fixture
def copy_of(project: Path, tmp_path: Path) -> Path:
    """A private copy of the project, free to change."""
    for part in ("runs", "blends", "tabular_binary"):
        shutil.copytree(project / part, tmp_path / part)
    (tmp_path / "submissions").mkdir()
    return tmp_path


def _table_rows(out: str) -> list[list[str]]:
    """The table's data lines, split on runs of 2+ spaces."""
    return [re.split(r" {2,}", line.strip()) for line in out.splitlines()
            if re.match(r"^\d+ ", line)]


def test_rows_of_real_runs_and_a_blend(project: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_csv = tmp_path / "board.csv"
    assert _call(project, "leaderboard", "--csv", str(out_csv)) == 0
    out = capsys.readouterr().out
    board = pd.read_csv(out_csv)
    assert sorted(board["name"]) == ["mix", "narrow", "wide"]
    runs = board[board["kind"] == "run"].set_index("name")
    for name in ("wide", "narrow"):
        folder = project / "runs" / name
        scores = read_json(folder / "scores.json")["scores"]
        folds = [scores["seed0/fold0"], scores["seed0/fold1"]]
        metrics = [read_json(folder / f"seed0/fold{k}/metrics.json") for k in (0, 1)]
        row = runs.loc[name]
        assert row["cv"] == pytest.approx(scores["oof"])
        assert row["fold_mean"] == pytest.approx(np.mean(folds))
        assert row["fold_std"] == pytest.approx(np.std(folds))
        assert row["last_cv"] == pytest.approx(scores["oof_last_epoch"])
        assert row["last_fold_mean"] == pytest.approx(
            np.mean([m["last_epoch_score"] for m in metrics]))
        assert row["seconds"] == pytest.approx(
            sum(e["seconds"] for m in metrics for e in m["epochs"]))
        assert row["time_source"] == "epochs"
    cv = read_json(project / "blends" / "mix" / "cv.json")
    mix = board.set_index("name").loc["mix"]
    assert cv["oof"]["from"] == "blender"  # a mean blend's OOF: fitted on no label
    assert mix["cv"] == pytest.approx(cv["oof"]["score"])
    assert mix["nested"] == pytest.approx(cv["nested"]["pooled"])
    assert np.isnan(mix["seconds"])  # blends record no time

    # ranked by the run's OOF CV / the blend's nested CV, higher first (roc_auc)
    ranked = sorted([(runs.loc["wide", "cv"], "wide"), (runs.loc["narrow", "cv"], "narrow"),
                     (mix["nested"], "mix")], reverse=True)
    assert board["name"].tolist() == [n for _, n in ranked]
    assert board["rank"].tolist() == [1, 2, 3]
    assert [r[1] for r in _table_rows(out)] == [n for _, n in ranked]
    assert out.splitlines()[0].endswith("roc_auc (higher is better), 2 run(s), 1 blend(s)")

    # the runs differ in two keys; the worse one lists them, the best says so
    best, other = ("wide", "narrow") if runs.loc["wide", "cv"] >= runs.loc["narrow", "cv"] \
        else ("narrow", "wide")
    assert runs.loc[best, "differs_from_best"] == "(best run)"
    keys = [item.split("=")[0] for item in runs.loc[other, "differs_from_best"].split("; ")]
    assert keys == ["model.encoders.0.params.hidden", "train.epochs"]
    assert mix["differs_from_best"] == "blend: narrow 0.50, wide 0.50"  # as weights.json


def _fake_run(runs_dir: Path, name: str, metric: str, oof: float | None, folds: list[float],
              config: dict[str, Any] | None = None, competition: str = "/data/comp") -> None:
    """A run folder as gather and prepare_run_dir leave it, with chosen scores."""
    folder = runs_dir / name
    folder.mkdir(parents=True)
    direction = "minimize" if metric in ("rmse", "log_loss") else "maximize"
    scores: dict[str, Any] = {"oof": oof, **{f"seed0/fold{k}": s for k, s in enumerate(folds)}}
    write_json(folder / "scores.json", {"metric": metric, "direction": direction,
                                        "scores": scores})
    write_json(folder / "run.json", {"name": name, "competition_dir": competition,
                                     "metric": metric, "leaky": False})
    (folder / "config.yaml").write_text(yaml.safe_dump(config or {"name": name}))


def test_rows_sorted_in_each_metrics_direction(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for name, score in (("r-a", 0.50), ("r-b", 0.30), ("r-c", 0.40)):
        _fake_run(runs, name, "rmse", score, [score - 0.01, score + 0.01], competition="/reg")
    for name, score in (("a-a", 0.70), ("a-b", 0.90), ("a-c", 0.80)):
        _fake_run(runs, name, "roc_auc", score, [score, score], competition="/cls")
    _fake_run(runs, "a-none", "roc_auc", None, [], competition="/cls")  # a null score: last
    assert _call(tmp_path, "leaderboard") == 0
    out = capsys.readouterr().out
    names = [r[1] for r in _table_rows(out)]
    assert names == ["a-b", "a-c", "a-a", "a-none", "r-b", "r-c", "r-a"]  # tables by competition
    assert "/reg: rmse (lower is better), 3 run(s), 0 blend(s)" in out
    assert "/cls: roc_auc (higher is better), 4 run(s), 0 blend(s)" in out
    first = _table_rows(out)[4]
    assert first[3:5] == ["0.30000", "0.30000 +- 0.01000"]


def test_sort_by_name_and_by_lb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for name, score in (("b", 0.8), ("a", 0.7), ("c", 0.9)):
        _fake_run(runs, name, "roc_auc", score, [score])
        (tmp_path / "submissions").mkdir(exist_ok=True)
        (tmp_path / "submissions" / f"{name}.csv").write_text("id,target\n")
    _call(tmp_path, "lb", "a", "0.95")
    _call(tmp_path, "lb", "c", "0.85")
    capsys.readouterr()
    _call(tmp_path, "leaderboard", "--sort", "name")
    assert [r[1] for r in _table_rows(capsys.readouterr().out)] == ["a", "b", "c"]
    _call(tmp_path, "leaderboard", "--sort", "lb")  # no LB score: last
    rows = _table_rows(capsys.readouterr().out)
    assert [r[1] for r in rows] == ["a", "c", "b"]
    assert [r[-2] for r in rows] == ["0.95000", "0.85000", "-"]


def test_config_differences_are_dotted_keys_with_this_runs_values() -> None:
    best = {"name": "a", "output_dir": "runs", "train": {"epochs": 3, "num_workers": 4,
            "optimizer": {"lr": 1e-3, "params": {}}},
            "model": {"encoders": [{"name": "mlp", "params": {"hidden": [16]}}]},
            "predict": {"tta": []}}
    other = copy.deepcopy(best)
    other.update(name="b", output_dir="elsewhere")  # where a run lives is no difference
    other["train"].update(epochs=5, num_workers=0)
    other["model"]["encoders"][0]["params"]["hidden"] = [32, 16]
    other["model"]["encoders"].append({"name": "gbm"})
    other["predict"]["tta"] = ["hflip"]
    assert config_differences(other, best) == [
        "model.encoders.0.params.hidden=[32, 16]", "model.encoders.1.name=gbm",
        "predict.tta=[\"hflip\"]", "train.epochs=5"]
    assert config_differences(best, other)[1] == "model.encoders.1.name=<absent>"
    assert config_differences(best, copy.deepcopy(best)) == []


def _submissions(root: Path, *names: str) -> None:
    (root / "submissions").mkdir(exist_ok=True)
    for name in names:
        (root / "submissions" / f"{name}.csv").write_text("id,target\nr1,0.5\n")


def _ledger_rows(root: Path) -> list[dict[str, str]]:
    with (root / "submissions" / "lb.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_lb_records_the_score_with_its_sources_cv(copy_of: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_of
    _submissions(root, "wide", "mix", "resub", "orphan")
    assert _call(root, "lb", "wide", "0.7123", "--note", "first, with TTA") == 0
    out = capsys.readouterr().out
    assert out.startswith("wide.csv: LB 0.71230 recorded in submissions/lb.csv; CV ")
    assert "of run runs/wide, found by the submission's name" in out
    _call(root, "lb", "submissions/mix.csv", "0.70")
    _call(root, "lb", "resub.csv", "0.69", "--source", "runs/narrow")
    _call(root, "lb", "orphan", "0.5")
    out = capsys.readouterr().out
    assert "warning: no run under runs nor blend under blends is named 'orphan'" in out

    rows = _ledger_rows(root)
    assert [r["submission"] for r in rows] == ["wide.csv", "mix.csv", "resub.csv", "orphan.csv"]
    wide, mix, resub, orphan = rows
    scores = read_json(root / "runs" / "wide" / "scores.json")["scores"]
    assert (wide["kind"], wide["source"], wide["source_from"]) == ("run", "runs/wide", "name")
    assert float(wide["cv"]) == scores["oof"] and wide["cv_kind"] == "oof"
    assert float(wide["lb"]) == 0.7123 and wide["note"] == "first, with TTA"
    assert wide["metric"] == "roc_auc" and wide["direction"] == "maximize"
    assert wide["competition"].endswith("tabular_binary")
    nested = read_json(root / "blends" / "mix" / "cv.json")["nested"]["pooled"]
    assert (mix["kind"], mix["cv_kind"], float(mix["cv"])) == ("blend", "nested", nested)
    assert (resub["source"], resub["source_from"]) == ("runs/narrow", "--source")
    assert (orphan["source"], orphan["cv"], orphan["lb"]) == ("", "", "0.5")
    mode = (root / "submissions" / "lb.csv").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask

    _call(root, "leaderboard")
    out = capsys.readouterr().out
    table = {r[1]: r for r in _table_rows(out)}
    assert table["wide"][-2] == "0.71230" and table["mix"][-2] == "0.70000"
    assert table["narrow"][-2] == "0.69000"
    assert "CV vs LB over 3 submissions: Spearman" in out
    assert "ledger only (no source, no metric): orphan LB 0.50000" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["nope", "0.7"], "unknown submission 'nope': no file nope nor submissions/nope.csv; "
                      "submissions there: wide"),
    (["wide", "abc"], "score 'abc' is not a number"),
    (["wide", "inf"], "score 'inf' is not a finite number"),
    (["lb.csv", "0.7"], "lb.csv is the ledger itself, not a submission"),
    (["wide", "0.7", "--source", "runs"], "--source runs is neither a run"),
])
def test_lb_refusals(copy_of: Path, argv: list[str], message: str) -> None:
    _submissions(copy_of, "wide")
    with pytest.raises(PipelineError) as info:
        _call(copy_of, "lb", *argv)
    assert str(info.value).startswith(message)
    assert not (copy_of / "submissions" / "lb.csv").exists()


def test_lb_refuses_a_name_shared_by_a_run_and_a_blend(copy_of: Path) -> None:
    shutil.copytree(copy_of / "blends" / "mix", copy_of / "blends" / "wide")
    _submissions(copy_of, "wide")
    with pytest.raises(PipelineError, match="named like run runs/wide and blend blends/wide; "
                                            "pass --source"):
        _call(copy_of, "lb", "wide", "0.7")
    assert _call(copy_of, "lb", "wide", "0.7", "--source", "blends/wide") == 0
    assert _ledger_rows(copy_of)[0]["kind"] == "blend"


def test_a_damaged_ledger_is_refused_not_appended_to(copy_of: Path) -> None:
    _submissions(copy_of, "wide")
    _call(copy_of, "lb", "wide", "0.7")
    path = copy_of / "submissions" / "lb.csv"
    path.write_text(path.read_text().replace(",0.7,", ",zero.seven,"))
    before = path.read_text()
    with pytest.raises(DataError, match=r"lb.csv line 2: lb 'zero.seven' is not a number"):
        _call(copy_of, "lb", "wide", "0.71")
    assert path.read_text() == before
    path.write_text(before.splitlines()[0] + "\n2026-01-01T00:00:00Z,wide.csv,0.7\n")
    with pytest.raises(DataError, match=r"lb\.csv line 2 does not have the 12 cells of the header"):
        _call(copy_of, "leaderboard")


def _entry(name: str, cv: float, lb: float, direction: str = "maximize") -> ledger.Entry:
    return ledger.Entry(time="2026-01-01T00:00:00Z", submission=f"{name}.csv", lb=lb,
                        kind="run", source=f"runs/{name}", source_from="name",
                        metric="roc_auc" if direction == "maximize" else "rmse",
                        direction=direction, cv=cv, cv_kind="oof", competition="/c", note="")


def test_correlation_and_the_pairs_ranked_in_opposite_order(tmp_path: Path) -> None:
    cv, lb = [0.80, 0.82, 0.84, 0.86], [0.70, 0.73, 0.72, 0.75]
    for name, c, s in zip("abcd", cv, lb, strict=True):
        ledger.append_entry(tmp_path, _entry(name, c, s))
    entries = ledger.read_ledger(tmp_path)
    assert [e.cv for e in entries] == cv and [e.lb for e in entries] == lb
    lines = ledger.summary(entries)
    pearson = np.corrcoef(cv, lb)[0, 1]
    # ranks 1 2 3 4 vs 1 3 2 4: Spearman = 1 - 6 * 2 / (4 * 15) = 0.8
    assert lines[0] == f"CV vs LB over 4 submissions: Spearman +0.800, Pearson {pearson:+.3f}"
    assert lines[1] == "warning: CV and LB rank 1 pair(s) of submissions in opposite order:"
    assert lines[2] == ("warning:   c beats b on CV (0.84000 vs 0.82000) but not on LB "
                        "(0.72000 vs 0.73000; higher is better)")
    assert len(lines) == 3

    # a score recorded again replaces the earlier one: now CV and LB agree
    ledger.append_entry(tmp_path, _entry("c", 0.84, 0.74))
    lines = ledger.summary(ledger.read_ledger(tmp_path))
    assert lines == ["CV vs LB over 4 submissions: Spearman +1.000, Pearson "
                     f"{np.corrcoef(cv, [0.70, 0.73, 0.74, 0.75])[0, 1]:+.3f}"]


def test_lower_is_better_swaps_and_too_few_points() -> None:
    entries = [_entry("a", 0.30, 0.35, "minimize"), _entry("b", 0.40, 0.33, "minimize")]
    assert ledger.summary(entries) == [
        "CV vs LB: 2 submission(s) with a CV; the correlation needs 3",
        "warning: CV and LB rank 1 pair(s) of submissions in opposite order:",
        "warning:   a beats b on CV (0.30000 vs 0.40000) but not on LB (0.35000 vs 0.33000; "
        "lower is better)"]
    flat = [_entry(n, 0.5, s) for n, s in (("a", 0.1), ("b", 0.2), ("c", 0.3))]
    assert ledger.summary(flat) == ["CV vs LB over 3 submissions: correlation undefined "
                                    "(every CV or every LB score is the same)"]


def test_nothing_to_rank_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"nothing to rank: no run folder with scores\.json "
                                            "under runs"):
        _call(tmp_path, "leaderboard")


def test_a_damaged_run_is_skipped_with_a_warning(copy_of: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (copy_of / "runs" / "narrow" / "scores.json").write_text("{cut off")
    assert _call(copy_of, "leaderboard", "--markdown", "board.md") == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: runs/narrow skipped: runs/narrow/scores.json "
                                   "could not be read")
    assert [r[1] for r in _table_rows(captured.out)] in (["wide", "mix"], ["mix", "wide"])
    markdown = (copy_of / "board.md").read_text()
    assert "| # | name | kind | CV | folds |" in markdown and "| wide | run |" in markdown


def test_spearman_with_tied_scores_matches_scipy() -> None:
    from scipy.stats import spearmanr

    cv, lb = [0.8, 0.8, 0.9, 0.7, 0.9], [0.6, 0.7, 0.7, 0.5, 0.8]
    pts = [ledger.Point(str(i), c, s) for i, (c, s) in enumerate(zip(cv, lb, strict=True))]
    corr = ledger.correlations(pts)
    assert corr is not None
    assert corr[0] == pytest.approx(spearmanr(cv, lb).statistic)
    assert corr[1] == pytest.approx(np.corrcoef(cv, lb)[0, 1])
    assert ledger.swapped_pairs(pts, greater_is_better=True) == []  # a tie is no disagreement


@pytest.mark.parametrize(("applied", "nested"), [(True, 0.76), (False, 0.71), (None, 0.76)])
def test_a_blend_submitted_with_tuned_thresholds_shows_their_nested_score(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], applied: bool | None,
        nested: float) -> None:
    folder = tmp_path / "blends" / "acc"
    postprocess: dict[str, Any] = {"nested": {"per_fold": {"0": 0.75, "1": 0.77}, "mean": 0.76}}
    if applied is not None:  # a blend written before the decision was recorded: applied
        postprocess["applied"] = applied
    write_json(folder / "cv.json", {
        "metric": "accuracy", "direction": "maximize", "method": "stacking",
        "in_sample": {"score": 0.8, "per_fold": {"0": 0.8, "1": 0.8}},
        "nested": {"per_fold": {"0": 0.70, "1": 0.72}, "mean": 0.71, "pooled": 0.71},
        "members": {"a": 0.6, "b": 0.7}, "postprocess": postprocess})
    write_json(folder / "run.json", {"competition_dir": "/c"})
    _call(tmp_path, "leaderboard", "--csv", "board.csv")
    row = pd.read_csv(tmp_path / "board.csv").iloc[0]
    assert row["nested"] == pytest.approx(nested) and row["cv"] == pytest.approx(0.8)
    assert row["differs_from_best"] == "blend: stacking of a, b"
    assert _table_rows(capsys.readouterr().out)[0][7] == f"{nested:.5f}"


def test_a_run_submitted_with_tuned_thresholds_is_ranked_by_their_nested_score(
        tmp_path: Path) -> None:
    for name, oof, applied in (("plain", 0.50, None), ("tuned", 0.45, True),
                               ("declined", 0.48, False)):
        folder = tmp_path / "runs" / name
        scores: dict[str, Any] = {"metric": "f1", "direction": "maximize",
                                  "scores": {"oof": oof, "seed0/fold0": oof, "seed0/fold1": oof}}
        if applied is not None:  # the rule's nested CV beats (tuned) or not (declined) 0.5
            scores["postprocess"] = {"applied": applied, "nested": {
                "per_fold": {"0": 0.54, "1": 0.56}, "mean": 0.55}}
        write_json(folder / "scores.json", scores)
        write_json(folder / "run.json", {"competition_dir": "/c"})
    _call(tmp_path, "leaderboard", "--csv", "board.csv")
    board = pd.read_csv(tmp_path / "board.csv")
    assert board["name"].tolist() == ["tuned", "plain", "declined"]  # 0.55 (nested), 0.50, 0.48
    tuned = board.iloc[0]
    assert tuned["nested"] == pytest.approx(0.55) and tuned["cv"] == pytest.approx(0.45)
    assert board["nested"].iloc[1:].isna().all()  # submitted with 0.5: ranked by the OOF CV
