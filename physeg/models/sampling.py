r"""The two sources of randomness of the uncertainty models (paper §2.4), each drawn in one place.

Aleatoric
    Logit noise :math:`\varepsilon \sim N(0, I)`: :func:`logit_noise` is the
    only function that draws it (training loss, inference sampling);
    :func:`sample_logits` forms :math:`\hat x = f + \sigma \odot \varepsilon`.
Epistemic
    Monte-Carlo dropout: :func:`mc_dropout` keeps dropout active at test time
    while everything else is in eval mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def logit_noise(shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                like: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype.

    Drawn on the generator's device (a CPU generator gives the same numbers
    whatever the model's device), then moved. ``out`` (on ``like``'s device)
    is filled in place when given.
    """
    gen_device = generator.device if generator is not None else like.device
    if out is not None and gen_device == out.device:
        return torch.randn(shape, generator=generator, out=out)
    eps = torch.randn(shape, generator=generator, device=gen_device, dtype=like.dtype).to(like.device)
    if out is not None:
        return out.copy_(eps)
    return eps


def sample_logits(
    logits: torch.Tensor, sigma: torch.Tensor, n: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Aleatoric samples :math:`\hat x_t = f + \sigma \odot \varepsilon_t`, :math:`\varepsilon_t \sim N(0, I)`.

    Batched: returns (n, *logits.shape). Works equally on stitched whole-volume
    ``logits``/``sigma`` from :func:`physeg.inference.predictor.infer_volume`, since the
    noise is independent per voxel.
    """
    eps = logit_noise((n, *logits.shape), generator=generator, like=logits)
    return logits.unsqueeze(0) + sigma.unsqueeze(0) * eps


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Every dropout module (``nn.Dropout``, ``Dropout3d``, ``AlphaDropout``, …) of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Monte-Carlo dropout: ``model`` in eval mode except its dropout modules.

    Instance norm has no running statistics here, so eval mode only fixes
    everything that is not dropout; the previous train/eval flags are restored
    on exit::

        with mc_dropout(model):
            samples = [model(x, params) for _ in range(50)]
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    for m in dropout_modules(model):
        m.train()
    try:
        yield model
    finally:
        for m, f in flags.items():
            m.train(f)
