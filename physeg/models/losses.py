r"""Training losses (paper §2.2, §2.4).

Segmentation
    Voxel-averaged cross-entropy against the physics gold standard,
    :math:`L_{CE} = \frac{1}{|I|}\sum_i -\log \mathrm{softmax}(f_i)_{y_i}`. The
    paper names only "the standard cross-entropy segmentation loss", so soft
    Dice is left off by default (``dice_weight=0``); it is available as a
    switch for experiments.

Stratification (§2.2)
    On the penultimate features :math:`F_n \in \mathbb{R}^{D}` (D = channels ×
    voxels) of the N realisations of one subject at one patch location, the
    mean over pairs of the mean squared difference

    .. math::

        L_{strat} = \binom{N}{2}^{-1} \sum_{n<m} \frac{1}{D}\lVert F_n - F_m \rVert^2
                  = \frac{2}{D} \sum_{d} \frac{1}{N-1}\sum_n (F_{n,d} - \bar F_d)^2 ,

    i.e. twice the unbiased variance across the batch, averaged over channels
    and voxels (the identity :math:`\sum_{n<m}\lVert F_n-F_m\rVert^2 = N\sum_n
    \lVert F_n - \bar F\rVert^2` makes it O(N) instead of O(N²)). Weight λ =
    ``profile.strat_weight``.

Aleatoric (§2.4, eq. 3–4)
    With predicted :math:`\sigma_{i,c} > 0` and T noise draws
    :math:`\varepsilon_t \sim N(0, I)`, :math:`\hat x_{i,t} = f_i + \sigma_i \odot \varepsilon_t`,

    .. math:: L = \frac{1}{T}\sum_t \frac{1}{|I|}\sum_i \Big(-\hat x_{i,t,y_i} + \log\sum_{c'} e^{\hat x_{i,t,c'}}\Big),

    the cross-entropy averaged over T noisy logit passes (voxel mean instead of
    the paper's voxel sum, a constant factor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Voxel-mean cross-entropy; ``logits`` (B, C, *S) float, ``labels`` (B, *S) int64."""
    return F.cross_entropy(logits.float(), labels)


def soft_dice(logits: torch.Tensor, labels: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    r"""``1 - mean_c Dice_c`` on softmax probabilities, foreground classes (c ≥ 1) only.

    .. math:: \mathrm{Dice}_c = \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}
    """
    probs = logits.float().softmax(1)
    onehot = F.one_hot(labels, probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def stratification_loss(features: torch.Tensor) -> torch.Tensor:
    r"""Mean over pairs ``n<m`` of the mean squared feature difference (module docstring).

    ``features`` (N, ...) — realisations of ONE subject at ONE patch location.
    Returns 0 for N < 2.
    """
    if features.shape[0] < 2:
        return features.sum() * 0
    flat = features.float().reshape(features.shape[0], -1)
    return 2 * flat.var(dim=0, unbiased=True).mean()


def aleatoric_loss(
    logits: torch.Tensor,
    sigma: torch.Tensor,
    labels: torch.Tensor,
    *,
    passes: int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over ``passes`` noisy logit draws (eq. 3–4).

    ``noise`` (T, *logits.shape) fixes ε (tests); otherwise ``passes`` draws
    of ε ~ N(0, 1) are made one at a time (memory: one extra logit tensor).
    """
    if noise is None:
        if not passes:
            raise ValueError("give passes or noise")
        total = logits.new_zeros((), dtype=torch.float32)
        for _ in range(passes):
            eps = torch.randn(logits.shape, generator=generator, dtype=logits.dtype,
                              device=generator.device if generator is not None else logits.device)
            total = total + cross_entropy(logits + sigma * eps.to(logits.device), labels)
        return total / passes
    return torch.stack([cross_entropy(logits + sigma * e, labels) for e in noise]).mean()


def segmentation_loss(
    heads: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    strat_weight: float = 0.0,
    dice_weight: float = 0.0,
    aleatoric_passes: int = 0,
) -> dict[str, torch.Tensor]:
    r"""Total training loss and its parts.

    .. math:: L = L_{CE\ or\ aleatoric} + w_{Dice} L_{Dice} + \lambda L_{strat}

    ``heads`` is :meth:`physeg.models.network.PhysicsUNet.heads`' output. The
    aleatoric CE replaces the plain CE when ``sigma`` is present.
    Returns ``{"loss", "ce", "strat", "dice"}`` (scalars; unused parts 0).
    """
    logits = heads["logits"]
    if "sigma" in heads:
        ce = aleatoric_loss(logits, heads["sigma"], labels, passes=max(1, aleatoric_passes))
    else:
        ce = cross_entropy(logits, labels)
    zero = ce.detach() * 0
    strat = stratification_loss(heads["features"]) if strat_weight else zero
    dice = soft_dice(logits, labels) if dice_weight else zero
    loss = ce + strat_weight * strat + dice_weight * dice
    return {"loss": loss, "ce": ce, "strat": strat, "dice": dice}
