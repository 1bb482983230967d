r"""Intensity normalisation of simulated and real images (paper §2.3).

.. math::

    \hat S = \operatorname{clip}\left(S / q_{99}(|S|\ \text{in the mask}),\ 0,\ c\right)

with :math:`q_{99}` the exact 99th percentile (linear interpolation, as
``numpy.percentile``), by a selection on a thresholded upper tail.
"""

from __future__ import annotations

import torch

NORMALISATION_PERCENTILE: float = 99.0
NORMALISATION_CLIP: float = 2.0


def finish_block(o: torch.Tensor, scale: torch.Tensor | None, clip: tuple[float, float] | None) -> None:
    """Per-block normalisation: divide by ``scale`` (N,1) and clip, while the block is in cache."""
    if scale is not None:
        o.div_(scale)
    if clip is not None:
        o.clamp_(*clip)


#: Rows of at least this many values use the thresholded selection of :func:`_select_ranks`.
_SELECT_MIN_VALUES: int = 1 << 16
#: Size of the strided sample that sets the threshold of the upper tail.
_SELECT_SAMPLE: int = 1 << 14


def _select_ranks(values: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row values of ascending rank ``rank`` and ``min(rank + 1, M - 1)`` (0-based) of ``values`` (N, M).

    Exact. For long rows with a short upper tail (the 99th percentile) a threshold
    ``t`` per row is read from a strided sample so that about twice the needed
    tail is ``>= t``; the candidates ``>= t`` contain the ``M - rank`` largest
    values whenever there are at least that many of them (checked; otherwise,
    and for short rows, a ``topk`` of the whole tail), and the two ranks are
    selected among them. Values must not be NaN.
    """
    n, m = values.shape
    need = m - rank  # values of ascending rank >= rank
    hi = 1 if rank + 1 < m else 0
    if n > 0 and m >= _SELECT_MIN_VALUES and 8 * need <= m:
        stride = m // _SELECT_SAMPLE
        sample = values[:, ::stride]
        ms = sample.shape[1]
        keep = min(ms, (need * ms) // m * 5 // 4 + 64)  # ~1.25x the expected tail of the sample + margin
        thresh = sample.kthvalue(ms - keep + 1, dim=1, keepdim=True).values
        rows, cols = (values >= thresh).nonzero().unbind(1)
        counts = torch.bincount(rows, minlength=n).tolist()
        if min(counts) >= need:
            cand = values[rows, cols].split(counts)
            q_lo, q_hi = [], []
            for c, cnt in zip(cand, counts):
                k = rank - (m - cnt) + 1  # 1-based ascending rank inside the candidates
                lo_val = c.kthvalue(k).values
                q_lo.append(lo_val)
                if hi and int(torch.count_nonzero(c <= lo_val)) <= k:  # rank k + 1 is above lo_val (no tie)
                    q_hi.append(c[c > lo_val].amin())
                else:
                    q_hi.append(lo_val)
            return torch.stack(q_lo), torch.stack(q_hi)
    top = values.topk(need, dim=1, largest=True, sorted=True).values  # last column = ascending rank `rank`
    return top[:, -1], top[:, -1 - hi]


def _percentile_scale(values: torch.Tensor, n_zeros: int, percentile: float) -> torch.Tensor:
    """:func:`percentile_scale` of the rows of ``values`` (N, M) each extended by ``n_zeros`` zeros."""
    n, m = values.shape
    total = m + n_zeros
    if total == 0:
        return torch.ones(n, dtype=values.dtype, device=values.device)
    if n_zeros and (m == 0 or bool((values.amin(1) < 0).any())):
        # zeros are not at the bottom of the order: plain evaluation on the extended rows
        values = torch.cat([values, values.new_zeros(n, n_zeros)], dim=1)
        m, n_zeros = total, 0
    pos = percentile / 100.0 * (total - 1)
    lo = int(pos)
    frac = pos - lo
    if lo >= n_zeros:
        q_lo, q_hi = _select_ranks(values, lo - n_zeros)
    else:  # the zeros are the lowest values of every row
        q_lo = values.new_zeros(n)
        q_hi = q_lo if lo + 1 < n_zeros else values.amin(1)
    scale = q_lo + (q_hi - q_lo) * frac
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def percentile_scale(values: torch.Tensor, *, percentile: float = NORMALISATION_PERCENTILE) -> torch.Tensor:
    """Per-row ``percentile`` of ``values`` (N, M) with linear interpolation (``numpy.percentile``'s default).

    Exact, by a selection on the upper tail (see :func:`_select_ranks`). Rows whose
    percentile is not > 0 get scale 1 (left unscaled). Returns ``(N,)``.
    """
    return _percentile_scale(values, 0, percentile)


def normalise_intensity(
    images: torch.Tensor,
    stats_mask: torch.Tensor,
    *,
    percentile: float = NORMALISATION_PERCENTILE,
    clip: float = NORMALISATION_CLIP,
    signed: bool = False,
) -> torch.Tensor:
    """Divide each image of ``images`` (N, V) in place by its ``percentile`` of |S| in ``stats_mask`` (V,); clip.

    The statistic is :func:`percentile_scale` of the magnitudes inside the mask.
    Clip range ``[0, clip]`` (``[-clip, clip]`` if ``signed``). Returns ``images``.
    """
    idx = stats_mask.reshape(-1).nonzero().squeeze(1)
    vals = images.index_select(1, idx)
    if signed:
        vals.abs_()
    images.div_(percentile_scale(vals, percentile=percentile)[:, None])
    return images.clamp_(-clip if signed else 0.0, clip)
