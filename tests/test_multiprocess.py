"""Multi-process training (``torchrun --nproc_per_node 2`` on the CPU, gloo): the same OOF as one
process, one set of artifacts written by rank 0, a killed launch that resumes, each rank
training on its half of every global batch; and the refusals, on every rank, before any write.

The model has no BatchNorm and no dropout: those draw per rank (README, "Scale"), so only
without them is a two-process fold the one-process fold up to float rounding."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config import load_config
from pipeline.engine.distributed import local_rows
from pipeline.jobs.multiprocess import multiprocess_problem
from tests.conftest import make_competition

ROOT = Path(__file__).resolve().parents[1]

# Launched on each rank: records the rows each training step's loss saw, may stop the run as
# a kill would (KeyboardInterrupt as epoch N of fold 1 starts), then runs the command line.
LAUNCHED = '''
import json, os, sys
from pathlib import Path
from pipeline.cli import main
from pipeline.engine.trainer import Trainer

record, kill_epoch = Path(sys.argv[1]), int(sys.argv[2])
rows = []
loss_of, train_epoch = Trainer._training_loss, Trainer.train_epoch

def counted(self, batch, loss_fn):
    rows.append(len(batch["num"]))
    return loss_of(self, batch, loss_fn)

def killed(self, *args, **kwargs):
    if kill_epoch and "fold1" in self.desc and self.epoch + 1 == kill_epoch:
        raise KeyboardInterrupt("killed")
    return train_epoch(self, *args, **kwargs)

Trainer._training_loss, Trainer.train_epoch = counted, killed
if kill_epoch < 0:  # probe the rank helpers first (their results: helpers<rank>.json)
    exec((record / "helpers.py").read_text(), {})
code = main(sys.argv[3:])
(record / f"rank{os.environ['RANK']}.json").write_text(json.dumps(rows))
sys.exit(code)
'''


# Run before the command line by the refused launch: the rank helpers on two real ranks.
HELPERS = '''
import contextlib, json, os, sys
import torch
from pipeline.engine import distributed as d

rank, out = int(os.environ["RANK"]), {}
norm = torch.nn.BatchNorm1d(2)
norm.running_mean.fill_(rank + 1.0)  # each rank's last step moved its own statistics
d.share_buffers(norm)
out["running_mean"] = norm.running_mean.tolist()
outputs = [torch.full((3, 2), 5.0)] if rank == 1 else []  # rank 0 had no batch to predict
rows, loss = d.gather_outputs(outputs, torch.tensor(float(rank + 1)))
out["rows"], out["loss"] = rows.tolist(), loss
try:
    d.agree(lambda: 1 / 0)
except ZeroDivisionError:
    out["error"] = "ZeroDivisionError"
out["agreed"] = d.agree(lambda: rank)
with d.held_by_main(lambda: contextlib.nullcontext(f"rank {rank}")) as held:
    out["held"] = held
out["own"] = list(d.own_batches([10, 11, 12]))
open(os.path.join(sys.argv[1], f"helpers{rank}.json"), "w").write(json.dumps(out))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _competition(root: Path, **train: Any) -> Path:
    # 98 rows, 2 folds: 49 training rows a fold, so a training epoch leaves its lone last
    # row out, as one process does; the 20 test rows are one prediction batch (one rank none)
    cfg = make_competition(root, "tabular", "binary", n_train=98, n_test=20)
    cfg["model"] = {"encoders": [{"name": "mlp", "params": {"hidden": []}}],
                    "head": {"dropout": 0.0, "hidden": 16}}
    cfg["train"].update({"epochs": 3, "mixed_precision": "no", "resume_every": 0,
                         "precise_bn": 0, **train})
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "PIPELINE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key in ("ACCELERATE_USE_CPU", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)  # the launcher's, not the test runner's
    # CPU ranks (gloo) on a GPU machine too: two NCCL ranks cannot share one GPU
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _launch(root: Path, args: list[str], kill_epoch: int = 0,
            ) -> subprocess.CompletedProcess[str]:
    script = root / "launched.py"
    script.write_text(LAUNCHED)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), str(script), str(root), str(kill_epoch), *args],
        capture_output=True, text=True, timeout=150, env=_env(), cwd=root, check=False)


def _files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def _numbers(path: Path) -> np.ndarray:
    return pd.read_parquet(path).select_dtypes("number").to_numpy()


@pytest.mark.timeout(240)
def test_two_processes_train_the_one_process_oof_and_resume(tmp_path: Path, one_thread,
                                                            monkeypatch) -> None:
    from pipeline import train

    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # the reference on the ranks' device

    # two stages, the first with the encoder frozen: DDP then sees parameters that get no
    # gradient (find_unused_parameters), and the kill lands in the second stage; gradients
    # accumulate over 2 batches (all-reduced at a window's end only)
    config = _competition(tmp_path, epochs=1, freeze=["encoders.0"], grad_accum_steps=2,
                          stages=[{"epochs": 2, "freeze": []}])
    single = load_config(config, ["name=single"])
    train.run(single)

    killed = _launch(tmp_path, ["train", str(config), "--set", "name=multi"], kill_epoch=2)
    assert killed.returncode != 0, killed.stderr[-3000:]
    multi_dir = tmp_path / "runs" / "multi"
    # epoch 1 of fold 1 kept (the kill waits for the writer thread's resume point)
    assert (multi_dir / "seed0" / "fold1" / "last.pt").is_file(), killed.stderr[-3000:]
    assert not (multi_dir / "oof.parquet").exists()

    resumed = _launch(tmp_path, ["train", str(config), "--set", "name=multi"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (multi_dir / "log.txt").read_text()
    assert "seed0/fold0 (of 2): complete, skipped" in log
    assert "seed0/fold1 (of 2): resuming after epoch 1" in log
    assert log.count("resuming after epoch 1") == 1  # rank 0 alone logs to the file
    # each rank trained on its half of every global batch of 16 (49 rows: 16, 16, 16, and
    # the lone 49th row left out of a training epoch, as one process leaves it out: a batch
    # of one row stops BatchNorm)
    steps = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert steps[0] == [8, 8, 8] * 2  # the resumed fold's epochs 2 and 3
    assert steps[1] == [8, 8, 8] * 2

    single_dir = tmp_path / "runs" / "single"
    for name in ("oof.parquet", "test.parquet", "seed0/fold1/oof_last_epoch.parquet",
                 "seed0/fold1/tta_test.parquet"):
        np.testing.assert_allclose(_numbers(multi_dir / name), _numbers(single_dir / name),
                                   rtol=0, atol=1e-5, err_msg=name)
    one = pd.read_parquet(single_dir / "oof.parquet")
    two = pd.read_parquet(multi_dir / "oof.parquet")
    assert one["id"].tolist() == two["id"].tolist()
    # one set of artifacts: the files one process writes, no more (no second writer's temp
    # or duplicate files)
    assert _files(multi_dir) == sorted([*_files(single_dir), "log.txt"])  # (log: the CLI's)
    history = json.loads((multi_dir / "seed0" / "fold1" / "metrics.json").read_text())
    assert [e["batch_size"] for e in history["epochs"]] == [16, 16, 16]  # the global batch


@pytest.mark.timeout(120)
def test_a_refused_key_stops_every_rank_before_anything_is_written(tmp_path: Path) -> None:
    config = _competition(tmp_path)
    (tmp_path / "helpers.py").write_text(HELPERS)  # the same launch checks the rank helpers
    result = _launch(tmp_path, ["train", str(config), "--set", "train.batch_size=15"],
                     kill_epoch=-1)
    assert result.returncode != 0
    assert result.stderr.count("error: 'train.batch_size' must be divisible by the 2 "
                               "processes") == 2, result.stderr[-3000:]
    # rank 0's command line opened the run's log before the stage started; the refusal
    # took it away again (as for one process)
    assert not (tmp_path / "runs" / "tabular-binary").exists()
    assert not (tmp_path / "folds").exists()
    # rank 0's buffers, gathered rows (one rank with none), errors and decisions reach every
    # rank; a lock is entered by rank 0 alone; prediction batches split in contiguous blocks
    seen = [json.loads((tmp_path / f"helpers{r}.json").read_text()) for r in (0, 1)]
    for out in seen:
        assert out["running_mean"] == [1.0, 1.0]
        assert out["rows"] == [[5.0, 5.0]] * 3 and out["loss"] == 3.0
        assert out["error"] == "ZeroDivisionError" and out["agreed"] == 0
        assert out["held"] == "rank 0"
    assert [out["own"] for out in seen] == [[10], [11, 12]]


def _config(tmp_path: Path, **train: Any) -> Any:
    return load_config(_competition(tmp_path, **train), [])


@pytest.mark.parametrize(("train", "key"), [
    ({"adversarial": {"method": "awp"}}, "'train.adversarial'"),
    ({"ensemble": {"members": 2}}, "'train.ensemble'"),
    ({"aux_losses": [{"name": "supcon"}]}, "'train.aux_losses'"),
    ({"batch_size": 15}, "'train.batch_size' must be divisible by the 2 processes"),
    ({"stages": [{"epochs": 1, "batch_size": 9}]}, "'train.stages.0.batch_size'"),
])
def test_what_a_multi_process_launch_refuses(tmp_path: Path, train: dict[str, Any],
                                             key: str) -> None:
    cfg = _config(tmp_path, **train)
    assert key in (multiprocess_problem(cfg, processes=2) or "")
    assert multiprocess_problem(cfg, processes=1) is None


def test_an_auto_batch_splits_across_a_power_of_two_of_processes(tmp_path: Path) -> None:
    """'auto' is a power of two from 32 up, whatever the rows: 2, 4 ... 32 ranks split it,
    3 cannot, and the refusal says to give a number."""
    cfg = _config(tmp_path, batch_size="auto", stages=[{"epochs": 1, "grad_accum_steps": 2}])
    assert multiprocess_problem(cfg, processes=2) is None
    assert multiprocess_problem(cfg, processes=32) is None
    assert multiprocess_problem(cfg, processes=3) == (
        "'train.batch_size' must be divisible by the 3 processes of a multi-process launch "
        "(3 processes) (it is the global batch, split evenly across ranks). Got auto (a power "
        "of two from 32 up: give a number).")


def test_whole_models_and_ray_are_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert multiprocess_problem(cfg, processes=2) is None
    ray = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"name": "ray"})})
    assert "'executor.name: ray'" in (multiprocess_problem(ray, processes=2) or "")
    gbdt = load_config(tmp_path / "exp.yaml",
                       ["model.encoders=[{name: lightgbm, params: {n_estimators: 5}}]"])
    assert "'model.encoders' 'lightgbm'" in (multiprocess_problem(gbdt, processes=2) or "")


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("rows", "ranks"), [(16, 2), (3, 2), (1, 2), (7, 3), (12, 4)])
def test_the_ranks_scaled_shares_give_the_whole_batch_gradient(rows: int, ranks: int,
                                                                weighted: bool) -> None:
    """DDP averages the ranks' gradients: with each share's loss scaled by local_rows'
    factor, that mean is the gradient of the one-process batch (uneven and empty shares
    included)."""
    gen = torch.Generator().manual_seed(rows * 10 + ranks)
    batch = {"x": torch.randn(rows, 3, generator=gen), "y": torch.randn(rows, generator=gen)}
    if weighted:
        batch["weight"] = torch.rand(rows, generator=gen) + 0.1
    w = torch.randn(3, generator=gen)

    def grad(b: dict[str, torch.Tensor], factor: Any) -> torch.Tensor:
        p = w.clone().requires_grad_(True)
        per_row = (b["x"] @ p - b["y"]) ** 2
        loss = (per_row * b["weight"]).sum() / b["weight"].sum() if weighted else per_row.mean()
        (loss * (1.0 if factor is None else factor)).backward()
        assert p.grad is not None
        return p.grad

    shares = [local_rows(batch, ranks, r) for r in range(ranks)]
    mean = torch.stack([grad(b, f) for b, f in shares]).mean(dim=0)
    torch.testing.assert_close(mean, grad(batch, None), rtol=1e-5, atol=1e-6)
    taken = sum(len(b["x"]) for b, f in shares if f != 0.0)
    assert taken == rows  # every row once (stand-in rows count with weight 0)
    assert all(len(b["x"]) >= 2 for b, f in shares if f == 0.0)  # BatchNorm trains on them
    assert all(len(b["x"]) >= 2 for b, f in shares) or rows == 1  # (one row: as one process)
    assert local_rows(batch, 1, 0) == (batch, None)
