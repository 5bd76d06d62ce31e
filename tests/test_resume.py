"""A run killed with SIGKILL at any moment, then rerun, ends with the uninterrupted OOF."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import train
from pipeline.config import build_config

# Files whose appearance marks a moment to kill at: mid-fold (after an epoch's resume point),
# between training and prediction, between folds, and before the run is gathered.
KILL_AFTER = [
    "seed0/fold0/last.pt",
    "seed0/fold0/oof.parquet",
    "seed0/fold1/last.pt",
    "seed0/fold1/metrics.json",
]


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PIPELINE_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], path: Path, timeout: float = 120) -> str:
    """SIGKILL the process as soon as ``path`` exists; returns what it logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() or proc.poll() is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stderr is not None
            return proc.stderr.read().decode()
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"{path} did not appear within {timeout}s")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_oof(competition_factory, tmp_path):
    data = competition_factory("tabular", "multiclass", n_train=200)
    data["train"].update(epochs=3, batch_size=8)
    data["model"]["encoders"][0]["params"] = {"hidden": [64, 32], "dropout": 0.3}
    reference = build_config({**data, "output_dir": str(tmp_path / "reference")})
    train.run(reference)
    expected = pd.read_parquet(reference.run_dir / "oof.parquet")

    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "killed")}))
    run_dir = tmp_path / "killed" / data["name"]
    logs = [_kill_when(_start(config), run_dir / marker) for marker in KILL_AFTER]
    assert sum("resuming after epoch" in log for log in logs) >= 2, logs
    assert not (run_dir / "oof.parquet").exists()
    proc = _start(config)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    resumed = pd.read_parquet(run_dir / "oof.parquet")
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)
