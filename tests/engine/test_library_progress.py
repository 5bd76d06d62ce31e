"""Transformers' own progress bars follow the pipeline's (pipeline.engine.plan)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.test_pretrain_text_image import _tiny_bert


def test_a_redirected_run_prints_no_loading_bars(competition_factory, tmp_path: Path) -> None:
    """transformers printed its 'Loading weights: 100%|####| 103/103' bar for every fold of
    an 'hf:' run, redirected log and '--quiet' alike, where the pipeline's own bars are off."""
    cfg = competition_factory("text", "binary", n_train=16, n_test=4)
    cfg["model"]["encoders"] = [{"name": f"hf:{_tiny_bert(tmp_path / 'bert')}", "lr": 1e-4}]
    cfg["train"]["epochs"] = 1
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PIPELINE_PROGRESS": "1"}  # off a terminal: no bars all the same
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "seed0/fold1 (of 2)" in done.stderr  # both folds built their encoder
    assert "Loading weights" not in done.stderr + done.stdout
