"""A blend's published OOF is out of fold: what reads it as a run's (a blend of blends, the
leaderboard) sees the nested CV's held-out blend, not the one tuned on those rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import blend, cli
from pipeline.artifacts import load_predictions, read_json, read_meta, write_json, write_meta
from pipeline.errors import DataError
from pipeline.leaderboard import read_blend
from tests.test_blend import make_competition


@pytest.fixture
def runs(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    return make_competition(tmp_path, "binary", "roc_auc", [1.2, 0.9, 0.6, 0.0, 0.8])


def _blend(members: list[Path], name: str, tmp_path: Path, y: np.ndarray,
           method: str = "hill_climb") -> Path:
    params = {"n_iter": 20} if method == "hill_climb" else {}  # a fast climb
    return blend.run(members, method=method, name=name, blends_dir=tmp_path / "blends",
                     targets=y, params=params)


def test_a_blend_of_blends_reads_the_inner_blends_held_out_oof(tmp_path, runs) -> None:
    """The outer blend scored its inner blend member by the inner's in-sample OOF (tuned on
    those labels): 0.001 AUC above what the inner blend scores on rows it never saw."""
    members, y = runs
    inner = _blend(members[:4], "inner", tmp_path, y)
    inner_cv = read_json(inner / "cv.json")
    assert inner_cv["in_sample"]["score"] > inner_cv["nested"]["pooled"] + 0.001
    outer = _blend([inner, members[4]], "outer", tmp_path, y)
    outer_cv = read_json(outer / "cv.json")
    assert outer_cv["members"]["inner"] == pytest.approx(inner_cv["nested"]["pooled"])
    assert inner_cv["oof"]["from"] == "nested"
    assert outer_cv["members"]["inner"] == pytest.approx(inner_cv["oof"]["score"])
    # the leaderboard's CV of the inner blend is the score of what it publishes
    row = read_blend(inner)
    assert row.cv == pytest.approx(inner_cv["nested"]["pooled"])
    per_fold = inner_cv["nested"]["per_fold"]
    assert row.folds == pytest.approx([per_fold[k] for k in sorted(per_fold)])


def test_fixed_weights_and_stacking_publish_their_own_oof(tmp_path, runs) -> None:
    """Mean, rank, power and stacking fit nothing on a row's label (stacking predicts each
    fold by a model fitted without it): their OOF is theirs, unchanged, not the nested one."""
    members, y = runs
    oof = np.stack([load_predictions(r).oof_matrix for r in members])
    for method in ("mean", "stacking"):
        folder = _blend(members, method, tmp_path, y, method)
        cv = read_json(folder / "cv.json")
        assert cv["oof"]["from"] == "blender"
        assert cv["oof"]["score"] == pytest.approx(cv["in_sample"]["score"])
    np.testing.assert_allclose(load_predictions(tmp_path / "blends" / "mean").oof_matrix,
                               oof.mean(axis=0))


def _as_made_before(folder: Path, members: list[Path], method: str) -> None:
    """Turn a blend folder into one the stage wrote before it published out-of-fold OOF:
    the in-sample blend in oof.parquet, no ``oof`` in cv.json, the hash of then."""
    cv = read_json(folder / "cv.json")
    cv.pop("oof", None)
    write_json(folder / "cv.json", cv)
    weights = read_json(folder / "weights.json")["weights"]
    frame = pd.read_parquet(folder / "oof.parquet")
    frame["label"] = sum(w * load_predictions(r).oof_matrix[:, 0]
                         for w, r in zip(weights.values(), members, strict=True))
    frame.to_parquet(folder / "oof.parquet")
    old = blend.blend_hash(blend.load_members(members), method,
                           {"n_trials": 300, "seed": 0, "n_iter": 20, "postprocess": "auto"})
    meta = read_meta(folder)
    write_meta(folder, meta.__class__(**{**meta.__dict__, "config_hash": old}))


def test_an_older_tuned_blend_is_redone_and_refused_as_a_member_until_then(
        tmp_path, runs, capsys) -> None:
    """A hill_climb blend made before: its rerun was 'up to date' and kept its in-sample
    OOF, which a blend of it then took as a member's. Now the rerun makes it again, and
    until then a blend of it is refused in one line, exit 2, no folder written."""
    members, y = runs
    inner = _blend(members[:4], "inner", tmp_path, y)
    honest = load_predictions(inner).oof_matrix
    _as_made_before(inner, members[:4], "hill_climb")
    with pytest.raises(DataError, match=r"inner is a hill_climb blend whose oof.parquet is "
                                        r"in-sample .* make it again first"):
        _blend([inner, members[4]], "outer", tmp_path, y)
    code = cli.main(["blend", "--runs", str(inner), str(members[4]), "--method", "mean",
                     "--name", "outer", "--blends-dir", str(tmp_path / "blends")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "blends" / "outer").exists()

    _blend(members[:4], "inner", tmp_path, y)  # the same command as before: made again
    assert read_json(inner / "cv.json")["oof"]["from"] == "nested"
    np.testing.assert_allclose(load_predictions(inner).oof_matrix, honest)
    assert (_blend([inner, members[4]], "outer", tmp_path, y) / "cv.json").is_file()


def test_an_older_mean_blend_is_kept_and_blends(tmp_path, runs) -> None:
    """A mean blend's OOF is the same before and after: its rerun keeps it (same hash), and
    a blend of it takes it."""
    members, y = runs
    folder = _blend(members[:2], "m", tmp_path, y, "mean")
    cv = read_json(folder / "cv.json")
    cv.pop("oof", None)
    write_json(folder / "cv.json", cv)
    stamp = (folder / "cv.json").stat().st_mtime_ns
    _blend(members[:2], "m", tmp_path, y, "mean")
    assert (folder / "cv.json").stat().st_mtime_ns == stamp
    outer = _blend([folder, members[2]], "outer", tmp_path, y, "mean")
    assert read_json(outer / "cv.json")["members"]["m"] == pytest.approx(
        cv["in_sample"]["score"])
    assert read_blend(folder).cv == pytest.approx(cv["in_sample"]["score"])


def test_a_member_whose_cv_json_is_not_a_blends_is_refused_in_one_line(tmp_path, runs) -> None:
    members, y = runs
    folder = _blend(members[:2], "m", tmp_path, y, "mean")
    write_json(folder / "cv.json", [0.9])
    with pytest.raises(DataError, match=r"cv.json holds no blend's scores; rerun the stage"):
        _blend([folder, members[2]], "outer", tmp_path, y, "mean")
