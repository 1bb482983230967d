"""The one predictor: a trained network applied to whole volumes (paper §2.1, §2.4).

Sliding-window inference over the training patch size (MONAI's
:func:`~monai.inferers.sliding_window_inference`, Gaussian-weighted blending).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference

from physeg.profiles import Profile


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def infer_volume(
    model: torch.nn.Module,
    image: torch.Tensor,
    physics: torch.Tensor | None = None,
    *,
    profile: Profile | None = None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    sw_batch_size: int = 8,
    return_sigma: bool = False,
    mode: str = "gaussian",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Whole-volume logits by sliding-window inference (MONAI), one image at a time.

    Parameters
    ----------
    model
        :class:`~physeg.models.network.PhysicsUNet` (or its DDP wrapper). Train/eval
        mode is left as is: call ``model.eval()`` or use
        :func:`physeg.models.network.mc_dropout` first.
    image
        (1, X, Y, Z) or (B, 1, X, Y, Z); any device (windows run on the model's device).
    physics
        Acquisition features (F,) or (B, F); ``None`` for physics-free models.
    profile
        Supplies ``roi_size = patch_size`` and ``overlap = sw_overlap`` unless given.
    return_sigma
        Also return the aleatoric σ map (aleatoric models).

    Returns
    -------
    Logits (B, C, X, Y, Z) float32 on the model's device (and σ, same shape).
    """
    net = model.module if hasattr(model, "module") else model
    if roi_size is None:
        roi_size = profile.patch_size
    if overlap is None:
        overlap = profile.sw_overlap if profile is not None else 0.25
    if isinstance(roi_size, int):
        roi_size = (roi_size,) * 3
    device = next(net.parameters()).device
    squeeze = image.ndim == 4
    if squeeze:
        image = image.unsqueeze(0)
    if physics is not None:
        physics = torch.as_tensor(physics, dtype=torch.float32)
        if physics.ndim == 1:
            physics = physics.unsqueeze(0)
        if physics.shape[0] == 1 and image.shape[0] > 1:
            physics = physics.expand(image.shape[0], -1)
    logits, sigmas = [], []
    for b in range(image.shape[0]):
        phys = physics[b:b + 1].to(device) if physics is not None else None

        def predictor(window: torch.Tensor, phys=phys):
            with autocast_context(device):
                out = net.heads(window, phys)
            if return_sigma:
                return out["logits"].float(), out["sigma"].float()
            return out["logits"].float()

        res = sliding_window_inference(
            image[b:b + 1].to(device, torch.float32), roi_size=roi_size, sw_batch_size=sw_batch_size,
            predictor=predictor, overlap=overlap, mode=mode,
        )
        if return_sigma:
            logits.append(res[0])
            sigmas.append(res[1])
        else:
            logits.append(res)
    out = torch.cat(logits)
    if return_sigma:
        return out, torch.cat(sigmas)
    return out
