"""Recipe ablation: the OOF score of the default recipe and of the recipe with each method
switched on, on a demo competition, with fixed seeds and folds.

    python benchmarks/recipe_ablation.py [--config configs/demo_image.yaml] [--only a b]

Prints a markdown table: variant, OOF score, difference to the default, wall time.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import yaml

os.environ.setdefault("PIPELINE_PROGRESS", "0")

from pipeline import train
from pipeline.config import build_config
from pipeline.metrics import get_metric

# Each variant changes the default recipe's `train` section (deep-merged).
VARIANTS: dict[str, dict[str, Any]] = {
    "default (AdamW, cosine, warmup)": {},
    "SGD + momentum": {"optimizer": {"name": "momentum", "lr": 0.05,
                                     "params": {"momentum": 0.9}}},
    "no warmup, constant lr": {"scheduler": {"name": "constant", "warmup_epochs": 0}},
    "label smoothing 0.1": {"loss": {"name": "cross_entropy", "params": {"smoothing": 0.1}}},
    "focal (gamma 2)": {"loss": {"name": "focal", "params": {"gamma": 2.0}}},
    "EMA (0.99)": {"ema": {"decay": 0.99}},
    "snapshot ensemble (restarts)": {"scheduler": {"name": "restarts", "cycle_epochs": 1,
                                                   "min_lr_ratio": 0.01},
                                     "snapshots": True},
    "SWA from epoch 2": {"swa": {"start_epoch": 2}},
    "+ stage 2 (bs x2, Lookahead SGD)": {"stages": [{
        "epochs": 1, "batch_size": 128,
        "optimizer": {"name": "lookahead_sgd", "lr": 0.005, "params": {"momentum": 0.9}},
        "scheduler": {"name": "cosine"}}]},
}


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``change`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo_image.yaml")
    parser.add_argument("--output-dir", default="runs/ablation")
    parser.add_argument("--only", nargs="*", default=None, help="variant name prefixes")
    args = parser.parse_args()
    with open(args.config) as f:
        base = yaml.safe_load(f)
    rows = []
    for i, (variant, change) in enumerate(VARIANTS.items()):
        if args.only and not any(variant.startswith(p) for p in args.only):
            continue
        data = merge(base, {"train": change})
        data["name"] = f"{base['name']}-ablation-{i}"
        data["output_dir"] = args.output_dir
        cfg = build_config(data)
        start = time.perf_counter()
        score = train.run(cfg)
        rows.append((variant, score, time.perf_counter() - start))
        print(f"{variant}: {score:.5f}", flush=True)
    metric = get_metric(base["competition"]["metric"])
    default = rows[0][1]
    print(f"\n{base['name']}, metric {metric.name} ({metric.direction}), "
          f"{base['folds']['n_splits']} folds, seeds {base['train']['seeds']}\n")
    print(f"| variant | OOF {metric.name} | vs default | wall time |")
    print("|---|---|---|---|")
    for variant, score, seconds in rows:
        print(f"| {variant} | {score:.4f} | {score - default:+.4f} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
