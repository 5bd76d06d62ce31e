"""Fold fan-out on the CPU: a run's (seed, fold) jobs as tasks on a local Ray cluster of 2
workers against the in-process executor that trains them one after another.

The run: a synthetic tabular binary competition (``--rows`` rows, 16 numeric features, a
non-linear target), an MLP (hidden 128, 64) for ``--epochs`` epochs, ``--folds`` folds, one
seed. Both arms train on one torch thread per job (the local one in this process, each Ray
task in its worker), so they compute the same numbers: the OOF files are compared bit for bit.
The arms alternate, ``--rounds`` times each, each in a fresh run folder; the Ray cluster is
started once before the first round (its start time is reported apart), and the first Ray
round also pays for starting its 2 workers (importing torch and the package) while later
rounds find them up. Each job's CPU seconds are measured in the process that ran it: equal
CPU in both arms says the Ray jobs do the same work, so a wall-clock ratio below 2 on 2 cores
is time the CPUs spent elsewhere (Ray's own processes, other jobs on the machine: the load
average is printed before and after). Ray starts its workers at nice 15: on a machine shared
with other work they get the CPU last, which ``--worker-niceness 0`` undoes.

Run: ``python benchmarks/fan_out.py [--rows 6000] [--folds 4] [--epochs 12] [--rounds 2]
[--work runs/fan_out] [--worker-niceness 0]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.executor import ExecutorConfig, LocalExecutor, RayExecutor


def make_competition(root: Path, rows: int, seed: int = 0) -> Path:
    """train/test/sample_submission of a seeded binary task with 16 numeric columns."""
    rng = np.random.default_rng(seed)
    n = rows + rows // 4
    x = rng.normal(size=(n, 16))
    logit = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * x[:, 4:8].sum(1)
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(int)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(16)])
    frame.insert(0, "id", [f"r{i}" for i in range(n)])
    frame["target"] = y
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns="target").to_csv(root / "test.csv", index=False)
    frame.iloc[rows:][["id"]].assign(target=0).to_csv(root / "sample_submission.csv",
                                                      index=False)
    return root


def config(work: Path, comp: Path, name: str, folds: int, epochs: int) -> Any:
    return build_config({
        "name": name, "output_dir": str(work / "runs"), "folds_dir": str(work / "folds"),
        "competition": {"dir": str(comp), "id_column": "id", "target_columns": ["target"],
                        "task": "binary", "metric": "roc_auc", "modality": "tabular"},
        "folds": {"scheme": "stratified", "n_splits": folds, "seed": 0},
        "model": {"encoders": [{"name": "mlp", "params": {"hidden": [128, 64]}}]},
        "train": {"epochs": epochs, "batch_size": 128, "seeds": [0],
                  "optimizer": {"name": "adamw", "lr": 2e-3}},
    })


def _measured(fn: Any) -> tuple[float, float, Any]:
    """A job's wall and CPU seconds where it ran (its process), with its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run(cfg: Any, executor: Any) -> tuple[float, float, float]:
    """``train.run`` with each job timed inside: (score, summed job wall s, job CPU s)."""
    comp = load_competition(cfg.competition)
    folds = train.prepare(cfg, comp)
    jobs = [dataclasses.replace(j, fn=functools.partial(_measured, j.fn))
            for j in train.fold_jobs(cfg, comp, folds, executor)]
    wall = cpu = 0.0
    for _, (job_wall, job_cpu, _) in executor.run(jobs):
        wall, cpu = wall + job_wall, cpu + job_cpu
    return train.finish(cfg, comp, folds, []), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", default="runs/fan_out")
    parser.add_argument("--worker-niceness", type=int, default=None,
                        help="nice value of Ray's workers (Ray's default: 15, so that they "
                        "yield to everything else on a shared machine)")
    args = parser.parse_args()
    if args.worker_niceness is not None:  # read by the raylet when ray.init starts it
        os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112 (Ray's name)
    os.environ.setdefault("PIPELINE_PROGRESS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    comp = make_competition(work / "data", args.rows)

    import ray

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2, configure_logging=False)
    cluster_s = time.perf_counter() - start
    arms = {"sequential (local executor)": LocalExecutor(),
            "2 Ray workers": RayExecutor(ExecutorConfig(name="ray", cpus=1))}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    job_cpu: dict[str, list[float]] = {arm: [] for arm in arms}
    oof: dict[str, pd.DataFrame] = {}
    scores = {}
    for r in range(args.rounds):
        for i, (arm, executor) in enumerate(arms.items()):
            cfg = config(work, comp, f"r{r}-arm{i}", args.folds, args.epochs)
            start = time.perf_counter()
            scores[arm], wall, cpu = run(cfg, executor)
            times[arm].append(time.perf_counter() - start)
            job_cpu[arm].append(cpu)
            oof[arm] = pd.read_parquet(cfg.run_dir / "oof.parquet")
            print(f"round {r}: {arm}: {times[arm][-1]:.1f} s wall; jobs {wall:.1f} s wall, "
                  f"{cpu:.1f} s CPU in all (CV {scores[arm]:.5f})", flush=True)
    ray.shutdown()
    frames = list(oof.values())
    same = frames[0].equals(frames[1])
    seq, fan = (times[a] for a in arms)
    print(f"\nload average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"Ray cluster start: {cluster_s:.1f} s (once; not in the times below)")
    print(f"{args.rows} rows, {args.folds} folds x {args.epochs} epochs, MLP (128, 64), "
          "1 torch thread per job\n")
    print("| arm | " + " | ".join(f"round {r}" for r in range(args.rounds))
          + " | jobs' CPU s (per round) | CV |")
    print("|---|" + "---|" * (args.rounds + 2))
    for arm in arms:
        print(f"| {arm} | " + " | ".join(f"{t:.1f} s" for t in times[arm])
              + " | " + ", ".join(f"{c:.0f}" for c in job_cpu[arm]) + f" | {scores[arm]:.5f} |")
    ratios = [s / f for s, f in zip(seq, fan, strict=True)]
    print("| speed-up (sequential / Ray) | " + " | ".join(f"{x:.2f}x" for x in ratios)
          + " | | |")
    print(f"\nOOF identical bit for bit: {same}")


if __name__ == "__main__":
    main()
