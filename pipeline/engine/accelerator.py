"""The device and precision a run trains on, through Hugging Face Accelerate."""

from __future__ import annotations

import gc
import importlib

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs

from pipeline.engine.distributed import launched_processes, on_cpu
from pipeline.errors import PipelineError


def build_accelerator(precision: str, multiprocess: str | None = None) -> Accelerator:
    """Accelerator with the given precision ('auto': bf16/fp16 on GPU, none on CPU).

    Under a multi-process launch (``torchrun``, ``accelerate launch``) the ranks join one
    process group (DDP); ``multiprocess`` names the command when it cannot run that way,
    which is then refused on every rank.
    """
    processes = launched_processes()
    if processes > 1 and multiprocess is not None:
        raise PipelineError(
            f"'{multiprocess}' runs in one process (one CPU or GPU); a multi-process launch "
            f"({processes} processes) is supported by 'pipeline train' only")
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
    # the fold's own garbage to walk. The first torch optimizer imports torch._dynamo (~1.5 s,
    # ~150,000 objects): imported here, with the collector paused (each quarter the heap grows
    # by sets off a full walk of it: +0.5 s), it is frozen with the rest.
    collecting = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module("torch._dynamo")
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    # On a CPU machine Accelerate joins a launcher's ranks (gloo) only when told to (cpu=True
    # or ACCELERATE_USE_CPU); without it each rank would train alone, unaware of the others.
    cpu = processes > 1 and on_cpu()
    # DDP must not wait for gradients that never come: parts frozen by a stage after the
    # model was wrapped, a pretrained encoder's unused pooler. Finding them costs a walk of
    # the autograd graph per step, only in a multi-process launch.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if processes > 1 \
        else []
    # accumulation is the engine's (per stage), so Accelerate must not scale the loss too
    accelerator = Accelerator(mixed_precision=precision, cpu=cpu, kwargs_handlers=handlers)
    if accelerator.num_processes != processes:
        raise PipelineError(
            f"the launcher started {processes} processes but Accelerate joined "
            f"{accelerator.num_processes}; launch with torchrun or 'accelerate launch'")
    if accelerator.device.type == "cuda":
        # fixed input shapes (images of one size): let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    return accelerator
