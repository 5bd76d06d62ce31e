"""Ensemble gain on a demo competition: one model, + TTA, three seeds, a two-encoder
concatenation, and an Optuna blend of them, each with its OOF score, held-out score and
wall time.

    python benchmarks/ensemble_gain.py [--config configs/demo_image.yaml]

Prints a markdown table with each variant's gain over the single model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("PIPELINE_PROGRESS", "0")

from pipeline import blend, predict, submit, train
from pipeline.config import build_config
from pipeline.demo import build_demo, heldout_score
from pipeline.metrics import get_metric


def _variant(base: dict[str, Any], name: str, out: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    data["name"] = f"{base['name']}-{name}"
    data["output_dir"] = out
    for section, value in changes.items():
        data[section] = {**data.get(section, {}), **value}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None, help="default: the image demo's config")
    parser.add_argument("--output-dir", default="runs/ensemble_gain")
    parser.add_argument("--tta", nargs="+", default=["zoom", "brighter", "darker"])
    parser.add_argument("--second-encoder", default="timm:resnet10t")
    args = parser.parse_args()
    config = Path(args.config or build_demo(demos=("image",))["image"])
    base = yaml.safe_load(config.read_text())
    out = args.output_dir
    rows: list[tuple[str, float, float, float]] = []

    def record(label: str, folder: Path, score: float, seconds: float) -> None:
        sub = submit.run(folder, f"ensemble-gain-{folder.name}", f"{out}/submissions")
        rows.append((label, score, heldout_score(config, sub), seconds))
        print(f"{label}: OOF {score:.5f} ({seconds:.0f} s)", flush=True)

    single = build_config(_variant(base, "single", out))
    start = time.perf_counter()
    record("one model", single.run_dir, train.run(single), time.perf_counter() - start)

    tta = build_config(_variant(base, "single", out, predict={"tta": args.tta}))
    start = time.perf_counter()
    tta_score = predict.run(tta)  # same weights, TTA on OOF and test
    record(f"+ TTA ({', '.join(args.tta)})", tta.run_dir, tta_score,
           rows[0][3] + time.perf_counter() - start)

    seeds = build_config(_variant(base, "seeds", out, train={"seeds": [0, 1, 2]}))
    start = time.perf_counter()
    record("three seeds (mean)", seeds.run_dir, train.run(seeds), time.perf_counter() - start)

    encoders = [*base["model"]["encoders"], {"name": args.second_encoder}]
    concat = build_config(_variant(base, "concat", out, model={"encoders": encoders}))
    start = time.perf_counter()
    record(f"two encoders ({' + '.join(e['name'] for e in encoders)})", concat.run_dir,
           train.run(concat), time.perf_counter() - start)

    start = time.perf_counter()
    members = [tta.run_dir, *(seeds.run_dir / f"seed{s}" for s in (0, 1, 2)), concat.run_dir]
    folder = blend.run(members, method="optuna", name="ensemble-gain", n_trials=200,
                       blends_dir=f"{out}/blends")
    nested = json.loads((folder / "cv.json").read_text())["nested"]["pooled"]
    record("Optuna blend of the above (nested CV)", folder, nested,
           sum(r[3] for r in rows[1:]) + time.perf_counter() - start)

    metric = get_metric(base["competition"]["metric"])
    one = rows[0]
    print(f"\n{base['name']}: metric {metric.name} ({metric.direction}), "
          f"{base['folds']['n_splits']} folds\n")
    print(f"| variant | OOF {metric.name} | held-out | held-out gain | wall time |")
    print("|---|---|---|---|---|")
    for label, score, held, seconds in rows:
        print(f"| {label} | {score:.4f} | {held:.4f} | {held - one[2]:+.4f} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
