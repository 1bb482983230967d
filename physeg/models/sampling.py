r"""The two sources of randomness of the uncertainty models (paper §2.4), each drawn in one place.

Aleatoric
    Logit noise :math:`\varepsilon \sim N(0, I)`: :func:`logit_noise` is the
    only function that draws it (training loss, inference sampling);
    :func:`sample_logits` forms :math:`\hat x = f + \sigma \odot \varepsilon`.
Epistemic
    Monte-Carlo dropout: :func:`mc_dropout` keeps dropout active at test time
    while everything else is in eval mode; its factors are drawn by
    :func:`dropout_multiplier` (exact Bernoulli, faster than torch's kernel).
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

    When :math:`256(1-p)` is an integer, one random byte :math:`b` per element,
    kept iff :math:`b < 256(1-p)`; else a uniform float :math:`u`, kept iff
    :math:`u \ge p`. Same law as ``torch.bernoulli``, drawn from the default
    generator of ``x``'s device. :func:`dropout_multiplier` is the fast path
    Monte-Carlo dropout uses.
    """
    keep = 256 * (1 - p)
    if keep == int(keep):
        return torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) < int(keep)
    return torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p


#: Row ``b`` holds the 8 bits of byte ``b`` (least significant first), as 0.0 / 2.0 = keep / (1 - 1/2).
_BIT_TABLE = torch.tensor([[2.0 * ((b >> i) & 1) for i in range(8)] for b in range(256)])


def _memory_order(x: torch.Tensor) -> list[int] | None:
    """Dimensions of ``x`` from the slowest to the fastest in memory: contiguous or channels-last, else ``None``."""
    if x.is_contiguous():
        return list(range(x.ndim))
    cl = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
    if cl is not None and x.is_contiguous(memory_format=cl):
        return [0, *range(2, x.ndim), 1]
    return None


def dropout_multiplier(x: torch.Tensor, p: float) -> torch.Tensor:
    r"""Dropout factors :math:`m / (1-p)`, :math:`m \sim \mathrm{Bernoulli}(1-p)` i.i.d., shaped and laid out as ``x``.

    ``dropout(x) = x * dropout_multiplier(x, p)``, which is how torch's
    dropout computes it (noise already divided by :math:`1-p`).

    :math:`p = 1/2` (the network's dropout, paper §2.4): each random byte
    gives 8 independent fair bits (its bits are i.i.d. Bernoulli(1/2) because
    the byte is uniform on 0..255), expanded by a 256×8 table to
    :math:`\{0, 2\}`, in the memory order of ``x`` (channels-last
    included), so the product streams through both tensors. One draw per 8
    elements instead of one per element: a 3.1 M-element dropout costs about
    2.5 ms instead of 13 ms for :func:`dropout_keep_mask` then the product and
    division (one thread). Other :math:`p`: :func:`dropout_keep_mask` as float,
    times :math:`1/(1-p)`.
    """
    if p != 0.5 or x.device.type != "cpu":
        return dropout_keep_mask(x, p).to(x.dtype) * (1.0 / (1.0 - p))
    n = x.numel()
    draws = torch.empty((n + 7) // 8, dtype=torch.uint8).random_(0, 256)
    flat = _BIT_TABLE.to(x.dtype).index_select(0, draws.int()).reshape(-1)[:n]
    order = _memory_order(x)
    if order is None:
        return flat.view(x.shape)
    return flat.view([x.shape[d] for d in order]).permute([order.index(d) for d in range(x.ndim)])


def _mc_forward(p: float):
    """Forward of an element-wise dropout module under :func:`mc_dropout`: ``x · m / (1 - p)``."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if p >= 1:
            return torch.zeros_like(x)
        return x * dropout_multiplier(x, p)

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
    # element-wise nn.Dropout draws its factors with dropout_multiplier (same law, faster); others as they are
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
