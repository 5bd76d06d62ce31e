"""The device and precision a run trains on, through Hugging Face Accelerate."""

from __future__ import annotations

import gc
import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from pipeline.errors import PipelineError


def build_accelerator(precision: str) -> Accelerator:
    """Accelerator with the given precision ('auto': bf16/fp16 on GPU, none on CPU)."""
    if precision == "auto":
        precision = "no"
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # One process may train several configs (the demo, a benchmark, a notebook): each gets
    # its own precision and device rather than an error for differing from the first.
    AcceleratorState._reset_state(reset_partial_state=True)
    # Accelerate's free_memory() runs gc.collect(), which walks every object alive (~0.4 s
    # per call once transformers is imported, twice per fold). Objects alive now (modules,
    # configs, the data) outlive the run anyway: freezing them leaves each collection only
    # the fold's own garbage to walk.
    gc.freeze()
    # accumulation is the engine's (per stage), so Accelerate must not scale the loss too
    accelerator = Accelerator(mixed_precision=precision)
    if accelerator.device.type == "cuda":
        # fixed input shapes (images of one size): let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    # A launcher's WORLD_SIZE counts too: on a CPU machine Accelerate joins the ranks only
    # with ACCELERATE_USE_CPU set, so `torchrun --nproc_per_node 2` would otherwise start
    # two unaware single-process runs writing one run folder.
    processes = max(accelerator.num_processes, int(os.environ.get("WORLD_SIZE") or 1))
    if processes > 1:
        raise PipelineError(
            "the stages run in one process (one CPU or GPU); a multi-process launch "
            f"({processes} processes) is not supported"
        )
    return accelerator
