"""Physics Gold Standard (PGS): tissue labels from quantitative maps by a literature Gaussian mixture.

The paper (§3.2, following Borges et al. 2019) uses one segmentation per subject,
shared by every image simulated from that subject's maps. It is obtained by a
Gaussian mixture whose components are the tissues GM, WM and CSF with
parameters taken from the literature. With features :math:`x` (by default the T1
value of a voxel, in seconds) and tissue :math:`k`,

.. math::

    p(k \\mid x) = \\frac{\\pi_k\\, \\mathcal N(x;\\, \\mu_k, \\sigma_k^2)}
                        {\\sum_j \\pi_j\\, \\mathcal N(x;\\, \\mu_j, \\sigma_j^2)},
    \\qquad \\ell(x) = \\arg\\max_k p(k \\mid x)

inside the brain mask and :math:`\\ell = 0` (background) outside. Priors
:math:`\\pi_k` are equal by default. Options (an ablation of the PGS definition):

* ``features=("T1", "T2star", "PD")``: a diagonal-covariance Gaussian over
  the three maps (product of per-map likelihoods);
* ``em_iterations > 0``: expectation-maximisation of means, variances and
  priors, initialised at the literature values.

Labels follow :data:`physeg.data.LABELS`: 0 background, 1 GM, 2 WM, 3 CSF.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

# Tissue order of the mixture components; label = index + 1 (one definition in physeg.conventions).
from physeg.conventions import TISSUE_NAMES as TISSUES
from physeg.evaluation import metrics
from physeg.simulation.tissues import TISSUE_PARAMETERS

#: Map channel order of the canonical map tensor (PD a.u., T1 s, T2* s).
MAP_CHANNELS: tuple[str, ...] = ("PD", "T1", "T2star")

#: Spread (SD) of each literature value, same units as the means.
#: The means live in :data:`physeg.simulation.tissues.TISSUE_PARAMETERS` (single
#: source of truth, with citations: T1 Wansapura et al. 1999, T2* Peters et al.
#: 2007); the spreads are the PGS mixture's component widths and the generator's
#: population spread, recorded here.
LITERATURE_SD: dict[str, dict[str, float]] = {
    "WM": {"T1": 0.05, "T2star": 0.006, "PD": 0.03},
    "GM": {"T1": 0.08, "T2star": 0.008, "PD": 0.04},
    "CSF": {"T1": 0.4, "T2star": 0.1, "PD": 0.03},
}

_ALIASES = {
    "t1": "T1", "t2star": "T2star", "t2s": "T2star", "t2*": "T2star", "pd": "PD",
}


def _canonical_feature(name: str) -> str:
    key = name.replace("_", "").lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown PGS feature {name!r}; use 'T1', 'T2star' or 'PD'")
    return _ALIASES[key]


def tissue_parameters() -> dict[str, dict[str, tuple[float, float]]]:
    """Literature tissue parameters ``{tissue: {"T1"|"T2star"|"PD": (mean, sd)}}`` in s / a.u.

    Means from :data:`physeg.simulation.tissues.TISSUE_PARAMETERS`, spreads from
    :data:`LITERATURE_SD`.
    """
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for tissue in TISSUES:
        p = TISSUE_PARAMETERS[tissue]
        sd = LITERATURE_SD[tissue]
        out[tissue] = {
            "T1": (float(p.t1_s), sd["T1"]),
            "T2star": (float(p.t2star_s), sd["T2star"]),
            "PD": (float(p.pd), sd["PD"]),
        }
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _log_gauss(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Log-density of independent Gaussians, summed over the last axis. x (N,F) -> (N,K)."""
    diff = x[:, None, :] - mean[None, :, :]
    return -0.5 * np.sum(diff**2 / var[None] + np.log(2.0 * math.pi * var[None]), axis=-1)


def fit_mixture(
    x: np.ndarray,
    *,
    features: Sequence[str] = ("T1",),
    priors: Sequence[float] | None = None,
    em_iterations: int = 0,
    parameters: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    min_sd_fraction: float = 0.05,
) -> dict[str, np.ndarray]:
    """Mixture parameters for feature vectors ``x`` (N, F), literature start, optional EM.

    Returns ``{"mean": (K,F), "var": (K,F), "prior": (K,), "features": tuple}``
    with :math:`K = 3` tissues in :data:`TISSUES` order. EM updates (responsibilities
    :math:`r_{nk}`): :math:`\\pi_k = \\bar r_k`,
    :math:`\\mu_k = \\sum_n r_{nk} x_n / \\sum_n r_{nk}`,
    :math:`\\sigma_k^2 = \\sum_n r_{nk}(x_n-\\mu_k)^2 / \\sum_n r_{nk}`; variances are
    floored at ``(min_sd_fraction * literature mean)^2`` to avoid collapse.
    """
    feats = tuple(_canonical_feature(f) for f in features)
    params = parameters or tissue_parameters()
    mean = np.array([[params[t][f][0] for f in feats] for t in TISSUES], dtype=np.float64)
    var = np.array([[params[t][f][1] ** 2 for f in feats] for t in TISSUES], dtype=np.float64)
    prior = np.full(len(TISSUES), 1.0 / len(TISSUES)) if priors is None else np.asarray(priors, float)
    prior = prior / prior.sum()
    floor = (min_sd_fraction * mean) ** 2
    x = np.asarray(x, dtype=np.float64)
    for _ in range(int(em_iterations)):
        log_r = _log_gauss(x, mean, var) + np.log(prior)[None]
        log_r -= log_r.max(axis=1, keepdims=True)
        r = np.exp(log_r)
        r /= r.sum(axis=1, keepdims=True)
        nk = r.sum(axis=0) + 1e-12
        prior = nk / nk.sum()
        mean = (r.T @ x) / nk[:, None]
        var = (r.T @ x**2) / nk[:, None] - mean**2
        var = np.maximum(var, floor)
    return {"mean": mean, "var": var, "prior": prior, "features": feats}


def _features_of(maps: np.ndarray, feats: Sequence[str]) -> np.ndarray:
    return np.stack([maps[MAP_CHANNELS.index(f)] for f in feats], axis=-1)


def pgs_posteriors(
    maps: Any,
    mask: Any,
    *,
    features: Sequence[str] = ("T1",),
    priors: Sequence[float] | None = None,
    em_iterations: int = 0,
    parameters: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tissue posteriors (3, X, Y, Z) float32 (zero outside the mask) and the mixture used.

    ``maps`` is the canonical (3, X, Y, Z) map array [PD a.u., T1 s, T2* s] (numpy or torch).
    Non-finite feature values inside the mask get the posterior of the mixture's
    priors (they carry no information).
    """
    m = _to_numpy(maps).astype(np.float64, copy=False)
    msk = _to_numpy(mask).astype(bool)
    if m.ndim != 4 or m.shape[0] != 3 or m.shape[1:] != msk.shape:
        raise ValueError(f"maps must be (3, X, Y, Z) matching mask {msk.shape}, got {m.shape}")
    feats = tuple(_canonical_feature(f) for f in features)
    x = _features_of(m, feats)[msk]
    finite = np.all(np.isfinite(x), axis=1)
    model = fit_mixture(
        x[finite], features=feats, priors=priors, em_iterations=em_iterations, parameters=parameters
    )
    log_r = _log_gauss(np.where(np.isfinite(x), x, 0.0), model["mean"], model["var"])
    log_r += np.log(model["prior"])[None]
    log_r[~finite] = np.log(model["prior"])[None]
    log_r -= log_r.max(axis=1, keepdims=True)
    r = np.exp(log_r)
    r /= r.sum(axis=1, keepdims=True)
    post = np.zeros((len(TISSUES),) + msk.shape, dtype=np.float32)
    post[:, msk] = r.T.astype(np.float32)
    return post, model


def physics_gold_standard(
    maps: Any,
    mask: Any,
    *,
    features: Sequence[str] = ("T1",),
    priors: Sequence[float] | None = None,
    em_iterations: int = 0,
    parameters: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> torch.Tensor:
    """PGS labels (X, Y, Z) int64: argmax of :func:`pgs_posteriors` inside ``mask``, 0 outside.

    Default (faithful to the paper's PGS): one Gaussian per tissue on the T1 map
    with literature mean and SD, equal priors, no refitting.
    """
    post, _ = pgs_posteriors(
        maps, mask, features=features, priors=priors, em_iterations=em_iterations,
        parameters=parameters,
    )
    msk = _to_numpy(mask).astype(bool)
    labels = np.zeros(msk.shape, dtype=np.int64)
    labels[msk] = np.argmax(post[:, msk], axis=0) + 1
    return torch.from_numpy(labels)


def tissue_volumes_ml(labels: Any, voxel_volume_ml: float) -> dict[str, float]:
    """Volume (ml) of each tissue label: :math:`V_k = N_k \\cdot v` with voxel volume v in ml.

    :func:`physeg.evaluation.metrics.volumes_ml` with this module's labels (``TISSUES[i]`` → ``i + 1``).
    """
    return metrics.volumes_ml(labels, voxel_volume_ml, {t: i + 1 for i, t in enumerate(TISSUES)})


def dice(a: Any, b: Any, *, label: int) -> float:
    """Dice overlap of one label in two label maps, 1.0 if both are empty.

    :func:`physeg.evaluation.metrics.dice` with ``empty=1.0``.
    """
    return metrics.dice(a, b, label, empty=1.0)


def truth_labels(truth: Any) -> torch.Tensor:
    """Hard labels from generating fractions (4, X, Y, Z) [bg, GM, WM, CSF]: argmax, int64."""
    return torch.from_numpy(np.argmax(_to_numpy(truth), axis=0).astype(np.int64))


#: Named PGS variants compared in the ablation (keyword arguments of :func:`physics_gold_standard`).
PGS_OPTIONS: dict[str, dict[str, Any]] = {
    "T1, literature (default)": {"features": ("T1",), "em_iterations": 0},
    "T1+T2*+PD, literature": {"features": ("T1", "T2star", "PD"), "em_iterations": 0},
    "T1, EM": {"features": ("T1",), "em_iterations": 20},
    "T1+T2*+PD, EM": {"features": ("T1", "T2star", "PD"), "em_iterations": 20},
}


def validate_pgs(
    subjects: Iterable[Any],
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Dice of each PGS variant against the truth argmax, per subject and tissue.

    ``subjects`` are :class:`physeg.data.Subject` objects with ``truth`` set.
    Returns rows ``{"subject", "option", "GM", "WM", "CSF"}``.
    """
    options = PGS_OPTIONS if options is None else options
    rows: list[dict[str, Any]] = []
    for subj in subjects:
        if subj.truth is None:
            raise ValueError(f"{subj.subject_id}: no ground-truth fractions to validate against")
        ref = truth_labels(subj.truth)
        for name, kwargs in options.items():
            lab = physics_gold_standard(subj.maps, subj.mask, **kwargs)
            row: dict[str, Any] = {"subject": subj.subject_id, "option": name}
            for i, tissue in enumerate(TISSUES):
                row[tissue] = dice(lab, ref, label=i + 1)
            rows.append(row)
    return rows
