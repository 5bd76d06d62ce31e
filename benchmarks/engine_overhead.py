"""Throughput of our training engine against a hand-written PyTorch loop.

Both train the same timm model on the same in-memory batches, on the same device (the GPU
when there is one), with the same optimizer, schedule, loss and thread count; each round
runs both, in alternating order, so that machine noise and warm-up hit both alike. Prints
images/s of each and the ratio (target: >= 0.95).

    python benchmarks/engine_overhead.py [--model resnet18] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("PIPELINE_PROGRESS", "1")

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, TensorDataset

from pipeline.engine import Trainer
from pipeline.engine.optim import Schedule


class DictLoader:
    """Yields the batches of a DataLoader as dicts, as the pipeline's datasets do."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self):
        for x, y in self.loader:
            yield {"image": x, "target": y}

    def __len__(self) -> int:
        return len(self.loader)


class Wrapped(torch.nn.Module):
    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.body(batch["image"])


def make(model_name: str, seed: int, updates: int):
    torch.manual_seed(seed)
    model = timm.create_model(model_name, num_classes=10)
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.01)
    sched = CosineLRScheduler(opt, t_initial=updates, t_in_epochs=False)
    return model, opt, sched


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(model, opt, sched, loader: DataLoader, device: torch.device) -> float:
    """The loop a competitor writes: on the engine's device, the loss summed there."""
    model.to(device).train()
    _sync(device)
    start, total = time.perf_counter(), torch.zeros((), device=device)
    for updates, (x, y) in enumerate(loader, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step_update(updates)
        total += loss.detach()
    total.item()
    return time.perf_counter() - start


def engine_loop(model, opt, sched, loader: DataLoader, accelerator: Accelerator) -> float:
    trainer = Trainer(Wrapped(model), accelerator, desc="engine")
    optimizer = accelerator.prepare_optimizer(opt)
    _sync(accelerator.device)
    start = time.perf_counter()
    trainer.train_epoch(DictLoader(loader), optimizer, Schedule(sched),  # type: ignore[arg-type]
                        lambda out, b: F.cross_entropy(out, b["target"]))
    return time.perf_counter() - start  # train_epoch reads its mean loss: synchronised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    updates = len(loader)
    hand_times, engine_times = [], []
    for r in range(args.rounds + 1):  # round 0 warms up both; the order alternates
        timings = {}
        for which in (("hand", "engine") if r % 2 else ("engine", "hand")):
            model, opt, sched = make(args.model, r, updates)
            timings[which] = (hand_loop(model, opt, sched, loader, accelerator.device)
                              if which == "hand"
                              else engine_loop(model, opt, sched, loader, accelerator))
        if r:
            hand_times.append(timings["hand"])
            engine_times.append(timings["engine"])
    hand = args.images / statistics.median(hand_times)
    engine = args.images / statistics.median(engine_times)
    print(f"model {args.model} @ {args.image_size}px, batch {args.batch_size}, "
          f"{args.images} images, {args.threads} threads, {args.rounds} rounds (median)")
    print(f"hand-written loop: {hand:8.1f} img/s")
    print(f"pipeline engine:   {engine:8.1f} img/s")
    print(f"ratio engine/hand: {engine / hand:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
