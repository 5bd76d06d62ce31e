"""Speed and quality of the Optuna blend stage, before and after the blend-speed change.

"Before" is a frozen copy of the previous ``OptunaBlender`` (multivariate TPE, the metric
called through scikit-learn on every trial, Optuna writing every parameter of every trial to
the storage) with the previous stage default, a SQLite file in the blend folder. "After" is
the current code: CMA-ES started at the better of equal weights and the best member, ROC AUC
evaluated without scikit-learn's input checks (equal to it bit for bit), the study in memory
with one write per completed trial to the stage's journal file. Both run in the same process.

Members are synthetic and seeded: each member sees a latent signal through its own noise,
part of it shared with a family of members, and its own temperature and bias (calibration).
Binary: 35% positives; multiclass: 5 classes. Every case has held-out rows drawn from the
same process (members' predictions and labels); the stage gets them as its test rows, so
the blend's test prediction is scored on labels no blender saw.

Timed, per case and seed:

- the whole blend stage (``pipeline.blend.run`` on run folders written here: one stored
  study, then nested CV re-tuning without each of the 3 folds, in memory), reading
  in-sample and nested-CV scores from ``cv.json`` and scoring ``test.parquet``;
- one 300-trial study (``fit`` of the blender alone) in several configurations, to show
  what each change brings.

``--profile`` runs cProfile on single studies and splits the time between the sampler, the
storage, the metric, the blending and Optuna's own trial bookkeeping (the self time of
numpy calls goes to the area that called them).

``--quality-seeds`` compares the scores of the old and the new sampler over more seeds.

Run: ``python benchmarks/blend_speed.py [--seeds 0 1 2] [--trials 300] [--sizes small large]
[--large-stage] [--profile] [--quality-seeds 0 1 ... 9 [--only-quality]]
[--work runs/blend_speed]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from pipeline import blend
from pipeline.artifacts import RunMeta, load_predictions, read_json, write_meta, write_parquet
from pipeline.ensemble import BLENDERS, OptunaBlender, nested_cv
from pipeline.ensemble._base import blend_weighted, member_scores, resolve_metric, simplex
from pipeline.ensemble._prune import drop_small_weights
from pipeline.metrics import get_metric

SIZES = {"small": (10, 450), "large": (20, 100_000)}
CASES = [("binary", "roc_auc", False), ("binary", "log_loss", False),
         ("multiclass", "log_loss", False), ("multiclass", "accuracy", False),
         ("multiclass", "log_loss", True)]  # the last: per_class weights (50 of them)
N_FOLDS, N_CLASSES = 3, 5


# --- the blender as it was before ----------------------------------------------------------


class BeforeOptunaBlender(OptunaBlender):
    """The previous ``OptunaBlender._fit`` and ``_tune``, unchanged (for the baseline); the
    settings are today's (``__init__`` is inherited)."""

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        metric = resolve_metric(self.metric, type(self).__name__)
        m, _, c = stacked.shape
        shape = (m, c) if self.per_class and c > 1 else (m,)
        if len(shape) == 1:
            names = [f"w{i}" for i in range(m)]
        else:
            names = [f"w{i}_c{j}" for i in range(m) for j in range(c)]
        task = self.task_

        def objective(trial: optuna.Trial) -> float:
            raw = np.array([trial.suggest_float(name, 0.0, 1.0) for name in names])
            return metric(y, blend_weighted(simplex(raw.reshape(shape)), stacked, task))

        sampler = self.sampler or optuna.samplers.TPESampler(seed=self.seed, multivariate=True)
        study = optuna.create_study(storage=self.storage, study_name=self.study_name,
                                    direction=metric.direction, sampler=sampler,
                                    load_if_exists=True)
        if not study.trials:
            scores = member_scores(metric, stacked, y)
            best = int(np.argmax(scores) if metric.greater_is_better else np.argmin(scores))
            study.enqueue_trial(dict.fromkeys(names, 1.0))
            study.enqueue_trial({n: float(n.split("_")[0] == f"w{best}") for n in names})
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done < self.n_trials:
            study.optimize(objective, n_trials=self.n_trials - done,
                           callbacks=[MaxTrialsCallback(self.n_trials,
                                                        states=(TrialState.COMPLETE,))])
        weights = np.array([study.best_params[name] for name in names])
        self.weights_, self.best_score_ = drop_small_weights(
            simplex(weights.reshape(shape)),
            lambda w: metric(y, blend_weighted(w, stacked, task)), metric, self.zero_below)
        return self._predict(stacked)


BLENDERS.add("optuna_before", BeforeOptunaBlender)  # this process only: the stage baseline


# --- synthetic members ---------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_members(task: str, m: int, n: int, seed: int, n_held: int = 20_000
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OOF members ``(m, n, c)``, targets, folds, held-out members and held-out targets."""
    rng = np.random.default_rng(seed)
    family = rng.integers(0, 3, m)  # members of a family share part of their noise
    noise = rng.uniform(0.6, 2.5, m)  # quality
    temperature = rng.uniform(0.4, 2.0, m)  # calibration
    bias = rng.normal(0.0, 0.6, m)

    def rows(k: int, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if task == "binary":
            signal = r.normal(size=k)
            y = (signal + r.normal(scale=0.8, size=k) > 0.6).astype(np.float64)
            shared = r.normal(size=(3, k))
            preds = np.stack([_sigmoid(temperature[i] * (signal + 0.5 * shared[family[i]]
                                                         + noise[i] * r.normal(size=k))
                                       + bias[i] - 0.6)[:, None] for i in range(m)])
            return preds, y[:, None]
        y = r.integers(0, N_CLASSES, k)
        signal = 1.5 * np.eye(N_CLASSES)[y]
        shared = r.normal(size=(3, k, N_CLASSES))
        logits = np.stack([temperature[i] * (signal + 0.5 * shared[family[i]]
                                             + noise[i] * r.normal(size=(k, N_CLASSES)))
                           + bias[i] * np.eye(N_CLASSES)[i % N_CLASSES] for i in range(m)])
        e = np.exp(logits - logits.max(axis=2, keepdims=True))
        return e / e.sum(axis=2, keepdims=True), y

    oof, y = rows(n, rng)
    held, y_held = rows(n_held, np.random.default_rng(seed + 1000))
    folds = rng.permutation(np.arange(n) % N_FOLDS)
    return oof, y, folds, held, y_held


def write_runs(folder: Path, task: str, metric: str, oof: np.ndarray, folds: np.ndarray,
               held: np.ndarray) -> list[Path]:
    """One run folder per member (run.json, oof.parquet, test.parquet = the held-out rows)."""
    classes = ["no", "yes"] if task == "binary" else [f"c{k}" for k in range(N_CLASSES)]
    columns = ["label"] if task == "binary" else classes
    ids, test_ids = np.arange(oof.shape[1]), np.arange(held.shape[1]) + 10_000_000
    runs = []
    for i, (p, h) in enumerate(zip(oof, held, strict=True)):
        run = folder / f"m{i}"
        meta = RunMeta(name=run.name, task=task, metric=metric, id_column="id",
                       target_columns=["label"], classes=classes, pred_columns=columns,
                       folds_file="", competition_dir="", train_file="",
                       config_hash=f"member-{i}")
        write_meta(run, meta)
        frame = pd.DataFrame(p, columns=columns)
        frame.insert(0, "fold", folds)
        frame.insert(0, "id", ids)
        write_parquet(run / "oof.parquet", frame)
        test = pd.DataFrame(h, columns=columns)
        test.insert(0, "id", test_ids)
        write_parquet(run / "test.parquet", test)
        runs.append(run)
    return runs


# --- timing --------------------------------------------------------------------------------


def time_stage(runs: list[Path], y: np.ndarray, y_held: np.ndarray, metric: str,
               method: str, folder: Path, trials: int, seed: int, per_class: bool,
               storage: str | None) -> dict[str, float]:
    """Wall time of ``blend.run`` with ``method`` and its in-sample, nested and held-out
    scores."""
    if folder.exists():
        shutil.rmtree(folder)
    params = {"per_class": True} if per_class else {}
    start = time.perf_counter()
    out = blend.run(runs, method=method, name=folder.name, blends_dir=folder.parent,
                    n_trials=trials, storage=storage, seed=seed, params=params, targets=y)
    wall = time.perf_counter() - start
    cv = read_json(out / "cv.json")
    held = get_metric(metric)(y_held, load_predictions(out).test_matrix)
    return {"wall": wall, "in_sample": cv["in_sample"]["score"],
            "nested": cv["nested"]["pooled"], "nested_mean": cv["nested"]["mean"],
            "held_out": held}


def study_configs(folder: Path, seed: int, with_slow: bool
                  ) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Single-study configurations: label -> blender factory (given the common params)."""

    def journal(name: str) -> str:
        path = folder / name
        path.unlink(missing_ok=True)
        return str(path)

    configs: dict[str, Callable[[dict[str, Any]], Any]] = {
        "before: TPE, scikit-learn metric, in memory":
            lambda kw: BeforeOptunaBlender(**kw),
    }
    if with_slow:
        configs["before: same, SQLite file (the old stage default)"] = (
            lambda kw: BeforeOptunaBlender(storage=f"sqlite:///{journal('before.db')}", **kw))
        configs["before: same, journal file written by Optuna (each parameter)"] = (
            lambda kw: BeforeOptunaBlender(
                storage=JournalStorage(JournalFileBackend(journal("before.journal"))), **kw))
    configs["after, but TPE sampler (fast metric, in memory)"] = (
        lambda kw: OptunaBlender(sampler=optuna.samplers.TPESampler(seed=seed,
                                                                    multivariate=True), **kw))
    configs["after: CMA-ES, fast metric, in memory"] = lambda kw: OptunaBlender(**kw)
    configs["after: same, journal file (one write a trial)"] = (
        lambda kw: OptunaBlender(storage=journal("after.journal"), **kw))
    return configs


def time_study(make: Callable[[dict[str, Any]], Any], metric: str, trials: int, seed: int,
               per_class: bool, oof: np.ndarray, y: np.ndarray, held: np.ndarray,
               y_held: np.ndarray) -> dict[str, float]:
    kw = {"metric": metric, "n_trials": trials, "seed": seed, "per_class": per_class}
    blender = make(kw)
    start = time.perf_counter()
    blender.fit(oof, y)
    wall = time.perf_counter() - start
    scorer = get_metric(metric)
    return {"wall": wall, "in_sample": scorer(y, blender.oof_),
            "held_out": scorer(y_held, blender.predict(held))}


# --- profile -------------------------------------------------------------------------------

_AREAS = (("storage", ("optuna/storages", "sqlalchemy", "sqlite3", "/json/")),
          ("sampler", ("optuna/samplers", "/cmaes/")),
          ("metric", ("sklearn/", "pipeline/metrics.py", "scipy/integrate")),
          ("Optuna trial bookkeeping", ("optuna/",)))


def _own_area(func: tuple[str, int, str]) -> str | None:
    filename, _, name = func
    if filename.endswith(os.path.join("ensemble", "_base.py")):
        return "blending" if name in ("blend_weighted", "simplex") else "metric"
    if "sqlite3" in name:
        return "storage"
    for area, keys in _AREAS:
        if any(k in filename for k in keys):
            return area
    return None  # numpy, the standard library, builtins: the caller's area


def profile_areas(stats: pstats.Stats) -> dict[str, float]:
    """Self time per area; a function of no area passes its time on to its callers, in
    proportion to the time each caller spent in it."""
    table = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def share(func: Any, seen: frozenset[Any]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        area = _own_area(func)
        if area is not None:
            result = {area: 1.0}
        else:
            callers = {c: v[3] for c, v in table[func][4].items() if c not in seen}
            total = sum(callers.values())
            result = {}
            for caller, ct in callers.items():
                for a, f in share(caller, seen | {func}).items():
                    result[a] = result.get(a, 0.0) + f * ct / total
            result = result or {"other (the loop, copies)": 1.0}
        memo[func] = result
        return result

    areas: dict[str, float] = {}
    for func, (_, _, tt, _, _) in table.items():
        for a, f in share(func, frozenset()).items():
            areas[a] = areas.get(a, 0.0) + tt * f
    return areas


def profile_study(label: str, make: Callable[[dict[str, Any]], Any], kw: dict[str, Any],
                  oof: np.ndarray, y: np.ndarray) -> None:
    profiler = cProfile.Profile()
    blender = make(kw)
    profiler.enable()
    blender.fit(oof, y)
    profiler.disable()
    areas = profile_areas(pstats.Stats(profiler))
    total = sum(areas.values())
    parts = ", ".join(f"{a} {s:.2f} s ({s / total:.0%})"
                      for a, s in sorted(areas.items(), key=lambda kv: -kv[1]))
    print(f"  {label}: {total:.2f} s under cProfile: {parts}")


# --- quality over more seeds ---------------------------------------------------------------


def quality(seeds: list[int], trials: int) -> None:
    """In-sample, nested-CV and held-out scores of the old sampler (multivariate TPE) and the
    new default on the small cases over many seeds. The old sampler runs in the new code:
    its numbers are the old code's to the last digit (the fast ROC AUC equals scikit-learn's
    and storage does not change a study), only sooner. Nested CV as the stage runs it."""
    m, n = SIZES["small"]
    print(f"\nquality over seeds {seeds} ({m}x{n}, {trials} trials; better = lower for log_loss)")
    print("| case | sampler | in-sample | nested CV pooled | held-out | nested wins "
          "| held-out wins |\n|---|---|---|---|---|---|---|")
    for task, metric, per_class in CASES:
        scorer = get_metric(metric)
        scores: dict[str, list[tuple[float, float, float]]] = {"TPE (before)": [],
                                                               "CMA-ES (after)": []}
        for seed in seeds:
            oof, y, folds, held, y_held = make_members(task, m, n, seed)
            for label in scores:
                sampler = (optuna.samplers.TPESampler(seed=seed, multivariate=True)
                           if label.startswith("TPE") else None)
                blender = OptunaBlender(metric=metric, n_trials=trials, seed=seed,
                                        per_class=per_class, sampler=sampler).fit(oof, y)
                nested = nested_cv(blender, oof, y, folds, scorer, task)
                scores[label].append((scorer(y, blender.oof_), nested.pooled,
                                      scorer(y_held, blender.predict(held))))
        before, after = (np.array(v) for v in scores.values())
        better = (lambda a, b: a > b) if scorer.greater_is_better else (lambda a, b: a < b)
        for label, mine, other in (("TPE (before)", before, after),
                                   ("CMA-ES (after)", after, before)):
            wins = [int(sum(better(a, b) for a, b in zip(mine[:, k], other[:, k], strict=True)))
                    for k in (1, 2)]
            name = f"{task} {metric}{' per_class' if per_class else ''}"
            print(f"| {name} | {label} | {mine[:, 0].mean():.4f} | {mine[:, 1].mean():.4f} "
                  f"| {mine[:, 2].mean():.4f} | {wins[0]}/{len(seeds)} | {wins[1]}/{len(seeds)} |")


# --- main ----------------------------------------------------------------------------------


def _row(label: str, r: dict[str, float], base: float | None) -> str:
    ratio = f"{base / r['wall']:.1f}x" if base else "1.0x"
    nested = f"{r['nested']:.4f}" if "nested" in r else "-"
    return (f"| {label} | {r['wall']:.2f} | {ratio} | {r['in_sample']:.4f} | {nested} "
            f"| {r['held_out']:.4f} |")


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--large-stage", action="store_true",
                        help="also time the whole stage at the large size (binary roc_auc)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quality-seeds", type=int, nargs="*", default=[],
                        help="also compare the samplers' scores over these seeds (small size)")
    parser.add_argument("--only-quality", action="store_true", help="skip the timings")
    parser.add_argument("--work", default="runs/blend_speed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    work = Path(args.work)
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, optuna "
          f"{optuna.__version__}, numpy {np.__version__}; {args.trials} trials")
    results: dict[str, Any] = {}
    for size in [] if args.only_quality else args.sizes:
        m, n = SIZES[size]
        for task, metric, per_class in CASES:
            if per_class and size == "large":
                continue
            case = f"{size} {m}x{n} {task} {metric}{' per_class' if per_class else ''}"
            stage: dict[str, list[dict[str, float]]] = {}
            single: dict[str, list[dict[str, float]]] = {}
            for i, seed in enumerate(args.seeds):
                oof, y, folds, held, y_held = make_members(task, m, n, seed)
                folder = work / size / f"{task}-{metric}-{seed}"
                runs = write_runs(folder / "runs", task, metric, oof, folds, held)
                do_stage = not per_class and (size == "small" or (
                    args.large_stage and metric == "roc_auc" and i == 0))
                if do_stage:
                    blends = folder / "blends"
                    stage.setdefault("before (TPE, scikit-learn metric, SQLite file)", []).append(
                        time_stage(runs, y, y_held, metric, "optuna_before",
                                   blends / "before", args.trials, seed, per_class,
                                   f"sqlite:///{(blends / 'before.db').resolve()}"))
                    stage.setdefault("after (CMA-ES, fast metric, journal file)", []).append(
                        time_stage(runs, y, y_held, metric, "optuna", blends / "after",
                                   args.trials, seed, per_class, None))
                slow = i == 0 and (size == "small" or metric == "roc_auc") and not per_class
                for label, make in study_configs(folder, seed, slow).items():
                    single.setdefault(label, []).append(time_study(
                        make, metric, args.trials, seed, per_class, oof, y, held, y_held))
                if args.profile and i == 0 and not per_class:
                    kw = {"metric": metric, "n_trials": args.trials, "seed": seed}
                    print(f"profile, {case}, seed {seed}:")
                    for label, make in study_configs(folder, seed, slow).items():
                        if "TPE sampler" not in label:
                            profile_study(label, make, kw, oof, y)
            print(f"\n{case}, seeds {args.seeds} (means; held-out: 20,000 fresh rows)")
            print("| configuration | wall s | speed-up | in-sample | nested CV pooled "
                  "| held-out |\n|---|---|---|---|---|---|")
            for part, rows in (("stage", stage), ("one study", single)):
                base = None
                for label, runs_ in rows.items():
                    r = _mean(runs_)
                    base = base or r["wall"]
                    note = f" (seed {args.seeds[0]})" if len(runs_) < len(args.seeds) else ""
                    print(_row(f"{part}: {label}{note}", r, base))
            results[case] = {"stage": stage, "one study": single}
    if results:
        work.mkdir(parents=True, exist_ok=True)
        (work / "results.json").write_text(json.dumps(results, indent=1))
        print(f"\nresults: {work / 'results.json'}")
    if args.quality_seeds:
        quality(args.quality_seeds, args.trials)


if __name__ == "__main__":
    main()
