"""What a multi-process launch of the train stage (``torchrun --nproc_per_node N``,
``accelerate launch --num_processes N``) can train, checked on every rank before anything is
written: the rank logic itself is :mod:`pipeline.engine.distributed`."""

from __future__ import annotations

from pipeline.config import ExperimentConfig
from pipeline.engine.auto_batch import AUTO_BATCH_MIN
from pipeline.engine.distributed import launched_processes
from pipeline.errors import ConfigError
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES

# keys whose parts see more than one rank's share of a batch at once, or train something
# other than one network through DDP: refused until they gather across ranks
_UNSHARDED = {
    "train.consistency": "its unlabelled batches are drawn by one process, not split "
                         "across ranks",
    "train.ensemble": "the members' diversity penalty is computed over the whole batch",
    "train.adversarial": "its extra forward and backward passes are not synchronised "
                         "across ranks",
    "train.aux_losses": "contrastive and triplet losses compare the rows of the whole batch",
    "train.full_fit": "its models train after the folds, from their records, in one process",
}


def multiprocess_problem(cfg: ExperimentConfig, processes: int | None = None) -> str | None:
    """Why ``cfg`` cannot train under a launch of ``processes`` processes (default: this
    launch's), or None when it can (always with one process)."""
    n = launched_processes() if processes is None else processes
    if n == 1:
        return None
    launch = f"a multi-process launch ({n} processes)"
    kind = cfg.model.encoders[0].kind
    if cfg.model.is_sklearn or kind in GBDT_LIBRARIES:
        return (f"'model.encoders' {kind!r} fits in one process: {launch} trains networks "
                "only; run it as one process")
    if cfg.executor.name != "local":
        return (f"'executor.name: {cfg.executor.name}' with {launch}: each Ray job is one "
                "process; use one or the other")
    train = cfg.train
    for key, why in _UNSHARDED.items():
        value = getattr(train, key.split(".")[1])
        if value:
            return f"'{key}' is not supported in {launch}: {why}; remove it or run one process"
    for i, stage in enumerate(train.resolved_stages):
        # 'auto' is a power of two from AUTO_BATCH_MIN up: divisible when the smallest is
        size = AUTO_BATCH_MIN if stage.batch_size == "auto" else stage.batch_size
        if size % n:
            key = f"{train.stage_key(i)}.batch_size"
            got = (f"auto (a power of two from {AUTO_BATCH_MIN} up: give a number)"
                   if stage.batch_size == "auto" else stage.batch_size)
            return (f"'{key}' must be divisible by the {n} processes of {launch} (it is the "
                    f"global batch, split evenly across ranks). Got {got}.")
    return None


def check_multiprocess(cfg: ExperimentConfig) -> None:
    """Raise a ConfigError (exit 2, nothing written) when :func:`multiprocess_problem`
    finds one."""
    problem = multiprocess_problem(cfg)
    if problem is not None:
        raise ConfigError(problem)
