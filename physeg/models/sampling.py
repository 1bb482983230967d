r"""The two sources of randomness of the uncertainty models (paper §2.4), each drawn in one place.

Aleatoric
    Logit noise :math:`\varepsilon \sim N(0, I)`: :func:`logit_noise` is the
    only function that draws it (training loss, inference sampling);
    :func:`sample_logits` forms :math:`\hat x = f + \sigma \odot \varepsilon`.
Epistemic
    Monte-Carlo dropout: :func:`mc_dropout` keeps dropout active at test time
    while everything else is in eval mode; its masks are drawn by
    :func:`dropout_keep_mask` (exact Bernoulli, faster than torch's kernel).
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


def dropout_keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    r"""Boolean keep-mask of dropout: each element kept with probability exactly :math:`1 - p`.

    When :math:`256(1-p)` is an integer (the network's :math:`p = 0.5`), one
    random byte :math:`b` per element, kept iff :math:`b < 256(1-p)`; else a
    uniform float :math:`u`, kept iff :math:`u \ge p`. Same law as
    ``torch.bernoulli``, drawn from the default generator of ``x``'s device.
    On CPU (2 threads) a whole dropout costs about 6.6 instead of 15 ns per
    element, and torch's dropout was the larger part of a Monte-Carlo pass
    over a forward pass (``benchmarks/segment.py``).
    """
    keep = 256 * (1 - p)
    if keep == int(keep):
        return torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) < int(keep)
    return torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p


def _mc_forward(p: float):
    """Forward of an element-wise dropout module under :func:`mc_dropout`: ``x ⊙ mask / (1 - p)``."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if p >= 1:
            return torch.zeros_like(x)
        return x * dropout_keep_mask(x, p) / (1 - p)

    return forward


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
    # element-wise nn.Dropout draws its masks with dropout_keep_mask (same law, faster); others as they are
    fast = [m for m in dropout_modules(model) if type(m) is nn.Dropout and "forward" not in vars(m)]
    for m in dropout_modules(model):
        m.train()
    for m in fast:
        m.forward = _mc_forward(m.p)
    try:
        yield model
    finally:
        for m in fast:
            del m.forward
        for m, f in flags.items():
            m.train(f)
