"""The executors (pipeline/executor.py): the fold jobs of a run on a local Ray cluster of 2
CPUs give the very artifacts of the in-process executor; a worker that dies loses only its
job, and the rerun resumes it; a job's own error comes back as itself."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipeline import cli, train
from pipeline.competition import load_competition
from pipeline.config import build_config, load_config
from pipeline.errors import ConfigError
from pipeline.executor import (
    ExecutorConfig,
    Job,
    JobsLost,
    LocalExecutor,
    RayExecutor,
    build_executor,
)
from pipeline.runs import fold_complete, load_folds


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A Ray instance on this machine's 2 CPUs, small, shut down after the module."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024**2, configure_logging=False)
    yield ray
    ray.shutdown()


def _die_once(marker: str, fn: Any) -> Any:
    """Kill this worker process the first time (no Python cleanup, like a lost machine)."""
    if not Path(marker).exists():
        Path(marker).write_text("died")
        os._exit(1)
    return fn()


def _raise() -> None:
    raise ConfigError("'train.epochs' must be >= 1. Got 0.")


def _frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run_dir / name)
            for name in ("oof.parquet", "test.parquet", "test_folds.parquet")}


def _config(factory: Any, root: Path) -> dict[str, Any]:
    data = factory("tabular", "multiclass")
    data["output_dir"] = str(root / "runs")
    data["train"].update(epochs=2, seeds=[0])
    return data


def test_ray_artifacts_equal_the_local_executors_bit_for_bit(
        competition_factory, tmp_path, ray_cluster, one_thread):
    """The same config trained by the in-process executor and, through `pipeline train
    --executor ray`, as Ray tasks (one per fold, one CPU each): equal OOF, test predictions
    and scores, exactly, since both train on one thread with the same seeds."""
    data = _config(competition_factory, tmp_path / "local")
    local = build_config(data)
    train.run(local)
    data["output_dir"] = str(tmp_path / "ray" / "runs")
    path = tmp_path / "exp.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(path), "--executor", "ray", "--address", "auto"]) == 0
    remote = load_config(path, ["executor.name=ray"])
    assert remote.train_hash() == local.train_hash()  # where jobs run is not their identity
    for name, frame in _frames(local.run_dir).items():
        pd.testing.assert_frame_equal(_frames(remote.run_dir)[name], frame, check_exact=True,
                                      obj=name)
    assert (remote.run_dir / "scores.json").read_text() == (
        local.run_dir / "scores.json").read_text()
    # each fold job ran in a Ray worker, not in this process
    log = (remote.run_dir / "log.txt").read_text()
    assert "training on" not in log


def test_a_grid_sweep_on_ray_trains_the_variants_side_by_side_like_local(
        competition_factory, tmp_path, ray_cluster):
    """Every fold job of every variant is submitted at once; the table equals the local
    executor's (times aside)."""
    from pipeline import sweep
    from pipeline.sweep_space import SweepSpace

    data = competition_factory("tabular", "regression")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}
    space = SweepSpace(name="alpha", space={"model.encoders.0.params.alpha": [0.1, 10.0]})
    tables = {}
    for name in ("local", "ray"):
        base = {**data, "output_dir": str(tmp_path / name), "executor": {"name": name}}
        folder = sweep.run(base, space, tmp_path / name / "sweeps")
        tables[name] = pd.read_csv(folder / "results.csv").drop(columns=["seconds", "run_dir"])
    assert (tables["ray"]["state"] == "complete").all() and len(tables["ray"]) == 2
    pd.testing.assert_frame_equal(tables["ray"], tables["local"], check_exact=True)


def test_a_dead_worker_loses_only_its_job_and_the_rerun_resumes_it(
        competition_factory, tmp_path, ray_cluster, one_thread):
    data = _config(competition_factory, tmp_path)
    data["executor"] = {"name": "ray", "max_retries": 0}
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    folds = train.prepare(cfg, comp)
    executor = build_executor(cfg.executor)
    assert isinstance(executor, RayExecutor)
    jobs = train.fold_jobs(cfg, comp, folds, executor)
    jobs[0] = dataclasses.replace(
        jobs[0], fn=functools.partial(_die_once, str(tmp_path / "died"), jobs[0].fn))
    finished = []
    with pytest.raises(JobsLost, match=r"1 job\(s\) lost .*seed0/fold0.*run the same command"):
        for job, score in executor.run(jobs):
            finished.append((job.tag, score))
    assert [tag for tag, _ in finished] == [(0, 1)] and finished[0][1] > 0
    assert fold_complete(cfg, 0, 1) and not fold_complete(cfg, 0, 0)
    assert not (cfg.run_dir / "oof.parquet").exists()
    # the rerun trains only the lost fold, then gathers
    mtime = (cfg.run_dir / "seed0" / "fold1" / "metrics.json").stat().st_mtime_ns
    score = train.run(cfg)
    assert (cfg.run_dir / "seed0" / "fold1" / "metrics.json").stat().st_mtime_ns == mtime
    local = build_config({**data, "output_dir": str(tmp_path / "local"), "executor": {}})
    assert train.run(local, executor=LocalExecutor()) == score
    pd.testing.assert_frame_equal(_frames(cfg.run_dir)["oof.parquet"],
                                  _frames(local.run_dir)["oof.parquet"], check_exact=True)
    assert load_folds(cfg, comp).tolist() == folds.tolist()


def test_ray_retries_a_dead_worker_and_raises_a_jobs_error_as_itself(tmp_path, ray_cluster):
    executor = RayExecutor(ExecutorConfig(name="ray", max_retries=1))
    jobs = [Job("dies-once", functools.partial(_die_once, str(tmp_path / "m"), int)),
            Job("fine", functools.partial(int, "7"))]
    assert sorted((job.key, out) for job, out in executor.run(jobs)) == [
        ("dies-once", 0), ("fine", 7)]
    with pytest.raises(ConfigError) as info:
        list(executor.run([Job("bad", _raise)]))
    assert str(info.value) == "'train.epochs' must be >= 1. Got 0."  # the CLI's one line
    with pytest.raises(ZeroDivisionError, match=r"(?s)ray::bug.*by zero"):  # and where
        list(executor.run([Job("bug", functools.partial(divmod, 1, 0))]))


def test_an_unknown_executor_is_refused_at_load(competition_factory):
    data = competition_factory("tabular", "binary")
    data["executor"] = {"name": "slurm"}
    with pytest.raises(ConfigError, match=r"executor.name.*'local', 'ray'.*'slurm'"):
        build_config(data)



class _Remote(LocalExecutor):
    """A stand-in for a remote executor: jobs as they would be submitted."""

    in_process = False


def test_each_job_asks_for_the_configured_share_of_a_gpu(competition_factory):
    """`executor.gpus: 0.25` lets four small network folds share one GPU; scikit-learn jobs
    never ask for one; None leaves it to the cluster (one GPU when it has any)."""
    data = competition_factory("tabular", "binary")
    data["train"]["seeds"] = [0, 1]
    data["executor"] = {"name": "ray", "cpus": 2, "gpus": 0.25}
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    jobs = train.fold_jobs(cfg, comp, folds, _Remote())
    assert [j.tag for j in jobs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {(j.cpus, j.gpus) for j in jobs} == {(2.0, 0.25)}
    assert jobs[3].key == "tabular-binary seed1/fold1"
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    assert {j.gpus for j in train.fold_jobs(build_config(data), comp, folds, _Remote())} == {0}
    data["executor"] = {"name": "ray"}
    data["model"] = competition_factory("tabular", "binary")["model"]
    assert {j.gpus for j in train.fold_jobs(build_config(data), comp, folds, _Remote())} == {None}


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nohost"])
def test_a_head_address_nothing_answers_at_is_refused_at_once(address, competition_factory,
                                                              tmp_path, capsys):
    data = competition_factory("tabular", "binary")
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(data))
    start = time.perf_counter()
    code = cli.main(["train", str(config), "--executor", "ray", "--address", address])
    assert code == 2 and time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert "'executor.address'" in err and address in err
    assert not (Path(data["output_dir"]) / data["name"]).exists()  # nothing written
