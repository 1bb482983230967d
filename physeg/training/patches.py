r"""Where training patches come from, and what tissue they hold (paper §2.1: patch-based training).

Statistics
    :func:`patch_tissue_fractions` draws batches from a batch source
    (:class:`physeg.training.batches.TrainingBatches`) and reports, per
    tissue, the mean fraction of patch voxels it covers and the share of
    patches that contain it at all — to see whether a class is rare because
    the patches miss it or because it is small everywhere.

Expected label shares (:func:`patch_label_frequencies`)
    The share of each label among training-patch voxels, computed exactly from
    the label maps (no draw): what the output prior of
    :attr:`physeg.profiles.TrainingConfig.prior_bias` starts from.

Tissue-aware locations (:class:`TissueAwareLocations`)
    The batch sampler draws patch centres uniformly among brain-mask voxels.
    nnU-Net (the paper's [10]) instead forces a share of patches to be
    centred on a foreground class. Here, for each patch, with probability
    :math:`q_k` the centre is a uniform voxel of tissue :math:`k` (of that
    subject), otherwise (probability :math:`1 - \sum_k q_k`) a uniform mask
    voxel; the corner is the centre minus :math:`\lfloor p/2 \rfloor`, clamped so
    the :math:`p^3` patch lies inside the volume (as the batch sampler does).
    A tissue absent from a subject falls back to the mask.

    It helps only where a patch is small against the brain. At the demo size
    (32³ patches in 50×59×48 volumes) every uniform patch already holds CSF,
    3.8 % of its voxels; with :math:`q_{CSF}` = 0.33 or 1 the share is 3.9 %
    or 4.0 % (18 demo training subjects, ``benchmarks/convergence.py``): there
    CSF is rare per voxel, not missed by the patches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from physeg.conventions import TISSUES


class BatchSource(Protocol):
    """Anything with ``next_batch() -> {"label": (B, *S) int64, ...}``."""

    def next_batch(self) -> dict[str, torch.Tensor]: ...


def patch_tissue_fractions(source: BatchSource, *, n: int, tissues: Mapping[str, int] = TISSUES
                           ) -> dict[str, dict[str, float]]:
    r"""Tissue content of at least ``n`` training patches drawn from ``source``.

    For tissue :math:`k` and patches :math:`j = 1..n` with label crops
    :math:`y_j`: ``mean_fraction`` :math:`= \frac1n\sum_j |\{y_j = k\}| / |y_j|`
    (share of patch voxels) and ``with_any`` :math:`= \frac1n\sum_j
    \mathbb 1[\exists\, y_j = k]` (share of patches). ``background`` is
    reported too. Draws ``ceil(n / batch_size)`` batches (this advances the
    source's random stream).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 patches, got {n}")
    names = {"background": 0, **dict(tissues)}
    frac = {k: 0.0 for k in names}
    anyk = {k: 0 for k in names}
    seen = 0
    while seen < n:
        labels = source.next_batch()["label"].cpu()
        flat = labels.reshape(labels.shape[0], -1)
        for name, value in names.items():
            hit = flat == value
            frac[name] += float(hit.float().mean(1).sum())
            anyk[name] += int(hit.any(1).sum())
        seen += flat.shape[0]
    return {name: {"mean_fraction": frac[name] / seen, "with_any": anyk[name] / seen} for name in names}


def _box_sums(onehot: torch.Tensor, p: int) -> torch.Tensor:
    """Sum of ``onehot`` (L, X, Y, Z) over every ``p``³ box, indexed by its corner: (L, X-p+1, Y-p+1, Z-p+1)."""
    c = torch.nn.functional.pad(onehot.cumsum(1).cumsum(2).cumsum(3), (1, 0, 1, 0, 1, 0))
    lo, hi = slice(None, -p), slice(p, None)
    return (c[:, hi, hi, hi] - c[:, lo, hi, hi] - c[:, hi, lo, hi] - c[:, hi, hi, lo]
            + c[:, lo, lo, hi] + c[:, lo, hi, lo] + c[:, hi, lo, lo] - c[:, lo, lo, lo])


def patch_label_frequencies(subjects: Sequence, *, patch_size: int, n_labels: int) -> torch.Tensor:
    r"""Expected share of each label (0 … ``n_labels``-1) among the voxels of one training patch.

    The batch sampler picks a subject uniformly, a centre uniformly among its
    mask voxels, and the ``p``³ patch around it (corner clamped inside the
    volume). So label :math:`k`'s share is
    :math:`\frac1S\sum_s \frac{1}{|M_s|}\sum_{c\in M_s} n_k(\mathrm{corner}(c)) / p^3`,
    with :math:`n_k` the label's voxels in the box (corners as
    :func:`corner_for_centre`, vectorised), from an integral image of each
    label map: exact, no random draw. ``subjects``: :class:`~physeg.training.batches.Volumes`.
    """
    p = int(patch_size)
    shares = []
    for v in subjects:
        v = v.padded(p)
        mask = v.mask if v.mask.any() else torch.ones_like(v.mask)
        shape = torch.tensor(mask.shape)
        corners = (torch.nonzero(mask) - p // 2).clamp_min(0).minimum(shape - p)
        onehot = torch.nn.functional.one_hot(v.labels.long(), n_labels).movedim(-1, 0).double()
        counts = _box_sums(onehot, p)[:, corners[:, 0], corners[:, 1], corners[:, 2]]
        shares.append(counts.sum(1) / (corners.shape[0] * p ** 3))
    return torch.stack(shares).mean(0).float()


def corner_for_centre(centre: Sequence[int], *, shape: Sequence[int], size: int) -> tuple[int, int, int]:
    """Corner of the ``size``³ patch centred on ``centre`` (voxels), shifted to lie inside ``shape``."""
    return tuple(int(min(max(int(centre[d]) - size // 2, 0), int(shape[d]) - size)) for d in range(3))


class TissueAwareLocations:
    r"""Patch corners with a share of patches centred on chosen tissues (module docstring).

    Parameters
    ----------
    labels, masks
        Per subject: label map (X, Y, Z) int64 and brain mask (X, Y, Z) bool, each
        at least ``patch_size`` along every axis (pad first, as the batch sampler does).
    patch_size
        Patch edge :math:`p` (voxels).
    oversample
        Label value → probability :math:`q_k` that a patch is centred on that tissue,
        e.g. ``{TISSUES["CSF"]: 0.33}``; :math:`\sum_k q_k \le 1`. Empty: uniform over the mask.
    """

    def __init__(self, labels: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], *, patch_size: int,
                 oversample: Mapping[int, float]) -> None:
        if len(labels) != len(masks) or not labels:
            raise ValueError("one mask per label map, at least one subject")
        total = sum(oversample.values())
        if any(q < 0 for q in oversample.values()) or total > 1 + 1e-9:
            raise ValueError(f"oversampling probabilities must be >= 0 and sum to <= 1, got {dict(oversample)}")
        for lab in labels:
            if min(lab.shape) < patch_size:
                raise ValueError(f"volume {tuple(lab.shape)} smaller than the patch {patch_size}: pad it first")
        self.patch_size = int(patch_size)
        self.shapes = [tuple(lab.shape) for lab in labels]
        self.tissues = list(oversample)
        # cumulative thresholds: u < c_1 → tissue 1, u < c_2 → tissue 2, …, else the mask
        self.thresholds = torch.tensor(list(oversample.values()), dtype=torch.float64).cumsum(0).tolist()
        self._mask = [torch.nonzero(m) if m.any() else torch.nonzero(torch.ones_like(m)) for m in masks]
        self._tissue = [{k: torch.nonzero(lab == k) for k in self.tissues} for lab in labels]

    def centres(self, s: int, tissue: int | None = None) -> torch.Tensor:
        """Candidate centres (N, 3) of subject ``s``: voxels of ``tissue``, or of the mask."""
        if tissue is None:
            return self._mask[s]
        return self._tissue[s][tissue]

    def corner(self, s: int, *, generator: torch.Generator) -> tuple[int, int, int]:
        """One patch corner for subject ``s``; two draws from ``generator`` (which pool, which voxel)."""
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        pool = self._mask[s]
        for tissue, threshold in zip(self.tissues, self.thresholds):
            if u < threshold:
                pool = self._tissue[s][tissue] if len(self._tissue[s][tissue]) else self._mask[s]
                break
        centre = pool[int(torch.randint(pool.shape[0], (1,), generator=generator))]
        return corner_for_centre(centre, shape=self.shapes[s], size=self.patch_size)
