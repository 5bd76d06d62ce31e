"""``pipeline sweep``: every variant of a base config over a search space
(:mod:`pipeline.sweep_space`), each a full k-fold run of its own, and one table of them.

A grid runs every combination; ``method: optuna`` samples the space in an Optuna study
(journal file in the sweep folder by default, ``--storage postgresql://...`` to let several
workers tune one study), and its median pruner stops a trial whose first folds score worse
than earlier trials' did after as many folds. The fold jobs go through the executor of the
base config (or ``--executor``): with Ray, a grid's variants train side by side.

Every variant is an ordinary run folder (``<output_dir>/<base>-<sweep>-<digest>``) whose
OOF is a blend member; ``sweeps/<name>/`` holds:

    results.csv / results.md   one row per variant, best CV first: state, CV, last-epoch CV,
                               folds done, time, what changed, run folder
    members.txt                the finished variants' run folders (``pipeline blend --runs``)
    study.journal              the Optuna study (method optuna, default storage)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from pipeline import train
from pipeline.artifacts import write_csv, write_text
from pipeline.competition import load_competition
from pipeline.config import ExperimentConfig, apply_overrides, build_config
from pipeline.ensemble._optuna import open_storage
from pipeline.errors import ConfigError, OtherConfigRun
from pipeline.executor import Executor, Job, build_executor, executor_overrides
from pipeline.fold_lock import FoldBusy
from pipeline.leaderboard import read_run
from pipeline.metrics import get_metric
from pipeline.sweep_space import SweepSpace, build_variant, check_space, describe, load_space

log = logging.getLogger(__name__)
STUDY_FILE = "study.journal"


@dataclass
class Variant:
    """One point of the space and what became of it."""

    changes: dict[str, Any]
    cfg: ExperimentConfig
    state: str = "pending"  # complete | pruned | busy | failed
    fold_scores: list[float] = field(default_factory=list)
    n_jobs: int = 0
    seconds: float = 0.0  # the variant's job time in this command


def _timed(fn: Any) -> tuple[float, Any]:
    """A job's result with its duration (measured where it ran)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _jobs(index: int, variant: Variant, comp: Any, folds: np.ndarray,
          executor: Executor) -> list[Job]:
    jobs = train.fold_jobs(variant.cfg, comp, folds, executor)
    variant.n_jobs = len(jobs)
    return [dataclasses.replace(job, fn=functools.partial(_timed, job.fn),
                                tag=(index, *job.tag)) for job in jobs]


def _record(variant: Variant, seconds: float, score: float | None) -> None:
    variant.seconds += seconds
    if score is None:  # another process holds the fold
        variant.state = "busy"
    else:
        variant.fold_scores.append(score)


def _finish(variant: Variant, comp: Any, folds: np.ndarray) -> float | None:
    """Gather a variant whose folds are all done; None when another process holds some."""
    if variant.state == "busy":
        log.warning("%s: some folds are another process's; gathered by it or a rerun",
                    variant.cfg.name)
        return None
    try:
        score = train.finish(variant.cfg, comp, folds, [])
    except FoldBusy:
        variant.state = "busy"
        return None
    variant.state = "complete"
    return score


def _prepare(variant: Variant, comp: Any, overwrite: bool) -> np.ndarray:
    """:func:`train.prepare` for a variant; its run folder of another config (the base
    config changed since the sweep ran it) is refused with what a sweep takes: the train
    stage's --new-version does not exist here."""
    try:
        return train.prepare(variant.cfg, comp, overwrite)
    except OtherConfigRun as err:
        raise ConfigError(
            f"{err.run_dir} holds this sweep's variant under another base config ({err.diff}). "
            "Pass --overwrite to retrain the sweep's variants in place, or --name for a sweep "
            "of its own") from None


def run_grid(base: dict[str, Any], space: SweepSpace, executor: Executor,
             overwrite: bool = False) -> list[Variant]:
    """Train every variant of the grid. Every variant is prepared (checked, its run folder
    made) before any trains; a remote executor then gets all their fold jobs at once."""
    name = space.name or "sweep"
    variants = [Variant(c, build_variant(base, name, c)) for c in space.grid()]
    prepared = []
    for variant in variants:
        comp = load_competition(variant.cfg.competition)
        prepared.append((comp, _prepare(variant, comp, overwrite)))
    # in this process a variant's jobs share its Accelerator: build them one variant at a time
    batches = ([[i] for i in range(len(variants))] if executor.in_process
               else [list(range(len(variants)))])
    for batch in batches:
        jobs = [job for i in batch for job in _jobs(i, variants[i], *prepared[i], executor)]
        for job, (seconds, score) in executor.run(jobs):
            _record(variants[job.tag[0]], seconds, score)
    for variant, (comp, folds) in zip(variants, prepared, strict=True):
        _finish(variant, comp, folds)
    return variants


def _storage(storage: str | None, folder: Path) -> BaseStorage:
    """The study's storage: ``<sweep>/study.journal``, or a journal path or RDB URL given."""
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
        storage = str((folder / STUDY_FILE).resolve())
    return open_storage(storage)


def _trial(variant: Variant, trial: optuna.Trial, executor: Executor,
           overwrite: bool) -> float | None:
    """Train one trial's variant fold by fold, reporting the running mean of its fold
    scores; returns its CV, or None when pruned (the jobs not yet done are cancelled)."""
    comp = load_competition(variant.cfg.competition)
    folds = _prepare(variant, comp, overwrite)
    results = executor.run(_jobs(0, variant, comp, folds, executor))
    try:
        for _, (seconds, score) in results:
            _record(variant, seconds, score)
            if score is None:
                continue
            trial.report(float(np.mean(variant.fold_scores)), len(variant.fold_scores) - 1)
            if len(variant.fold_scores) < variant.n_jobs and trial.should_prune():
                variant.state = "pruned"
                log.info("%s: pruned after %d fold(s)", variant.cfg.name,
                         len(variant.fold_scores))
                return None
    finally:
        results.close()
        trial.set_user_attr("seconds", variant.seconds)
        trial.set_user_attr("fold_scores", variant.fold_scores)
        trial.set_user_attr("jobs", variant.n_jobs)
    return _finish(variant, comp, folds)


def run_optuna(base: dict[str, Any], space: SweepSpace, executor: Executor, folder: Path,
               n_trials: int | None = None, storage: str | None = None,
               seed: int | None = None, overwrite: bool = False) -> list[Variant]:
    """Run trials until the study holds ``n_trials`` finished (complete or pruned) ones, at
    most that many from this process; returns every trial of the study as a variant (those
    of other workers and earlier runs too)."""
    name = space.name or "sweep"
    direction = (optuna.study.StudyDirection.MAXIMIZE
                 if get_metric(build_config(base).competition.metric).greater_is_better
                 else optuna.study.StudyDirection.MINIMIZE)
    seed = space.seed if seed is None else seed
    sampler = (optuna.samplers.RandomSampler(seed=seed) if space.sampler == "random"
               else optuna.samplers.TPESampler(seed=seed))
    pruner = (optuna.pruners.NopPruner() if space.pruner == "none" else
              optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials,
                                          n_warmup_steps=space.prune_after - 1))
    study = optuna.create_study(storage=_storage(storage, folder), study_name=name,
                                direction=direction, sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    target = n_trials or space.n_trials
    for _ in range(target):
        if len(study.get_trials(deepcopy=False, states=_FINISHED)) >= target:
            break  # other workers finished the study
        trial = study.ask()
        changes = {p.key: p.suggest(trial) for p in space.params}
        variant = Variant(changes, build_variant(base, name, changes))
        trial.set_user_attr("changes", changes)
        try:
            value = _trial(variant, trial, executor, overwrite)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if variant.state == "busy":  # the same point, drawn by another worker: left to it
            study.tell(trial, state=TrialState.FAIL)
        elif value is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return [_from_trial(t, base, name) for t in study.get_trials(deepcopy=False)
            if "changes" in t.user_attrs]


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
           TrialState.FAIL: "failed", TrialState.RUNNING: "running"}


def _from_trial(trial: optuna.trial.FrozenTrial, base: dict[str, Any], name: str) -> Variant:
    """A trial of the study (this worker's or another's) as a row of the table."""
    attrs = trial.user_attrs
    return Variant(attrs["changes"], build_variant(base, name, attrs["changes"]),
                   _STATES.get(trial.state, "failed"), list(attrs.get("fold_scores", [])),
                   attrs.get("jobs", 0), attrs.get("seconds", 0.0))


_RANK = {"complete": 0, "pruned": 1, "busy": 2, "running": 3, "failed": 4, "pending": 5}


def _unique(variants: list[Variant]) -> list[Variant]:
    """One variant per run folder: a study may draw the same point twice (the second trial
    finds the run done, or prunes it at once); the row keeps the furthest one got."""
    kept: dict[str, Variant] = {}
    for v in variants:
        old = kept.get(v.cfg.name)
        if old is None or (_RANK[v.state], -len(v.fold_scores)) < (
                _RANK[old.state], -len(old.fold_scores)):
            kept[v.cfg.name] = v
    return list(kept.values())


def table(variants: list[Variant]) -> pd.DataFrame:
    """One row per variant (run folder), finished ones best CV first."""
    variants = _unique(variants)
    rows = []
    for v in variants:
        done = v.state == "complete" and (v.cfg.run_dir / "scores.json").is_file()
        row = read_run(v.cfg.run_dir) if done else None
        partial = float(np.mean(v.fold_scores)) if v.fold_scores else math.nan
        seconds = row.seconds if row is not None and row.seconds is not None else v.seconds
        rows.append({
            "variant": v.cfg.name, "state": v.state,
            "cv": row.cv if row is not None and row.cv is not None else partial,
            "cv_last_epoch": row.last_cv if row is not None and row.last_cv is not None
            else math.nan,
            "folds": f"{len(v.fold_scores)}/{v.n_jobs}" if not done else f"{v.n_jobs}/{v.n_jobs}",
            "seconds": round(float(seconds), 3), "changes": describe(v.changes),
            "run_dir": str(v.cfg.run_dir),
        })
    frame = pd.DataFrame(rows, columns=["variant", "state", "cv", "cv_last_epoch", "folds",
                                        "seconds", "changes", "run_dir"])
    if variants:
        better_high = get_metric(variants[0].cfg.competition.metric).greater_is_better
        frame["_done"] = frame["state"] != "complete"
        frame = frame.sort_values(["_done", "cv"], ascending=[True, not better_high],
                                  na_position="last", kind="stable").drop(columns="_done")
    return frame.reset_index(drop=True)


def _cell(column: str, value: Any) -> str:
    """A table cell: scores to 5 decimals, seconds to 1 (the CSV keeps milliseconds)."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float) and column.startswith("cv"):
        return f"{value:.5f}"
    if isinstance(value, float) and column == "seconds":
        return f"{value:.1f}"
    return str(value)


def _markdown(frame: pd.DataFrame, title: str) -> str:
    cols = list(frame.columns)
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = [_cell(c, v) for c, v in zip(cols, r, strict=True)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run(base: dict[str, Any], space: SweepSpace, sweeps_dir: str | Path = "sweeps",
        n_trials: int | None = None, storage: str | None = None, seed: int | None = None,
        overwrite: bool = False, executor: Executor | None = None) -> Path:
    """Run the sweep (base config as plain data, overrides applied) and write its table;
    returns the sweep folder."""
    name = space.name or "sweep"
    folder = Path(sweeps_dir) / name
    check_space(base, space)  # a bad value is refused before anything trains
    executor = executor or build_executor(build_config(base).executor)
    method = space.resolved_method
    if method == "grid":
        variants = run_grid(base, space, executor, overwrite)
    else:
        variants = run_optuna(base, space, executor, folder, n_trials, storage, seed, overwrite)
    frame = table(variants)
    write_csv(folder / "results.csv", frame)
    metric = build_config(base).competition.metric
    write_text(folder / "results.md", _markdown(frame, f"Sweep {name} ({method}, {metric})"))
    members = frame.loc[frame["state"] == "complete", "run_dir"].tolist()
    write_text(folder / "members.txt", "".join(f"{m}\n" for m in members))
    log.info("sweep %s: %d variant(s), %d complete -> %s", name, len(frame), len(members),
             folder)
    return folder


def _read_base(path: str, overrides: list[str]) -> dict[str, Any]:
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"config file {source} not found")
    data = yaml.safe_load(source.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {source} must hold a mapping at the top level")
    return apply_overrides(data, overrides)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``pipeline sweep``."""
    base = _read_base(args.config, args.overrides + executor_overrides(args.executor,
                                                                       args.address))
    space = load_space(args.space)
    if args.name:
        space = space.model_copy(update={"name": args.name})
    folder = run(base, space, args.sweeps_dir, args.trials, args.storage, args.seed,
                 args.overwrite)
    print((folder / "results.md").read_text(), end="")
    print(folder)
    busy = (pd.read_csv(folder / "results.csv")["state"] == "busy").any()
    return 2 if busy else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sweep`` to the ``pipeline`` command's subparsers."""
    text = "run every variant of a config over a search space (grid or Optuna) and tabulate"
    p = sub.add_parser("sweep", help=text, description=text,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       epilog="example: pipeline sweep configs/exp.yaml --space "
                       "configs/sweep_example.yaml --executor ray")
    p.add_argument("config", help="the base experiment YAML")
    p.add_argument("--space", required=True, help="search space YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a key of the base config")
    p.add_argument("--name", default=None, help="sweep name (default: the space's)")
    p.add_argument("--sweeps-dir", default="sweeps")
    p.add_argument("--trials", "--n-trials", dest="trials", type=int, default=None,
                   help="optuna: trials the study should hold (default: the space's n_trials)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: a journal file or an RDB URL (postgresql://...) "
                   "shared by several sweep workers (default: <sweep>/study.journal)")
    p.add_argument("--seed", type=int, default=None,
                   help="the sampler's seed (default: the space's); give each worker its own")
    p.add_argument("--executor", choices=["local", "ray"], default=None)
    p.add_argument("--address", default=None, help="Ray cluster address ('auto', host:port)")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain variant run folders that hold another config")
    p.set_defaults(fn=cmd_sweep)
