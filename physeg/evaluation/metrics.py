"""Segmentation metrics: Dice per tissue, tissue volumes, coefficient of variation.

Conventions (shared with the rest of physeg)
--------------------------------------------
Label maps are integer arrays (numpy or torch) with ``0`` background, ``1`` GM,
``2`` WM, ``3`` CSF (:data:`physeg.conventions.TISSUES`, the default of every
``tissues`` argument here). Volumes are in millilitres: ``count × voxel_volume_ml``.

Dice of an empty tissue
    When a tissue is absent from *both* the prediction and the reference the
    Dice ratio is 0/0. We return ``NaN`` (not 1): "nothing to segment" is not a
    success to average in. Aggregations in physeg use NaN-skipping means, so such
    a case simply drops out; it is counted in the ``n`` columns. When the tissue
    is absent from only one of the two maps the Dice is 0.

Coefficient of variation (CoV)
    Per subject and tissue, over the realisations (simulated images with
    different acquisition parameters) of that subject:
    ``CoV = SD / mean`` with the *sample* standard deviation (``ddof=1``).
    The paper's Table 2 reports CoV × 10³, mean (SD) across test subjects.
    Non-finite volumes are dropped first; the CoV is ``NaN`` when it is
    undefined: fewer than ``ddof + 1`` volumes, or a zero mean (the tissue
    never segmented). :func:`coefficient_of_variation` is the one CoV of
    physeg; the training validation score maps its two ``NaN`` cases to
    finite numbers (:mod:`physeg.training.validation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from physeg.conventions import TISSUES

#: Degrees of freedom of the standard deviation in the CoV (sample SD).
COV_DDOF: int = 1
#: Key columns of a realisation-level result row.
GROUP_KEYS: tuple[str, ...] = ("sequence", "model", "distribution", "tissue")


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


def dice(pred, ref, label: int, *, empty: float = float("nan")) -> float:
    """Dice overlap :math:`2|A\\cap B|/(|A|+|B|)` of one label between two label maps of the same shape.

    Returns ``empty`` (default ``NaN``, see module notes) when the label is
    absent from both maps.
    """
    p = _as_tensor(pred) == label
    r = _as_tensor(ref) == label
    if p.shape != r.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(p.shape)} vs reference {tuple(r.shape)}")
    denom = int(p.sum()) + int(r.sum())
    if denom == 0:
        return float(empty)
    return 2.0 * int((p & r).sum()) / denom


def dice_per_tissue(
    pred, ref, tissues: Mapping[str, int] = TISSUES, *, empty: float = float("nan")
) -> dict[str, float]:
    """Dice of each tissue: ``{"GM": ..., "WM": ..., "CSF": ...}`` (``empty`` as in :func:`dice`)."""
    return {name: dice(pred, ref, lab, empty=empty) for name, lab in tissues.items()}


def label_counts(labels, tissues: Mapping[str, int] = TISSUES) -> dict[str, int]:
    """Number of voxels of each tissue in a label map."""
    t = _as_tensor(labels)
    return {name: int((t == lab).sum()) for name, lab in tissues.items()}


def volumes_ml(labels, voxel_volume_ml: float, tissues: Mapping[str, int] = TISSUES) -> dict[str, float]:
    """Tissue volumes in ml of one label map: voxel count × ``voxel_volume_ml``."""
    return {k: v * float(voxel_volume_ml) for k, v in label_counts(labels, tissues).items()}


def batch_volumes_ml(
    labels, voxel_volume_ml: float, tissues: Mapping[str, int] = TISSUES
) -> np.ndarray:
    """Volumes of a stack of label maps ``(S, *spatial)`` → array ``(S, n_tissues)`` in ml.

    Vectorised (one comparison per tissue over the whole stack); columns follow
    the order of ``tissues``.
    """
    t = _as_tensor(labels)
    flat = t.reshape(t.shape[0], -1)
    counts = torch.stack([(flat == lab).sum(dim=1) for lab in tissues.values()], dim=1)
    return counts.cpu().numpy().astype(np.float64) * float(voxel_volume_ml)


def coefficient_of_variation(values: Iterable[float], ddof: int = COV_DDOF) -> float:
    """``SD / mean`` of a set of volumes (sample SD, ``ddof=1`` by default).

    ``NaN`` if fewer than ``ddof + 1`` finite values or a zero mean.
    """
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size <= ddof:
        return float("nan")
    m = v.mean()
    if m == 0:
        return float("nan")
    return float(v.std(ddof=ddof) / m)


def cov_table(
    results: pd.DataFrame,
    *,
    value: str = "volume_ml",
    by: Sequence[str] = ("subject",) + GROUP_KEYS,
    ddof: int = COV_DDOF,
) -> pd.DataFrame:
    """CoV per subject per tissue (and model, sequence, distribution).

    ``results`` is the long realisation-level table of
    :func:`physeg.evaluation.runs.evaluate_segmentation` (one row per image and tissue).
    Returns one row per group with ``cov``, ``cov_x1000``, ``mean_volume_ml``,
    ``sd_volume_ml`` and ``n`` (realisations).
    """
    by = [c for c in by if c in results.columns]
    g = results.groupby(by, sort=True, observed=True)[value]
    out = g.agg(
        mean_volume_ml="mean",
        sd_volume_ml=lambda s: s.std(ddof=ddof),
        n="count",
        cov=lambda s: coefficient_of_variation(s.to_numpy(), ddof=ddof),
    ).reset_index()
    out["cov_x1000"] = out["cov"] * 1000.0
    return out


def subject_means(
    results: pd.DataFrame, value: str = "dice", by: Sequence[str] = ("subject",) + GROUP_KEYS
) -> pd.DataFrame:
    """Mean of ``value`` over each subject's realisations (NaN-skipping), with ``n``."""
    by = [c for c in by if c in results.columns]
    g = results.groupby(by, sort=True, observed=True)[value]
    return g.agg(**{value: "mean", "n": "count"}).reset_index()


def summarise_across_subjects(
    per_subject: pd.DataFrame, value: str, by: Sequence[str] = GROUP_KEYS
) -> pd.DataFrame:
    """Mean and SD (``ddof=1``) of a per-subject value across subjects.

    This is the "mean (SD)" of the paper's tables: first one number per subject
    (its mean Dice over realisations, or its CoV), then mean and SD across the
    test subjects. Returns columns ``by + [mean, sd, n_subjects]``.
    """
    by = [c for c in by if c in per_subject.columns]
    g = per_subject.groupby(by, sort=True, observed=True)[value]
    return g.agg(mean="mean", sd=lambda s: s.std(ddof=1), n_subjects="count").reset_index()
