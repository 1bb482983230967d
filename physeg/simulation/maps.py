"""Input maps of the simulation layer: ``(3, X, Y, Z)`` tensors ``[PD, T1, T2*]`` or ``tio.Subject`` s (§2.3)."""

from __future__ import annotations

import torch

__all__ = ["MAP_CHANNELS", "maps_from_subject", "check_maps"]

#: Channel order of a subject's map tensor; PD a.u., T1 and T2* in seconds.
MAP_CHANNELS: tuple[str, ...] = ("PD", "T1", "T2star")


def maps_from_subject(subject, *, maps_key: str = "maps") -> torch.Tensor:
    """``(3, X, Y, Z)`` map tensor from a ``tio.Subject``.

    Either one 3-channel image ``subject[maps_key]`` in :data:`MAP_CHANNELS`
    order, or three 1-channel images named ``"PD"``, ``"T1"``, ``"T2star"``.
    """
    if maps_key in subject:
        return subject[maps_key].data
    if all(name in subject for name in MAP_CHANNELS):
        chans = [subject[name].data for name in MAP_CHANNELS]
        for name, c in zip(MAP_CHANNELS, chans):
            if c.shape[0] != 1:
                raise ValueError(f"subject image {name!r} must have 1 channel; got {c.shape[0]}")
        return torch.cat(chans, dim=0)
    raise ValueError(
        f"subject has neither a 3-channel image {maps_key!r} nor the images {MAP_CHANNELS}; "
        f"it has {list(subject.keys())}"
    )


def check_maps(maps) -> torch.Tensor:
    """Return the ``(3, X, Y, Z)`` floating map tensor of ``maps`` (tensor or ``tio.Subject``).

    Raises ValueError for a wrong number of channels or dimensions.
    Integer tensors are converted to the default float dtype.
    """
    if isinstance(maps, dict):  # tio.Subject is a dict
        maps = maps_from_subject(maps)
    maps = torch.as_tensor(maps)
    if maps.ndim != 4 or maps.shape[0] != len(MAP_CHANNELS):
        raise ValueError(
            f"maps must have shape (3, X, Y, Z) with channels {MAP_CHANNELS} (PD a.u., T1 s, T2* s); "
            f"got shape {tuple(maps.shape)}"
        )
    if not maps.is_floating_point():
        maps = maps.to(torch.get_default_dtype())
    return maps


def _check_mask(mask, *, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=device)
    if tuple(mask.shape) != spatial:
        raise ValueError(f"mask must have the spatial shape {spatial} of the maps; got {tuple(mask.shape)}")
    return mask.bool()
