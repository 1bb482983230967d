"""Devices and data-parallel training (PyTorch DDP via ``torchrun``).

With ``WORLD_SIZE > 1`` the process group is initialised (gloo on CPU, nccl on
CUDA) and the model is wrapped in DDP. Each rank draws its own batches (the
sampler is seeded by rank) and runs ``ceil(steps_per_epoch / N)`` steps, so an
epoch covers ``steps_per_epoch`` batches across ranks (effective batch
``N × batch_size``). Rank 0 validates, writes the model folder and broadcasts
the stop decision (:mod:`physeg.training.loop`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def world() -> tuple[int, int]:
    """``(rank, world_size)``; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: torch.device) -> torch.device:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE > 1``).

    Returns the device of this rank (``cuda:LOCAL_RANK`` on GPUs).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def wrap_model(model: torch.nn.Module, *, device: torch.device, world_size: int) -> torch.nn.Module:
    """``model`` wrapped in DDP when ``world_size > 1``, else ``model`` itself."""
    if world_size <= 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def forward_heads(net: torch.nn.Module, image: torch.Tensor, physics: torch.Tensor | None) -> dict:
    """``heads`` (logits, σ, features) through DDP: DDP only hooks ``forward``, so call it with a flag."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return net(image, physics, return_features="all")
    return net.heads(image, physics)


def mean_over_ranks(values: torch.Tensor, *, world_size: int) -> torch.Tensor:
    """Average of ``values`` over the ranks (all-reduce); unchanged on one process."""
    if world_size > 1:
        dist.all_reduce(values)
        values /= world_size
    return values


def broadcast_flag(flag: bool, *, world_size: int) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if world_size <= 1:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier(*, world_size: int) -> None:
    """Wait for every rank (no-op on one process)."""
    if world_size > 1:
        dist.barrier()
