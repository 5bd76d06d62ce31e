"""A run retrained in place (``--overwrite``) takes its old submission with it: a
``submissions/<name>.csv`` holding exactly the replaced run's predictions is removed (as a
replaced blend's is), so neither ``pipeline lb`` nor the competitor takes it for the new
run's; a file of other content under that name is left alone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline import submit, train
from pipeline.config import build_config
from pipeline.errors import ConfigError


def _config(data: dict[str, Any], C: float) -> Any:
    out = copy.deepcopy(data)
    out["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression",
                                  "params": {"C": C}}]}
    return build_config(out)


@pytest.fixture
def trained(competition_factory) -> tuple[dict[str, Any], Path]:
    data = competition_factory("tabular", "binary")
    cfg = _config(data, 1.0)
    train.run(cfg)
    return data, submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir)


def test_overwrite_removes_the_replaced_runs_submission(trained) -> None:
    data, path = trained
    old = path.read_text()
    other = _config(data, 0.01)
    with pytest.raises(ConfigError):  # refused without --overwrite: the file stays
        train.run(other)
    assert path.read_text() == old
    train.run(other, overwrite=True)
    assert not path.exists()  # it held the old run's predictions, not the new run's
    assert submit.run(other.run_dir, other.name, other.submissions_dir).read_text() != old


def test_overwrite_leaves_a_file_of_other_content(trained) -> None:
    data, path = trained
    path.write_text(path.read_text().replace("id,", "id ,", 1))  # edited by hand
    edited = path.read_text()
    train.run(_config(data, 0.01), overwrite=True)
    assert path.read_text() == edited


def test_overwrite_refuses_a_run_another_process_is_training(trained) -> None:
    """--overwrite removed the folder under a process training it: its lock file went with
    it, the new command locked a fresh one and trained the fold alongside, and the old
    config's fold landed in the new run (its weights then resumed as the new config's)."""
    from filelock import FileLock

    from pipeline.fold_lock import FoldBusy

    data, path = trained
    cfg = _config(data, 1.0)
    lock_path = cfg.run_dir / "seed0" / "fold1" / ".lock"
    (lock_path.parent / ".lock.owner").write_text("pid 4242 on host h since 10:00:00\n")
    busy = pytest.raises(FoldBusy, match=r"seed0/fold1: pid 4242 .* stop it before")
    with FileLock(lock_path, timeout=0), busy:  # as the other process holds it
        train.run(_config(data, 0.01), overwrite=True)
    assert (cfg.run_dir / "seed0" / "fold0" / "metrics.json").is_file()  # nothing replaced
    assert path.is_file()
    train.run(_config(data, 0.01), overwrite=True)  # once it is done
