"""The predict stage (pipeline/predict.py): it re-predicts only the folds whose ``predict``
section changed, never retrains, refuses folds not trained under the config, applies TTA to
OOF and test alike, and regathers a scikit-learn run as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import predict, train
from pipeline.artifacts import read_json, write_json
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import DataError
from pipeline.metrics import get_metric
from pipeline.prediction_state import prediction_hash, predictions_current
from pipeline.runs import FOLD_FORMAT, fold_dir

# what training leaves in a network fold; predicting again must not touch any of it
TRAINED = ("best.pt", "last.pt", "metrics.json", "preprocess.json")


def _tabular(competition_factory, task: str = "binary") -> dict[str, Any]:
    """A tabular MLP config that trains one epoch: the cheapest network run."""
    data = competition_factory("tabular", task)
    data["train"]["epochs"] = 1
    return data


def _stamps(folder: Path, names: tuple[str, ...]) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in names}


def test_changed_predict_section_repredicts_without_retraining(competition_factory) -> None:
    data = _tabular(competition_factory)
    cfg = build_config(data)
    score = train.run(cfg)
    folders = [fold_dir(cfg, 0, k) for k in range(cfg.folds.n_splits)]
    trained = [_stamps(f, TRAINED) for f in folders]
    plain = pd.read_parquet(cfg.run_dir / "oof.parquet").set_index("id")

    # the same predict section: every fold is current, nothing is predicted again
    predicted = [_stamps(f, ("predictions.json", "oof.parquet")) for f in folders]
    assert predict.run(cfg) == pytest.approx(score)
    assert [_stamps(f, ("predictions.json", "oof.parquet")) for f in folders] == predicted

    data["predict"] = {"tta": ["noise"]}
    cfg_tta = build_config(data)
    assert cfg_tta.train_hash() == cfg.train_hash()
    assert not any(predictions_current(cfg_tta, 0, k) for k in range(2))
    new_score = predict.run(cfg_tta)
    assert [_stamps(f, TRAINED) for f in folders] == trained  # not retrained
    for k, folder in enumerate(folders):
        assert predictions_current(cfg_tta, 0, k) and not predictions_current(cfg, 0, k)
        made = read_json(folder / "predictions.json")
        assert {k: made[k] for k in ("hash", "tta")} == {
            "hash": prediction_hash(cfg_tta), "tta": ["noise"]}
        # checksums of the prediction files, so a damaged one is predicted again
        assert sorted(made["files"]) == ["oof.parquet", "test.parquet", "tta_oof.parquet",
                                         "tta_test.parquet"]
        per_tta = pd.read_parquet(folder / "tta_oof.parquet")
        assert sorted(per_tta["tta"].unique()) == ["noise", "none"]
        none = per_tta[per_tta["tta"] == "none"].set_index("id")["target"]
        noise = per_tta[per_tta["tta"] == "noise"].set_index("id")["target"]
        # the identity pass is what the plain run predicted; the noisy pass differs
        np.testing.assert_allclose(none.to_numpy(), plain.loc[none.index, "target"], atol=1e-6)
        assert not np.allclose(noise.to_numpy(), none.to_numpy())
        fold_oof = pd.read_parquet(folder / "oof.parquet").set_index("id")["target"]
        np.testing.assert_allclose(fold_oof.to_numpy(), (none + noise).to_numpy() / 2)
    comp = load_competition(cfg.competition)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")["target"].to_numpy()[:, None]
    assert new_score == pytest.approx(get_metric("roc_auc")(comp.targets, oof))


def test_untrained_fold_is_refused_in_one_line(competition_factory) -> None:
    cfg = build_config(_tabular(competition_factory))
    with pytest.raises(DataError) as info:
        predict.run(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert str(fold_dir(cfg, 0, 0)) in message and "run the train stage first" in message
    # a fold trained under another config is refused as well, and named
    done = {"config_hash": cfg.train_hash(), "format": FOLD_FORMAT}
    write_json(fold_dir(cfg, 0, 0) / "metrics.json", done)
    write_json(fold_dir(cfg, 0, 1) / "metrics.json", {**done, "config_hash": "0" * 16})
    with pytest.raises(DataError, match="not trained under this config") as info:
        predict.run(cfg)
    assert str(fold_dir(cfg, 0, 1)) in str(info.value) and "\n" not in str(info.value)


def test_sklearn_run_regathers_without_refitting(competition_factory) -> None:
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    cfg = build_config(data)
    score = train.run(cfg)
    models = [fold_dir(cfg, 0, k) / "model.joblib" for k in range(2)]
    stamps = [m.stat().st_mtime_ns for m in models]
    before = {p: pd.read_parquet(cfg.run_dir / p) for p in ("oof.parquet", "test.parquet")}
    for name in (*before, "scores.json"):
        (cfg.run_dir / name).unlink()
    # a scikit-learn model has no TTA: a changed predict section only regathers
    data["predict"] = {"tta_reduce": "median"}
    assert predict.run(build_config(data)) == pytest.approx(score)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / name), frame)
    assert read_json(cfg.run_dir / "scores.json")["scores"]["oof"] == pytest.approx(score)
    assert [m.stat().st_mtime_ns for m in models] == stamps
    assert not (fold_dir(cfg, 0, 0) / "predictions.json").exists()


def test_predict_stage_applies_tta_to_oof_and_test(competition_factory):
    data = competition_factory("image", "multiclass")
    cfg = build_config(data)
    train.run(cfg)
    plain = pd.read_parquet(cfg.run_dir / "oof.parquet")
    data["predict"] = {"tta": ["hflip", "vflip"]}
    cfg_tta = build_config(data)
    assert cfg_tta.train_hash() == cfg.train_hash()
    predict.run(cfg_tta)
    fold_dir = cfg.run_dir / "seed0" / "fold0"
    per_tta = pd.read_parquet(fold_dir / "tta_oof.parquet")
    assert sorted(per_tta["tta"].unique()) == ["hflip", "none", "vflip"]
    cols = ["0", "1", "2"]
    mean = per_tta.groupby("id", sort=False)[cols].mean()
    fold_oof = pd.read_parquet(fold_dir / "oof.parquet").set_index("id")
    np.testing.assert_allclose(fold_oof[cols].to_numpy(), mean.loc[fold_oof.index].to_numpy())
    with_tta = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert not np.allclose(plain[cols].to_numpy(), with_tta[cols].to_numpy())
    none = per_tta[per_tta["tta"] == "none"].set_index("id")[cols]
    plain_fold = plain.set_index("id").loc[none.index, cols]
    np.testing.assert_allclose(none.to_numpy(), plain_fold.to_numpy(), atol=1e-6)


def test_unreadable_test_images_are_refused_together_before_anything_is_written(
        competition_factory, tmp_path):
    """A trained run predicting a copied competition (a notebook's, a hidden test set) whose
    test images hold two corrupt files: the fold that read the first named it alone, after
    the stage had written a folds file under the new folder's name."""
    import shutil

    data = competition_factory("image", "regression", n_train=24, n_test=8)
    data["train"]["epochs"] = 1
    train.run(build_config(data))
    copy = tmp_path / "hidden"
    shutil.copytree(data["competition"]["dir"], copy)
    test = pd.read_csv(copy / "test.csv")
    broken = [copy / test["image"].iloc[i] for i in (1, 4)]
    for path in broken:
        path.write_bytes(path.read_bytes()[:60])
    data["competition"]["dir"] = str(copy)
    data["predict"] = {"tta": ["hflip"]}
    cfg = build_config(data)
    before = sorted(Path(cfg.folds_dir).iterdir())
    with pytest.raises(DataError) as err:
        predict.run(cfg)
    message = str(err.value)
    assert message.startswith(f"{broken[0]}: could not be read as an image")
    assert message.endswith(f"; and 1 more image file(s) could not be read: {broken[1]}")
    assert sorted(Path(cfg.folds_dir).iterdir()) == before  # no folds file of the copy's name
