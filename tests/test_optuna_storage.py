"""Optuna studies on PostgreSQL: blends and sweeps given ``--storage postgresql://...``,
several worker processes tuning one study.

The server: ``PIPELINE_TEST_POSTGRES`` (``.ci/run`` starts a throwaway one and sets it), or
one this module starts from Debian's ``postgresql`` package in a temporary folder (Unix
socket only) and stops after. Without either the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from pipeline import cli


def _start_server(folder: Path) -> str:
    """A throwaway cluster in ``folder``; its URL. initdb refuses root: run as 'postgres'."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        raise FileNotFoundError("Debian's postgresql package is not installed")
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    run = [*as_pg, f"{bins[-1]}/"]
    for args in (["initdb", "-D", f"{folder}/data", "-A", "trust", "-U", "postgres",
                  "--no-sync"],
                 ["pg_ctl", "-D", f"{folder}/data", "-l", f"{folder}/log", "-w", "-o",
                  f"-c listen_addresses='' -k {folder} -c fsync=off", "start"],
                 ["createdb", "-h", str(folder), "-U", "postgres", "pipeline_test"]):
        subprocess.run([*run[:-1], run[-1] + args[0], *args[1:]], check=True,
                       capture_output=True, timeout=60)
    return f"postgresql://postgres@/pipeline_test?host={folder}"


def _stop_server(folder: Path) -> None:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, f"{bins[-1]}/pg_ctl", "-D", f"{folder}/data", "-m", "immediate",
                    "-w", "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL URL for Optuna; each test uses its own study names in it."""
    url = os.environ.get("PIPELINE_TEST_POSTGRES")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    try:
        url = _start_server(folder)
    except (OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL server ({err}); CI must have one (see .ci/run)")
        pytest.skip(f"no PostgreSQL server: {err}")
    try:
        yield url
    finally:
        _stop_server(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _pipeline(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PIPELINE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def test_two_sweep_workers_tune_one_study_on_postgresql(competition_factory, tmp_path,
                                                        postgres):
    """Two `pipeline sweep` processes, each with its own sampler seed, on one study: together
    they finish the study's trials (not twice as many), and each one's table lists every
    trial of the study, the other worker's included (a trial the other still runs as
    'running'; the worker that finishes last sees them all complete)."""
    data = competition_factory("tabular", "regression", n_train=60)
    data["folds"] = {"scheme": "kfold", "n_splits": 2, "seed": 0}
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(data))
    name = f"pg-{uuid.uuid4().hex[:8]}"  # a fresh study on a server that outlives the test
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": name, "method": "optuna", "n_trials": 4, "pruner": "none",
        "space": {"model.encoders.0.params.alpha": {"log_uniform": [1.0e-3, 1.0e3]}}}))
    workers = [_pipeline("sweep", str(config), "--space", str(space), "--storage", postgres,
                         "--seed", str(seed), "--sweeps-dir", f"worker{seed}", cwd=tmp_path)
               for seed in (1, 2)]
    for worker in workers:
        _wait(worker)
    study = optuna.load_study(study_name=name, storage=postgres)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # each worker stops once the study holds 4; both may start their last trial at once
    assert 4 <= len(complete) <= 5
    tables = sorted((tmp_path / f"worker{seed}" / name / "results.csv" for seed in (1, 2)),
                    key=lambda p: p.stat().st_mtime_ns)
    alphas = {t.params["model.encoders.0.params.alpha"] for t in complete}
    for table in tables:
        frame = pd.read_csv(table)
        assert set(frame["state"]) <= {"complete", "running"}
        assert frame["variant"].str.startswith(f"tabular-regression-{name}-").all()
        assert len(frame) <= len(alphas)
    last = pd.read_csv(tables[-1])  # written once both workers were done: every trial
    assert len(last) == len(alphas) and set(last["state"]) == {"complete"}
    # every row is a finished run with its own OOF: a blend member
    assert all((Path(d) / "oof.parquet").is_file() for d in last["run_dir"])


def test_blend_studies_resume_on_postgresql_from_another_process(competition_factory,
                                                                  tmp_path, postgres):
    """`pipeline blend --storage postgresql://...`: a second process with more trials
    continues the first one's study instead of starting again."""
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    runs = []
    for c in (0.01, 1.0):
        data["name"] = f"lr-{c}"
        data["model"]["encoders"][0]["params"] = {"C": c}
        path = tmp_path / f"lr-{c}.yaml"
        path.write_text(yaml.safe_dump(data))
        assert cli.main(["train", str(path)]) == 0
        runs.append(str(Path(data["output_dir"]) / data["name"]))
    seed = str(uuid.uuid4().int % 10**6)  # the study's name hashes the seed: a fresh study
    before = {s.study_name for s in optuna.get_all_study_summaries(postgres)}
    sizes = []
    for trials, blends in (("12", "first"), ("20", "second")):
        args = ["blend", "--runs", *runs, "--method", "optuna", "--trials", trials, "--seed",
                seed, "--storage", postgres, "--name", "ab", "--blends-dir",
                str(tmp_path / blends)]
        if blends == "first":  # this process
            assert cli.main(args) == 0
        else:  # another one
            _wait(_pipeline(*args, cwd=tmp_path))
        new = {s.study_name for s in optuna.get_all_study_summaries(postgres)} - before
        assert len(new) == 1  # one study, made by the first process, reused by the second
        sizes.append(len(optuna.load_study(study_name=new.pop(), storage=postgres).trials))
    assert sizes == [12, 20]  # the second process ran only the 8 trials missing
    assert (tmp_path / "second" / "ab" / "weights.json").is_file()


def test_a_worker_that_loses_the_race_to_create_the_tables_tries_again(monkeypatch):
    """Two sweep workers starting together on an empty database both created Optuna's
    tables; the loser died on a duplicate key. It now tries again and finds them made."""
    from sqlalchemy.exc import IntegrityError

    from pipeline.ensemble import _optuna

    calls = []

    def racing(url: str) -> object:
        calls.append(url)
        if len(calls) < 3:
            raise IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key"))
        return "storage"

    monkeypatch.setattr(_optuna.optuna.storages, "get_storage", racing)
    monkeypatch.setattr(_optuna.time, "sleep", lambda s: None)
    assert _optuna.open_storage("postgresql://db/x") == "storage" and len(calls) == 3
    monkeypatch.setattr(_optuna, "_SCHEMA_TRIES", 2)
    calls.clear()
    with pytest.raises(IntegrityError):
        _optuna.open_storage("postgresql://db/x")
