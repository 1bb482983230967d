"""Cores and threads of worker processes, for every stage that runs processes side by side.

Training (:mod:`physeg.training.parallel`) and the cohort build
(:func:`physeg.data.cohort.build_cohort`) both spawn workers and give each
``available_cores() // workers`` torch threads, so that the processes together
never ask for more cores than this process may use.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def limit_torch_threads(threads: int) -> None:
    """Initializer of a worker process: torch's intra-op threads set to ``threads``."""
    import torch

    torch.set_num_threads(threads)
