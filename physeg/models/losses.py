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

Aleatoric (§2.4, eq. 3–4; loss attenuation of Kendall & Gal 2017, the paper's [14])
    The σ head predicts :math:`\sigma_{i,c} > 0` per voxel i and class c; with
    T draws :math:`\varepsilon_t \sim N(0, I)` (drawn only by
    :func:`physeg.models.sampling.logit_noise`) the noisy logits are
    :math:`\hat x_{i,t} = f_i + \sigma_i \odot \varepsilon_t` (eq. 3). Write
    :math:`\ell_{i,t} = \log\mathrm{softmax}(\hat x_{i,t})_{y_i}` (so the
    per-draw cross-entropy is :math:`CE_{i,t} = -\ell_{i,t}`). Four per-voxel
    forms, each averaged over voxels (the paper sums; a constant factor),
    selected by ``form=``:

    ``"kendall-gal"`` (default): the likelihood of the label averaged over draws,

    .. math:: L_i = -\log \frac1T \sum_t \mathrm{softmax}(\hat x_{i,t})_{y_i}
                  = \log T - \operatorname{logsumexp}_t \ell_{i,t}

    (the classification loss of Kendall & Gal 2017, computed with log-sum-exp
    so that tiny probabilities do not underflow).

    ``"mean-ce"``: the cross-entropy averaged over draws (this module's form
    before), :math:`L_i = \frac1T\sum_t CE_{i,t}`.

    ``"printed"``: eq. 4 exactly as the text reads — the log of the mean
    cross-entropy, :math:`L_i = \log \frac1T\sum_t CE_{i,t}` (the one-hot
    :math:`c_i` selects the label's term; no exponential around the
    bracket). :math:`CE \ge 0`; it is clamped at the smallest positive float
    before the log.

    ``"log-mean-exp-ce"``: eq. 4 with the exponential that Kendall & Gal have
    but with the sign of the printed bracket,
    :math:`L_i = \log\frac1T\sum_t \exp(CE_{i,t}) = \operatorname{logsumexp}_t(-\ell_{i,t}) - \log T`.

    *Why the default.* :math:`CE(x) = -x_y + \log\sum_{c'} e^{x_{c'}}` is
    convex in the logits, and so is :math:`\exp CE(x) = \sum_{c'} e^{x_{c'}-x_y}`.
    By Jensen, with zero-mean noise, :math:`E_\varepsilon[CE(f+\sigma\varepsilon)] \ge CE(f)`
    and :math:`\log E_\varepsilon[\exp CE(f+\sigma\varepsilon)] \ge CE(f)`:
    noise can only raise the last three forms (``"printed"`` is a monotone
    function of ``"mean-ce"``), so their minimum over σ is σ = 0 whatever the
    voxel and σ carries no information. ``softmax(x)_y`` is not concave: for a
    misclassified voxel (:math:`p_y < 1/2`, where
    :math:`p_y = \mathrm{sigmoid}(x_y - \log\sum_{c'\ne y} e^{x_{c'}})` is
    convex in :math:`x_y`) noise *raises* :math:`E[p_y]` towards :math:`1/C`,
    so the Kendall–Gal loss falls as σ grows, while for a confident correct voxel
    it lowers :math:`E[p_y]` and the loss rises. σ's gradient thus says whether
    the logits are wrong (loss attenuation: σ grows) or confidently right (σ
    shrinks), which §2.4 needs for its volume bounds (tested in
    ``tests/test_losses.py``).

    *Caveat (identifiability).* The Kendall–Gal loss is the likelihood of the
    predictive :math:`\bar p = E_\varepsilon\,\mathrm{softmax}(f+\sigma\varepsilon)`,
    and any :math:`\bar p` is also :math:`\mathrm{softmax}(f')` with σ = 0: at
    the optimum σ is redundant. σ grows while logits are confidently wrong
    (early training, labels the network cannot fit); once the logits of an
    ambiguous voxel balance, extra σ only leaks mass to other classes and
    decays. On coin-flip labels a tiny model has 3.5× the clean region's σ
    after 150 steps and ≈ 1× after ~600 (``tests/test_losses.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from physeg.models.sampling import sample_logits


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
    # the unbiased variance over n written out: Tensor.var over dim 0 of a channels-last
    # (strided) feature map is about 10x slower than these element-wise passes on CPU
    f = features.float()
    dev = f - f.mean(dim=0, keepdim=True)
    return 2 * (dev * dev).sum(dim=0).mean() / (features.shape[0] - 1)


#: Per-voxel forms of the aleatoric loss (module docstring); the first is the default.
ALEATORIC_FORMS: tuple[str, ...] = ("kendall-gal", "mean-ce", "printed", "log-mean-exp-ce")


def label_log_probs(noisy_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r""":math:`\ell_{t,i} = \hat x_{t,i,y_i} - \log\sum_{c'} e^{\hat x_{t,i,c'}}` for every draw t.

    ``noisy_logits`` (T, B, C, *S) float; ``labels`` (B, *S) int64 → (T, B, *S).
    """
    picked = noisy_logits.gather(2, labels.unsqueeze(0).unsqueeze(2).expand(
        noisy_logits.shape[0], -1, 1, *labels.shape[1:])).squeeze(2)
    return picked - noisy_logits.logsumexp(2)


def aleatoric_loss(
    logits: torch.Tensor,
    sigma: torch.Tensor,
    labels: torch.Tensor,
    *,
    passes: int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    form: str = "kendall-gal",
) -> torch.Tensor:
    r"""Aleatoric segmentation loss over T noisy logit draws (§2.4 eq. 3–4; module docstring).

    Parameters
    ----------
    logits, sigma
        (B, C, *S) logits :math:`f` and noise scales :math:`\sigma > 0` (logit units).
    labels
        (B, *S) int64 class indices.
    passes
        T; draws :math:`\varepsilon` with :func:`physeg.models.sampling.sample_logits`.
    noise
        (T, *logits.shape) fixed :math:`\varepsilon` (tests); overrides ``passes``.
    form
        One of :data:`ALEATORIC_FORMS`: ``"kendall-gal"``
        :math:`\log T - \mathrm{lse}_t \ell_t`, ``"mean-ce"`` :math:`-\bar\ell`,
        ``"printed"`` :math:`\log(-\bar\ell)`, ``"log-mean-exp-ce"``
        :math:`\mathrm{lse}_t(-\ell_t) - \log T`; each voxel-averaged.

    Returns
    -------
    Scalar float32 loss (nats per voxel for all forms but ``"printed"``).

    Memory: the T noisy logit tensors are formed at once (autograd keeps them
    anyway for the log-sum-exp's backward pass).
    """
    if form not in ALEATORIC_FORMS:
        raise ValueError(f"form must be one of {ALEATORIC_FORMS}, got {form!r}")
    logits, sigma = logits.float(), sigma.float()
    if noise is not None:
        noisy = logits.unsqueeze(0) + sigma.unsqueeze(0) * noise.to(logits.device, logits.dtype)
    elif passes:
        noisy = sample_logits(logits, sigma, int(passes), generator=generator)
    else:
        raise ValueError("give passes or noise")
    ell = label_log_probs(noisy, labels)  # (T, B, *S)
    log_t = math.log(ell.shape[0])
    if form == "kendall-gal":
        per_voxel = log_t - ell.logsumexp(0)
    elif form == "mean-ce":
        per_voxel = -ell.mean(0)
    elif form == "printed":
        per_voxel = (-ell).mean(0).clamp_min(torch.finfo(ell.dtype).tiny).log()
    else:
        per_voxel = (-ell).logsumexp(0) - log_t
    return per_voxel.mean()


def segmentation_loss(
    heads: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    strat_weight: float = 0.0,
    dice_weight: float = 0.0,
    aleatoric_passes: int = 0,
    aleatoric_form: str = "kendall-gal",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    r"""Total training loss and its parts.

    .. math:: L = L_{CE\ or\ aleatoric} + w_{Dice} L_{Dice} + \lambda L_{strat}

    ``heads`` is :meth:`physeg.models.network.PhysicsUNet.heads`' output. The
    aleatoric loss (:func:`aleatoric_loss` with ``aleatoric_passes`` draws,
    ``form=aleatoric_form``, default Kendall & Gal) replaces the plain CE when
    ``sigma`` is present; ``generator`` seeds its noise.
    Returns ``{"loss", "ce", "strat", "dice"}`` (scalars; unused parts 0).
    """
    logits = heads["logits"]
    if "sigma" in heads:
        ce = aleatoric_loss(logits, heads["sigma"], labels, passes=max(1, aleatoric_passes),
                            form=aleatoric_form, generator=generator)
    else:
        ce = cross_entropy(logits, labels)
    zero = ce.detach() * 0
    strat = stratification_loss(heads["features"]) if strat_weight else zero
    dice = soft_dice(logits, labels) if dice_weight else zero
    loss = ce + strat_weight * strat + dice_weight * dice
    return {"loss": loss, "ce": ce, "strat": strat, "dice": dice}
