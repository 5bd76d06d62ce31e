"""Where (experiment, seed, fold) jobs run: in this process one after another (``local``, the
default), or as tasks on a Ray cluster (``ray``), each with the CPUs and the GPU (or the
fraction of one) it asks for.

An executor only runs callables and hands back their results; what a job does (train one
fold into its own folder) is the train stage's business, so every executor writes the same
artifacts. A Ray job runs with the driver's working directory: the run folders, the data and
the folds must sit on a path every worker sees at the same place (a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from pipeline.errors import ConfigError, PipelineError
from pipeline.models.gbdt_libraries import JOB_THREADS_ENV
from pipeline.registry import Registry
from pipeline.schema import Section

log = logging.getLogger(__name__)
HEAD_TIMEOUT_S = 5.0  # seconds to wait for a Ray head's port before refusing the address


class ExecutorConfig(Section):
    """``executor:``: which executor runs the jobs, and what each job asks of it.

    ``address`` (Ray): None starts a Ray instance on this machine; ``auto`` joins the one
    already running here (``ray start --head``); ``<host>:6379`` or ``ray://<host>:10001``
    joins a remote head. ``gpus``: per job; None gives a network one GPU when the cluster
    has GPUs (none otherwise, and scikit-learn/GBDT jobs none); 0.25 lets four small folds
    share one GPU. ``max_retries``: how often Ray reruns a job whose worker died; the rerun
    resumes from the fold's last checkpoint.
    """

    name: str = "local"
    address: str | None = None
    cpus: float = Field(default=1.0, gt=0)
    gpus: float | None = Field(default=None, ge=0)
    max_retries: int = Field(default=1, ge=0)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in EXECUTORS:
            raise ValueError(f"must be one of {EXECUTORS.list()}. Got {name!r}")
        return name


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn()`` with the resources it needs.

    ``fn`` must pickle for a remote executor (a module-level function, or a
    :func:`functools.partial` of one, over picklable arguments). ``gpus`` None: one GPU when
    the cluster has any, else none.
    """

    key: str
    fn: Callable[[], Any]
    cpus: float = 1.0
    gpus: float | None = 0.0
    tag: tuple[Any, ...] = ()  # what the submitter needs to know the job by, e.g. (seed, fold)


class JobsLost(PipelineError):
    """Jobs whose worker died (more often than the retries allow); a rerun resumes them."""


class Executor(ABC):
    """Runs jobs; results come back as they finish."""

    #: True when jobs run in this process, so they may share objects built here
    #: (an Accelerator, a tokenizer) instead of pickling a recipe for building them
    in_process: bool = False

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Generator[tuple[Job, Any], None, None]:
        """Yield ``(job, result)`` as each finishes. Closing the iterator early, or a job
        that raises (its error is raised here as itself), cancels the jobs still pending.
        Jobs whose worker died do not stop the others: they are reported together as
        :class:`JobsLost` once the rest have finished."""


EXECUTORS: Registry[Callable[[ExecutorConfig], Executor]] = Registry("executor")


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """Every job in this process, one after another, in the order given."""

    in_process = True

    def __init__(self, cfg: ExecutorConfig | None = None) -> None:
        self.cfg = cfg or ExecutorConfig()

    def run(self, jobs: Sequence[Job]) -> Generator[tuple[Job, Any], None, None]:
        for job in jobs:
            yield job, job.fn()


def _call(fn: Callable[[], Any], cwd: str, threads: int) -> Any:
    """A job's body on a Ray worker: the driver's working directory (relative paths in the
    config mean the same on every worker), as many torch threads as CPUs asked for, and the
    package's INFO log on the worker's stderr (Ray shows it in the driver's terminal)."""
    import torch

    if not os.path.isdir(cwd):
        raise PipelineError(
            f"the driver's working directory {cwd} does not exist on this worker: run "
            "folders and data must be on a filesystem every Ray worker sees at the same path")
    os.chdir(cwd)
    torch.set_num_threads(threads)
    os.environ[JOB_THREADS_ENV] = str(threads)  # and a GBDT member's threads
    if not logging.getLogger().handlers:  # a fresh worker: its fold logs reach the driver
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            datefmt="%H:%M:%S")
        for noisy in ("optuna", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return fn()


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Each job a Ray task with ``num_cpus`` / ``num_gpus`` from the job."""

    def __init__(self, cfg: ExecutorConfig | None = None) -> None:
        try:
            import ray
        except ImportError:  # an optional engine: say how to get it
            raise ConfigError("'executor.name' ray needs the ray package (pip install ray). "
                              "Got it missing.") from None
        self.cfg = cfg or ExecutorConfig(name="ray")
        self.ray = ray
        _check_head(self.cfg.address)  # also when this process already joined a cluster
        if not ray.is_initialized():
            # no address: a new instance here ("local"), not whichever cluster ray.init()
            # would find on its own; on a local instance the workers import the package from
            # the driver's working directory
            try:
                ray.init(address=self.cfg.address or "local", include_dashboard=False,
                         log_to_driver=True)
            except ConnectionError as err:  # 'auto' with no cluster running here
                raise ConfigError(f"'executor.address' {self.cfg.address}: "
                                  f"{str(err).splitlines()[0]}") from None
        self._remote = ray.remote(_call)

    def _gpus(self, job: Job, cluster_gpus: float) -> float:
        if job.gpus is not None:
            return job.gpus
        return 1.0 if cluster_gpus > 0 else 0.0

    def run(self, jobs: Sequence[Job]) -> Generator[tuple[Job, Any], None, None]:
        from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

        cwd = os.getcwd()
        cluster_gpus = self.ray.cluster_resources().get("GPU", 0)
        pending = {}
        for job in jobs:
            ref = self._remote.options(
                num_cpus=job.cpus, num_gpus=self._gpus(job, cluster_gpus),
                max_retries=self.cfg.max_retries, name=job.key,
            ).remote(job.fn, cwd, max(1, int(job.cpus)))
            pending[ref] = job
        lost: list[str] = []
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    result = self.ray.get(done[0])
                except (WorkerCrashedError, NodeDiedError, OutOfMemoryError) as err:
                    # the machine failed, not the job: the others go on
                    log.warning("%s: its Ray worker died (%s)", job.key, type(err).__name__)
                    lost.append(job.key)
                    continue
                except RayTaskError as err:  # the job's own exception, raised as itself
                    if isinstance(err.cause, PipelineError):  # a user error: its one line
                        raise err.cause from None
                    raise err.as_instanceof_cause() from None  # a bug: the worker's traceback
                yield job, result
        finally:
            # stopped early (an error, or the caller closed the iterator): cancel the rest;
            # a fold interrupted mid-way resumes from its last checkpoint on the next run
            for ref in pending:
                self.ray.cancel(ref)
        if lost:
            raise JobsLost(
                f"{len(lost)} job(s) lost when their Ray worker died ({', '.join(lost)}); "
                "the other jobs' results are kept: run the same command again to resume them")


def build_executor(cfg: ExecutorConfig) -> Executor:
    """The executor ``cfg`` names."""
    return EXECUTORS.get(cfg.name)(cfg)


def _check_head(address: str | None) -> None:
    """Refuse a head address nothing answers at within seconds: ray.init would retry for
    minutes before saying so."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"'executor.address' must be auto, <host>:<port> or "
                          f"ray://<host>:<port>. Got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=HEAD_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(f"'executor.address' {address}: no Ray head answers there "
                          f"({err}); start one with `ray start --head` or fix the address"
                          ) from None


def executor_overrides(name: str | None, address: str | None) -> list[str]:
    """``--set`` overrides from the ``--executor`` / ``--address`` flags of a command."""
    overrides = [f"executor.name={name}"] if name else []
    if address:
        overrides.append(f"executor.address={address}")
    return overrides
