r"""Protocol card: what the model does at a scan's protocol, measured on simulated held-out subjects.

For a protocol :math:`\theta` (sequence and parameters, as read from the
sidecar), every held-out **test** subject :math:`j` of the profile's
synthetic cohort (never seen in training or model selection) is simulated at
:math:`\theta` (:func:`physeg.simulation.simulate`, paper §2.3) and segmented
by the model (deterministic pass, :meth:`~physeg.inference.predictor.Predictor.labels`).
With :math:`V_{tj}(\theta)` the model's volume of tissue :math:`t` and
:math:`P_{tj}` the physics gold standard's (§3.2):

* **bias** ``bias_pct`` :math:`= 100\,\big(\overline{V_{tj}(\theta)/P_{tj}} - 1\big)`,
  the expected relative volume error at this protocol (mean over subjects);
* **CoV** ``cov_pct``: how much a small protocol change moves the volume.
  Each parameter is moved by :math:`\pm\delta` (:data:`PERTURBATION`, 10 %;
  perturbed protocols that are invalid, e.g. TR ≤ TE, are left out); per
  subject the coefficient of variation (paper §4, ddof 1) of
  :math:`V_{tj}` over :math:`\theta` and its perturbations; the card gives
  the mean over subjects, in %.

Cards are cached per (model weights, protocol, profile) under
``<cache>/protocol_cards/<hash>/card.json`` (:func:`physeg.paths.hashed_dir`):
a study with many scans of few protocols simulates each protocol once.
The cohort must have the model's voxel size (the profile the model was
trained on); another is a :class:`~physeg.cli.errors.UsageError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from physeg.cli.errors import UsageError
from physeg.conventions import TISSUES
from physeg.data.acquisition import SIDECAR_KEYS, Acquisition
from physeg.study.derivatives import write_json_atomic

#: Relative change of each parameter for the card's CoV.
PERTURBATION: float = 0.10
CARD_VERSION: int = 1


def card_key(rec: Mapping[str, Any]) -> str:
    """Key of a record's protocol card: model weights, sequence and parameters (rounded to 1e-6)."""
    params = {k: round(float(v), 6) for k, v in sorted(rec["parameters"].items())}
    blob = json.dumps([rec["model"]["sha256"], rec["sequence"], params])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def card_columns(card: Mapping[str, Any] | None) -> dict[str, float]:
    """``{GM,WM,CSF}_card_bias_pct``, ``_card_cov_pct`` and ``card_n_subjects`` (NaN without a card)."""
    nan = float("nan")
    out = {}
    for t in TISSUES:
        out[f"{t}_card_bias_pct"] = card["tissues"][t]["bias_pct"] if card else nan
        out[f"{t}_card_cov_pct"] = card["tissues"][t]["cov_pct"] if card else nan
    out["card_n_subjects"] = card["n_subjects"] if card else nan
    return out


def perturbed_protocols(sequence: str, values: Mapping[str, float], *, delta: float = PERTURBATION
                        ) -> list[dict[str, float]]:
    """``values`` first, then each parameter times ``1 - delta`` and ``1 + delta`` (valid ones only)."""
    out = [dict(values)]
    for name in values:
        for f in (1 - delta, 1 + delta):
            v = dict(values)
            v[name] = values[name] * f
            if sequence == "SPGR" and v["TR"] <= v["TE"] or name == "FA" and v[name] > 180:
                continue
            out.append(v)
    return out


def card_from_volumes(vols: np.ndarray, pgs: np.ndarray) -> dict[str, Any]:
    """Card numbers from model volumes ``(S, K, 3)`` (subjects × protocols, θ first) and PGS ``(S, 3)``."""
    from physeg.evaluation.metrics import coefficient_of_variation

    tissues = {}
    for j, t in enumerate(TISSUES):
        ratio = vols[:, 0, j] / np.where(pgs[:, j] > 0, pgs[:, j], np.nan)
        covs = np.array([coefficient_of_variation(vols[s, :, j]) for s in range(vols.shape[0])]
                        if vols.shape[1] > 1 else [], float)
        covs, ratio = covs[np.isfinite(covs)], ratio[np.isfinite(ratio)]
        tissues[t] = {"bias_pct": float(100 * (ratio.mean() - 1)) if ratio.size else float("nan"),
                      "cov_pct": float(100 * covs.mean()) if covs.size else float("nan")}
    return {"tissues": tissues, "n_subjects": int(vols.shape[0]), "n_protocols": int(vols.shape[1])}


def compute_card(model, *, sequence: str, values: Mapping[str, float], profile, subjects: Sequence[Any]
                 ) -> dict[str, Any]:
    """Simulate ``subjects`` at the protocol and its perturbations, segment, summarise (module docstring).

    ``model``: a :class:`~physeg.study.models.StudyModel`; ``values`` in user
    units (TI/TR/TE s, FA degrees).
    """
    from physeg.evaluation.metrics import volumes_ml
    from physeg.simulation import simulate

    if not math.isclose(model.info.plans.voxel_size_mm, profile.voxel_size_mm):
        raise UsageError(f"protocol card: model {model.name} has {model.info.plans.voxel_size_mm} mm voxels but "
                         f"profile {profile.name}'s cohort {profile.voxel_size_mm} mm; pass the model's --profile")
    protocols = perturbed_protocols(sequence, values)
    params = torch.cat([Acquisition(sequence, p, "card").tensor() for p in protocols])
    predictor = model.predictor()
    vols, pgs = [], []
    for subject in subjects:
        images = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask)
        seg = [predictor.labels(images[k], params[k].float())[0] for k in range(len(protocols))]
        vols.append([[volumes_ml(s, subject.voxel_volume_ml)[t] for t in TISSUES] for s in seg])
        ref = volumes_ml(subject.pgs, subject.voxel_volume_ml)
        pgs.append([ref[t] for t in TISSUES])
    card = card_from_volumes(np.asarray(vols, float), np.asarray(pgs, float))
    return {**card, "subjects": [s.subject_id for s in subjects], "profile": profile.name,
            "perturbation": PERTURBATION, "protocols": protocols}


def protocol_cards(records: Sequence[Mapping[str, Any]], *, profile, device: str = "auto",
                   progress: bool = False) -> dict[str, dict[str, Any]]:
    """Card per distinct (model, protocol) of ``records``, each computed once and cached (module docstring).

    The model of a record is reopened from its folder and must still have the
    recorded weights (SHA-256), else :class:`UsageError`.
    """
    from physeg.data import load_split
    from physeg.paths import hashed_dir
    from physeg.study.models import open_model

    cards: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    subjects = None
    for rec in records:
        key = card_key(rec)
        if key in cards:
            continue
        values = {n: float(rec["parameters"][k]) for n, k in SIDECAR_KEYS.items() if k in rec["parameters"]}
        cfg = {"kind": "protocol_card", "version": CARD_VERSION, "model_sha256": rec["model"]["sha256"],
               "sequence": rec["sequence"], "values": values, "profile": profile.to_dict()}
        path = hashed_dir("protocol_cards", cfg) / "card.json"
        if path.is_file():
            cards[key] = json.loads(path.read_text())
            continue
        folder = rec["model"]["folder"]
        if folder not in models:
            models[folder] = open_model(folder, device=device)
            if models[folder].sha256 != rec["model"]["sha256"]:
                raise UsageError(f"protocol card: the weights in {folder} changed since {rec['scan']} was "
                                 "segmented; run the participant level again")
        if subjects is None:
            subjects = load_split(profile, "test", progress=progress)
        card = compute_card(models[folder], sequence=rec["sequence"], values=values, profile=profile,
                            subjects=subjects)
        write_json_atomic(path, card)
        cards[key] = card
    return cards
