"""Train independent models side by side: one worker process per core, one thread each.

A small U-Net gives a second thread little to share, and its threads wait on
each other when another process holds a core: one 32³ step of the demo network
took 0.64 s on one thread and 8.1 s on two threads on this project's 2-core
machine while other jobs loaded it (not the same moment, so an illustration,
not a ratio). Two models trained at once, one thread each, keep both cores busy
without either model waiting for the other. The models of a profile are independent,
except that an epistemic variant starts from its trained deterministic parent
(:attr:`physeg.models.registry.ModelSpec.init_from`), so a job is submitted
only once its parent has finished.

Every job is trained by :func:`physeg.training.orchestrate.train_one`, seeded
by its own model seed (:mod:`physeg.training.rng`), so which worker runs it
and in which order does not change its weights. Results can differ in the last
bits from a run of the same model on more threads (the order of floating-point
sums in the convolutions), as they do between any two thread counts.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from physeg.cores import available_cores, limit_torch_threads
from physeg.models.registry import get_model_spec
from physeg.profiles import Profile

__all__ = ["TrainingJob", "available_cores", "resolve_workers", "run_jobs"]


@dataclass(frozen=True)
class TrainingJob:
    """One model to train: ablation or variant name, sequence and model seed (``None``: the profile's)."""

    model: str
    sequence: str
    seed: int | None = None
    #: Name of an artefact augmentation arm (:data:`physeg.training.augmentation.ARMS`), ``None``: the ablation as is.
    augmentation: str | None = None

    def parent(self) -> "TrainingJob | None":
        """The job whose ``best.pt`` this one starts from, if any."""
        init_from = get_model_spec(self.model).init_from
        return None if init_from is None else TrainingJob(init_from, self.sequence, self.seed)


def resolve_workers(workers: int | None, *, device: str = "auto") -> int:
    """Worker processes: ``None`` = one per available core on the CPU, 1 on a GPU.

    An explicit count is honoured on a GPU too: the demo-size network leaves a
    GPU mostly idle between the small kernels of one step (the step is bound by
    its launches on the CPU side), so several processes sharing one GPU train
    more models per minute (``scripts/gpu_reference_long.sh``).

    Raises
    ------
    ValueError
        If ``workers`` is smaller than 1.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if device == "cuda":
        return workers or 1
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return workers or 1
    return workers or available_cores()


def run_jobs(jobs: list[TrainingJob], *, train: Callable[[TrainingJob], dict[str, Any]], workers: int,
             done: Callable[[TrainingJob], bool]) -> dict[TrainingJob, dict[str, Any]]:
    """Run ``train(job)`` for every job, parents before children, on ``workers`` processes.

    ``train`` must be a picklable module-level callable (a ``functools.partial`` of
    one is fine); ``done(job)`` says whether a job's model is already finished
    (a finished parent counts as available). With ``workers == 1`` everything runs
    in this process, in the order given. Returns ``{job: train(job)}`` for the
    jobs trained here. The first failing job's exception is raised once the
    jobs already running have ended; jobs not yet started are not started.
    """
    results: dict[TrainingJob, dict[str, Any]] = {}
    if workers == 1:
        for job in jobs:
            results[job] = train(job)
        return results
    pending = list(jobs)
    finished: set[TrainingJob] = set()
    running: dict[Future, TrainingJob] = {}
    threads = max(1, available_cores() // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=limit_torch_threads,
                             initargs=(threads,)) as pool:
        while pending or running:
            for job in _ready(pending, finished, done=done, slots=workers - len(running)):
                pending.remove(job)
                running[pool.submit(train, job)] = job
            if not running:
                raise RuntimeError(f"cannot start {pending[0]}: its parent model is neither listed nor trained")
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                job = running.pop(future)
                if future.exception() is not None:
                    pending.clear()
                    wait(running)
                    raise future.exception()
                results[job] = future.result()
                finished.add(job)
    return results


def _ready(pending: list[TrainingJob], finished: set[TrainingJob], *, done: Callable[[TrainingJob], bool],
           slots: int) -> list[TrainingJob]:
    """Up to ``slots`` pending jobs whose parent (if any) was trained here or before."""
    ready = [job for job in pending
             if job.parent() is None or job.parent() in finished or done(job.parent())]
    return ready[:max(0, slots)]

