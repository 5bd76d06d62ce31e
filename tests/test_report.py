"""``pipeline report`` (pipeline/report/): the HTML page of real run and blend folders, its
numbers against the folders' files, the notes for what a folder lacks, the one-line errors,
and the page as a real headless Chromium renders it (DOM and screenshot)."""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from pipeline import blend, cli, train
from pipeline.artifacts import read_json
from pipeline.config import build_config
from pipeline.metrics import get_metric
from pipeline.report import ReportError, build_report, register
from tests.conftest import make_competition

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUN_PLOTS = ("fold-scores", "learning-curves", "confusion-matrix", "class-report",
             "calibration", "tta")
_build_parser = cli.build_parser


def _parser() -> argparse.ArgumentParser:
    """The ``pipeline`` parser with ``report`` (added here until cli.py registers it)."""
    parser = _build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        register(sub)
    return parser


class _Page(HTMLParser):
    """Ids, attributes of every element with an id, images and table rows of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.images: list[str] = []
        self.skipped: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "id" in found:
            self.ids[str(found["id"])] = found
        if tag == "img":
            self.images.append(str(found.get("src")))
        if "data-skipped" in found:
            self.skipped.append(str(found["data-skipped"]))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def row(self, first: str) -> list[str]:
        """The first table row whose first cell is ``first``."""
        return next(r for r in self.rows if r and r[0] == first)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary run with noise TTA (2 epochs), a smaller one (1 epoch), their mean blend, a
    LightGBM member, and a regression run."""
    root = tmp_path_factory.mktemp("report")
    data = make_competition(root, "tabular", "binary")
    data["predict"] = {"tta": ["noise"]}
    train.run(build_config({**data, "name": "wide"}))
    narrow = copy.deepcopy(data)
    narrow.update(name="narrow", predict={"tta": []})
    narrow["train"]["epochs"] = 1
    train.run(build_config(narrow))
    blend.run([root / "runs" / "wide", root / "runs" / "narrow"], method="mean", name="mix",
              blends_dir=root / "blends")
    trees = copy.deepcopy(narrow)  # a GBDT member: per-fold feature importance, no epochs
    trees.update(name="trees", model={"encoders": [{"name": "lightgbm", "params": {
        "n_estimators": 50, "learning_rate": 0.3, "min_child_samples": 5}}]})
    train.run(build_config(trees))
    train.run(build_config(make_competition(root, "tabular", "regression")))
    return root


@pytest.fixture(scope="module")
def binary_page(project: Path) -> tuple[Path, _Page]:
    """The report of both binary runs and their blend, written through the CLI."""
    out = project / "binary.html"
    paths = [str(project / p) for p in ("runs/wide", "runs/narrow", "blends/mix", "runs/trees")]
    args = _parser().parse_args(["report", *paths, "--out", str(out)])
    assert args.fn(args) == 0
    return out, _Page(out.read_text())


def _targets(project: Path) -> np.ndarray:
    train_csv = pd.read_csv(project / "tabular_binary" / "train.csv")
    return (train_csv["target"] == "yes").to_numpy(dtype=int)


def test_binary_report_has_every_section_and_the_folders_numbers(
        project: Path, binary_page: tuple[Path, _Page]) -> None:
    out, page = binary_page
    expected = {"wide", "narrow", "mix", "trees", "comparison", "comparison-scores",
                "comparison-correlation", "mix-fold-scores", "mix-confusion-matrix",
                "mix-blend-weights", "mix-correlation", "trees-feature-importance",
                *(f"wide-{k}" for k in RUN_PLOTS)}
    assert expected <= set(page.ids)
    assert not any(i.endswith("residuals") for i in page.ids)  # a classification task
    assert "wide-feature-importance" not in page.ids  # no importances: nothing, no note
    assert "trees-learning-curves" not in page.ids  # a GBDT member has no epochs
    # every plot an inline PNG: the page needs no other file and no network
    text = out.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert len(page.images) >= 15
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.width > 200 and image.height > 150

    scores = read_json(project / "runs" / "wide" / "scores.json")["scores"]
    folds = [scores["seed0/fold0"], scores["seed0/fold1"]]
    assert page.row("CV")[1] == f"{scores['oof']:.5f}"
    assert page.row("folds mean +- std")[1] == (f"{np.mean(folds):.5f} +- {np.std(folds):.5f}"
                                                " (2 folds)")
    # confusion matrix and per-class report of the OOF at a 0.5 threshold, by hand
    oof = pd.read_parquet(project / "runs" / "wide" / "oof.parquet")
    y, hard = _targets(project), (oof["target"].to_numpy() >= 0.5).astype(int)
    shown = json.loads(str(page.ids["wide-confusion-matrix"]["data-matrix"]))
    assert shown == confusion_matrix(y, hard).tolist() and np.sum(shown) == 48
    report = classification_report(y, hard, output_dict=True, zero_division=0)
    assert page.row("yes")[1:] == [f"{report['1'][k]:.5f}" for k in
                                   ("precision", "recall", "f1-score")] + [str(np.sum(y))]


def test_tta_views_importance_and_blend_weights(
        project: Path, binary_page: tuple[Path, _Page]) -> None:
    _, page = binary_page
    run = project / "runs" / "wide"
    views = pd.concat([pd.read_parquet(run / "seed0" / f"fold{k}" / "tta_oof.parquet")
                       for k in (0, 1)])
    ids = pd.read_parquet(run / "oof.parquet")["id"]
    auc, y = get_metric("roc_auc"), _targets(project)[:, None]
    by_view = {v: auc(y, part.set_index("id").loc[ids, ["target"]].to_numpy())
               for v, part in views.groupby("tta")}
    assert sorted(by_view) == ["noise", "none"]
    for view, score in by_view.items():
        assert page.row(view)[1] == f"{score:.5f}"
    assert page.row("noise")[2] == f"{round(by_view['noise'] - by_view['none'], 5) + 0:+.5f}"
    merged = page.row("merged (wide/oof.parquet)")
    assert merged[1] == f"{read_json(run / 'scores.json')['scores']['oof']:.5f}"
    importance = pd.concat([pd.read_csv(project / "runs" / "trees" / "seed0" / f"fold{k}" /
                                        "feature_importance.csv") for k in (0, 1)])
    mean = importance.groupby("feature")["importance"].mean()
    shown = json.loads(str(page.ids["trees-feature-importance"]["data-values"]))
    assert list(shown) == mean.sort_values(ascending=False).index.tolist()
    assert shown == pytest.approx(mean.to_dict()) and shown["x1"] > shown["color"]
    assert page.row("members")[1] == "narrow 0.50, wide 0.50"


def test_regression_report_default_path_and_residuals(project: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = project / "runs" / "tabular-regression"
    args = _parser().parse_args(["report", str(run)])
    assert args.fn(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'report.html'}"
    page = _Page((run / "report.html").read_text())
    for kind in ("fold-scores", "learning-curves", "residuals"):
        assert f"tabular-regression-{kind}" in page.ids
    assert "tta" in page.skipped  # no transform configured: one view, nothing to compare
    assert not any(k in i for i in page.ids for k in ("confusion", "calibration", "class-"))
    assert "comparison" not in page.ids  # one folder: nothing to compare
    assert page.row("metric")[1] == "rmse (lower is better)"


def test_missing_pieces_become_notes(project: Path, tmp_path: Path) -> None:
    run = tmp_path / "wide"
    shutil.copytree(project / "runs" / "wide", run)
    for path in run.glob("seed0/fold*/tta_oof.parquet"):
        path.unlink()
    (run / "seed0" / "fold0" / "feature_importance.csv").write_text("name,gain\nx1,2\n")
    meta = read_json(run / "run.json")
    meta["competition_dir"] = str(tmp_path / "moved")  # the targets cannot be read
    (run / "run.json").write_text(json.dumps(meta))
    page = _Page(build_report([run]).read_text())
    assert {"wide-fold-scores", "wide-learning-curves"} <= set(page.ids)
    assert {"oof-diagnostics", "tta", "feature-importance"} <= set(page.skipped)
    assert not any(i.endswith(("confusion-matrix", "calibration")) for i in page.ids)


def test_folders_of_other_competitions_are_left_out_of_the_comparison(
        project: Path, tmp_path: Path) -> None:
    out = build_report([project / "runs" / "wide", project / "runs" / "tabular-regression"],
                       tmp_path / "mixed.html")
    page = _Page(out.read_text())
    assert {"wide", "tabular-regression", "comparison"} <= set(page.ids)
    assert "comparison" in page.skipped and "comparison-correlation" not in page.ids


def test_paths_that_are_no_run_or_blend_fail_in_one_line(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="no such folder"):
        build_report([tmp_path / "nope"])
    with pytest.raises(ReportError, match=r"neither a run .* nor a blend"):
        build_report([project / "runs" / "wide" / "seed0"])  # a member, not a finished run
    monkeypatch.setattr(cli, "build_parser", _parser)
    assert cli.main(["report", str(project / "tabular_binary")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "neither a run" in err and err.count("\n") == 1
    help_text = _parser()._subparsers._group_actions[0].choices["report"].format_help()
    assert "example: pipeline report" in help_text


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_the_page_in_headless_chromium(project: Path, binary_page: tuple[Path, _Page],
                                       tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("PIPELINE_NO_BROWSER"):  # .ci/run tried and could not install it
            pytest.skip(f"chromium is not installed: {os.environ['PIPELINE_NO_BROWSER']}")
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must have it (see .ci/run)")
        pytest.skip("chromium is not installed")
    out, _ = binary_page
    url = out.resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = _Page(dom.stdout)
    for pid in ("wide", "mix", "trees", "comparison", "trees-feature-importance",
                *(f"wide-{k}" for k in RUN_PLOTS),
                "mix-blend-weights", "mix-correlation", "comparison-correlation"):
        assert pid in rendered.ids, pid
    assert len(rendered.images) >= 15

    shot = tmp_path / "page.png"
    made = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", url,
                     tmp=tmp_path / "profile-shot")
    assert made.returncode == 0 and shot.is_file(), made.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    pixels = np.asarray(image)
    plots = pixels[400:]  # below the title and the first summary table
    colours = np.unique(plots.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # drawn plots, not a blank or one-colour page
    bar = np.all(np.abs(plots.astype(int) - (76, 114, 176)) <= 3, axis=-1)  # #4c72b0 bars
    assert bar.sum() > 2000
    blue_cells = np.abs(plots.astype(int) - (33, 113, 181)).sum(-1) < 120  # confusion cells
    assert blue_cells.sum() > 500


def test_report_of_a_blend_alone_reads_its_files(project: Path, tmp_path: Path) -> None:
    page = _Page(build_report([project / "blends" / "mix"], tmp_path / "mix.html").read_text())
    cv = read_json(project / "blends" / "mix" / "cv.json")
    assert page.row("nested CV")[1] == f"{cv['nested']['pooled']:.5f}"
    assert page.row("CV out of fold")[1] == f"{cv['oof']['score']:.5f}"
    assert {"mix-blend-weights", "mix-correlation", "mix-calibration"} <= set(page.ids)
    assert "mix-learning-curves" not in page.ids and "mix-tta" not in page.ids
