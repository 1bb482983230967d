"""Why a claim may not reproduce here: causes the run itself can measure.

A verdict on the paper's claims is only as good as the models behind it. Four
properties of a short CPU run can make a claim fail for reasons that are ours,
not the paper's, and each is measured from the run's own tables:

1. **Convergence.** Phys-Strat-Aug's in-distribution Dice against the PGS,
   beside the PGS-vs-truth ceiling (:mod:`physeg.evaluation.ceiling`): a model
   far below the ceiling is still learning, and its CoV mixes invariance with
   unfinished training.
2. **Seed spread.** For each step between consecutive ablations (§4), the CoV
   change beside the seed-to-seed SD of the two cells
   (:func:`physeg.evaluation.seeds.spread_table`): a step smaller than the
   spread is retraining noise, whichever way it points.
3. **Equal steps.** Stratified batches (§2.2) hold ``batch_size`` realisations of
   one patch, so in the same steps the stratified models see ``batch_size``
   times fewer distinct patches than the mixed ones; their Dice deficit against
   the mixed models is shown beside that factor.
4. **Missing tissue.** A model that (almost) never segments a tissue has no
   volume to keep invariant: its CoV for that tissue measures nothing, and a
   claim read off such cells is empty. Every model × sequence whose mean
   in-distribution Dice for a tissue is below :data:`MISSING_DICE` is listed.
5. **Uncertainty models** (claims 4-5). The epistemic variance grows with the
   dropout rate, which the paper fixes at 0.5 and a CPU profile may lower, so
   claim 4's ratio is read beside the rate; and the epistemic median volumes'
   bias against the PGS, which claim 5's intervals are centred on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from physeg.conventions import IOD
from physeg.evaluation.seeds import across_seeds, spread_table

__all__ = ["diagnose"]

MIXED: tuple[str, ...] = ("Baseline", "Phys-Base")
STRATIFIED: tuple[str, ...] = ("Phys-Strat", "Phys-Strat-Aug")
#: In-distribution Dice below which a tissue counts as not segmented by a model.
MISSING_DICE: float = 0.05


def _convergence(summary: pd.DataFrame, ceiling: pd.DataFrame | None) -> str:
    d = summary[(summary["table"] == "dice") & (summary["distribution"] == IOD)
                & (summary["model"] == "Phys-Strat-Aug")]
    cells = ", ".join(f"{r.sequence} {r.tissue} {r.mean:.2f}" for r in d.itertuples())
    line = f"**Convergence.** Phys-Strat-Aug, in-distribution Dice against the PGS (mean over seeds): {cells}."
    if ceiling is not None and not ceiling.empty:
        ceil = ", ".join(f"{r.tissue} {r.mean:.2f}" for r in ceiling.itertuples())
        gap = d["tissue"].map(ceiling.set_index("tissue")["mean"]) - d["mean"]
        gm_wm = gap[d["tissue"].isin(["GM", "WM"])].max()
        csf = gap[d["tissue"] == "CSF"].max()
        line += (f" The PGS itself scores {ceil} against the truth; the model stays up to {gm_wm:.2f} Dice below "
                 f"that ceiling for GM/WM and {csf:.2f} for CSF, so it is still learning and its CoV is not yet a "
                 "property of the method alone.")
    return line


def _spread(summary: pd.DataFrame) -> str:
    steps = spread_table(summary)
    if steps.empty or steps["seed_sd_a"].isna().all():
        return ("**Seed spread.** One training seed: the seed-to-seed spread is unknown, so no step between "
                "ablations can be told apart from retraining noise.")
    beyond = steps["decrease_beyond_spread"].dropna()
    sd = np.hypot(steps["seed_sd_a"], steps["seed_sd_b"])  # both in CoV × 10³, as the table
    return (f"**Seed spread.** Of {len(steps)} CoV steps between consecutive ablations (GM, WM; every sequence and "
            f"distribution), {int(beyond.sum())} are decreases larger than their combined seed-to-seed SD. The "
            f"median step is {np.median(np.abs(steps['diff'])):.1f} × 10⁻³ against a median combined seed SD "
            f"of {np.nanmedian(sd):.1f} × 10⁻³: retraining with another seed moves a cell about as much as "
            "changing the model.")


def _equal_steps(summary: pd.DataFrame, *, batch_size: int) -> str:
    d = summary[(summary["table"] == "dice") & summary["tissue"].isin(["GM", "WM"])]
    mixed = d[d["model"].isin(MIXED)]["mean"].mean()
    strat = d[d["model"].isin(STRATIFIED)]["mean"].mean()
    return (f"**Equal steps.** Stratified batches show the network {batch_size}× fewer distinct patches in the same "
            f"steps. Mean GM/WM Dice over every sequence and distribution: mixed models (Baseline, Phys-Base) "
            f"{mixed:.3f}, stratified models (Phys-Strat, Phys-Strat-Aug) {strat:.3f} (mixed − stratified "
            f"{mixed - strat:+.3f}); in a short run that difference cannot be separated from the smaller amount of "
            "anatomy the stratified models saw.")


def _missing_tissue(summary: pd.DataFrame) -> str:
    d = summary[(summary["table"] == "dice") & (summary["distribution"] == IOD)]
    low = d[d["mean"] < MISSING_DICE]
    if low.empty:
        return (f"**Missing tissue.** Every model segments every tissue in distribution (Dice ≥ {MISSING_DICE} "
                "against the PGS in every cell).")
    cells = "; ".join(f"{seq} {tissue}: " + ", ".join(f"{r.model} {r.mean:.2f}" for r in g.itertuples())
                      for (seq, tissue), g in low.groupby(["sequence", "tissue"], sort=True))
    return (f"**Missing tissue.** In distribution, these models segment a tissue with Dice below {MISSING_DICE} "
            f"(mean over seeds): {cells}. Their CoV for that tissue is the spread of an (almost) empty volume, "
            "not invariance: a claim that rests on those cells says nothing about the method.")


def _uncertainty(per_image: pd.DataFrame | None, *, epistemic_dropout: float | None) -> str:
    if per_image is None or per_image.empty or "epi_median" not in per_image:
        return "**Uncertainty models.** No uncertainty samples in this run."
    d = per_image[(per_image["distribution"] == IOD) & per_image["tissue"].isin(["GM", "WM"])]
    bias = (d["epi_median"] - d["pgs_volume_ml"]).groupby([d["model"], d["sequence"], d["tissue"]]).mean()
    cells = ", ".join(f"{m} {s} {t} {b:+.0f}" for (m, s, t), b in bias.items())
    rate = "" if epistemic_dropout is None else f"use dropout {epistemic_dropout:g} after every convolution (the paper's is 0.5); they "
    n_seeds = int(per_image["seed"].nunique()) if "seed" in per_image else 1
    seeds = ("one training seed (claims 4-5 therefore give no verdict)" if n_seeds == 1
             else f"{n_seeds} training seeds (bias below: mean over seeds)")
    return (f"**Uncertainty models.** The epistemic models {rate}come from {seeds}. Their epistemic "
            "volume variance grows with the dropout rate while the aleatoric one does not, so claim 4's ratio "
            "depends on a rate the method leaves free. Mean bias of their median volume against the PGS, in "
            f"distribution (ml): {cells}; claim 5's intervals are centred there, and only a calibration that "
            "moves them (notebook 05's located form) can make such intervals cover the PGS volume.")


def diagnose(per_seed: pd.DataFrame, *, ceiling: pd.DataFrame | None, batch_size: int,
             uncertainty: pd.DataFrame | None = None, epistemic_dropout: float | None = None) -> str:
    """Markdown: the measured causes of the module docstring, one paragraph each.

    ``per_seed``: the per-seed long tables (:func:`physeg.evaluation.seeds.evaluate_seeds`);
    ``ceiling``: :func:`physeg.evaluation.ceiling.ceiling_summary` (``None`` without ground truth);
    ``batch_size``: the profile's training batch size; ``uncertainty``: the per-image
    uncertainty table (:func:`physeg.evaluation.interval_scores.score_uncertainty`) and
    ``epistemic_dropout`` the profile's rate, for the fifth paragraph (left out without them).
    """
    summary = across_seeds(per_seed)
    parts = [_convergence(summary, ceiling), _spread(summary), _equal_steps(summary, batch_size=batch_size),
             _missing_tissue(summary)]
    if uncertainty is not None:
        parts.append(_uncertainty(uncertainty, epistemic_dropout=epistemic_dropout))
    return "\n\n".join(parts)
