r"""CPU layout of the network: the same function, computed faster (paper §2.1's network).

Inside :func:`cpu_layout`, on CPU:

* every instance normalisation (no running statistics) is computed as a
  group normalisation with one group per channel: per sample :math:`b` and
  channel :math:`c`, :math:`y = (x - \mu_{bc}) / \sqrt{\sigma^2_{bc} + \epsilon}`
  (biased variance, same :math:`\epsilon`, same optional affine weight and
  bias), the same definition by another kernel. Its result differs from
  ``instance_norm``'s by float32 rounding only (tested), and it costs about a
  quarter of it (3.1 M elements, one thread: 1.8 ms vs 7.3 ms);
* its 5-D output is laid out channels-last (``torch.channels_last_3d``), so
  every following convolution reads and writes channels-last. oneDNN's 3-D
  convolutions are 1.4–2× faster so (12 windows of 32³, 8 → 8 channels, one
  thread: 20 ms vs 38 ms; 16 → 8: 37 ms vs 80 ms), where a
  channels-first input costs a reorder in and out of every call.

Weights, state dict and train/eval flags are untouched; the patched forwards
are removed on exit. On other devices it changes nothing (not measured there).
The predictor (:mod:`physeg.inference.predictor`) runs every network call of
inference inside it, and the training loop (:mod:`physeg.training.loop`) every
optimiser step: gradients flow through ``group_norm`` and channels-last
convolutions as through the originals (a demo-size training step, one thread:
``benchmarks/train_step.py --layout``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
    return x if fmt is None else x.contiguous(memory_format=fmt)


def _group_forward(norm: nn.modules.instancenorm._InstanceNorm):
    """``norm``'s function as :func:`torch.nn.functional.group_norm` with ``C`` groups, channels-last."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(_channels_last(x), norm.num_features, norm.weight, norm.bias, norm.eps)

    return forward


def _patchable(m: nn.Module) -> bool:
    return (isinstance(m, nn.modules.instancenorm._InstanceNorm) and not m.track_running_stats
            and "forward" not in vars(m))


@contextlib.contextmanager
def cpu_layout(net: nn.Module, *, device: torch.device) -> Iterator[nn.Module]:
    """Instance norms as channels-last group norms while inside (module docstring); CPU only."""
    patched = [m for m in net.modules() if _patchable(m)] if device.type == "cpu" else []
    for m in patched:
        m.forward = _group_forward(m)
    try:
        yield net
    finally:
        for m in patched:
            del m.forward
