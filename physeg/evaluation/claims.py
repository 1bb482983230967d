"""The reproduction table: the paper's claims (abstract, §4, §5) checked against our results.

Every verdict is computed here from results tables — never typed by hand — and
is one of :data:`REPRODUCED`, :data:`NOT_REPRODUCED`, :data:`NOT_TESTABLE`,
:data:`INCONCLUSIVE`.

Seeds (claims 1–3)
    A difference between ablations that retraining with another seed could
    reverse is not evidence. When the summary has a ``seed`` column, each of
    claims 1–3 is judged on every seed's table separately: reproduced only if
    it holds on every seed, not reproduced only if it fails on every seed,
    :data:`INCONCLUSIVE` otherwise. With a single seed the seed-to-seed spread
    is unknown and the claim is :data:`NOT_TESTABLE` (the evidence still shows
    what that one seed gave).

Seeds (claims 4–5)
    The same rule, on the uncertainty variants' training seeds (the ``seed``
    column of the per-image uncertainty table; ``Profile.uncertainty_seeds``
    says how many a profile trains): one seed gives no verdict.

A claim whose inputs are missing (a model not trained in this profile, no
uncertainty results, no FA < 10° image) is "not testable here" with the reason.
Each row carries the operational criterion (with its thresholds), the numbers
behind the verdict, and the profile that produced them. Claims 1–3 are also
checked on the paper's own Tables 1–2 (column ``paper_numbers``), which shows
how the criterion reads the published numbers.

Inputs
------
``summary``  long table ``table, model, sequence, tissue, distribution, mean``
             (:func:`physeg.evaluation.paper_tables.our_tables` or ``paper_tables``).
``cov``      per-subject CoV (:func:`physeg.evaluation.metrics.cov_table`), optional, for tests.
``results``  image-level segmentation results, optional, for tests.
``uncertainty`` image-level uncertainty table of
             :func:`physeg.evaluation.runs.evaluate_uncertainty` (``model, sequence,
             distribution, tissue, var_aleatoric, var_epistemic, iqr_cal|iqr_raw,
             abs_error, low_fa``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from physeg.conventions import DISTRIBUTIONS, PAPER_TISSUES
from physeg.profiles import ABLATIONS, SEQUENCES

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
#: Claims 1–3 with several seeds: the seeds do not agree, so the claim is not
#: settled beyond the seed-to-seed variation.
INCONCLUSIVE = "inconclusive (seeds disagree)"

#: Claim 2: a physics model "does not sacrifice Dice" if its mean Dice is at
#: least the Baseline's minus this (absolute Dice).
DICE_TOLERANCE: float = 0.01
#: Claim 4: aleatoric variance is "≪" epistemic when their ratio is below this.
VARIANCE_RATIO_THRESHOLD: float = 0.1
#: Claim 5: significance level of the IQR-vs-error correlation test.
ALPHA: float = 0.01
#: Claim 5(c): "the Baseline's intervals do not track the error" is testable
#: only if a Spearman test on the available images would detect a moderate
#: correlation |ρ| ≥ this with probability :data:`POWER` (else a non-significant
#: test is lack of power, not evidence).
DETECTABLE_RHO: float = 0.5
POWER: float = 0.8

STATEMENTS = {
    1: "CoV decreases Baseline → Phys-Base → Phys-Strat → Phys-Strat-Aug, IoD and OoD, both sequences; "
       "the largest step comes from stratification",
    2: "Dice is not sacrificed: physics models ≥ Baseline, IoD and OoD",
    3: "Phys-Strat-Aug beats Phys-Strat more clearly for SPGR than for MPRAGE",
    4: "Aleatoric volume variance ≪ epistemic",
    5: "Phys-Strat-Aug intervals are wider OoD than IoD (MPRAGE) and widest for SPGR FA < 10°; "
       "Baseline intervals do not track the error",
}


def _combine(parts: Sequence[bool | None]) -> str:
    if any(p is False for p in parts):
        return NOT_REPRODUCED
    if any(p is None for p in parts) or not parts:
        return NOT_TESTABLE
    return REPRODUCED


def _row(claim: int, verdict: str, evidence: str, criterion: str) -> dict:
    return {"claim": claim, "statement": STATEMENTS[claim], "verdict": verdict,
            "evidence": evidence, "criterion": criterion}


def _cell_means(summary: pd.DataFrame, table: str, tissues=PAPER_TISSUES) -> pd.DataFrame:
    d = summary[(summary["table"] == table) & summary["tissue"].isin(tissues)]
    return d.groupby(["model", "sequence", "distribution"], observed=True)["mean"].mean()


def _missing(summary: pd.DataFrame, table: str, models, sequences) -> list[str]:
    d = summary[summary["table"] == table]
    have = set(zip(d["model"], d["sequence"]))
    return [f"{m}/{s}" for m in models for s in sequences if (m, s) not in have]


# --------------------------------------------------------------------------- claim 1
def claim_cov_order(summary: pd.DataFrame, *, models=ABLATIONS, sequences=SEQUENCES) -> dict:
    criterion = ("per sequence × distribution, CoV averaged over GM and WM strictly decreases along "
                 f"{' → '.join(models)}; and the largest step as a ratio (log CoV drop) is "
                 f"{models[1]} → {models[2]} (stratification)")
    miss = _missing(summary, "cov_x1000", models, sequences)
    if miss:
        return _row(1, NOT_TESTABLE, f"missing models: {', '.join(miss)}", criterion)
    c = _cell_means(summary, "cov_x1000")
    ev, order_ok, strat_ok = [], [], []
    for s in sequences:
        for d in DISTRIBUTIONS:
            try:
                v = np.array([c[(m, s, d)] for m in models], float)
            except KeyError:
                return _row(1, NOT_TESTABLE, f"no {s} {d} CoV", criterion)
            steps = -np.diff(np.log(np.maximum(v, 1e-12)))
            o = bool(np.all(np.diff(v) < 0))
            k = int(np.argmax(steps))
            order_ok.append(o)
            strat_ok.append(k == 1)
            ev.append(f"{s} {d}: " + " → ".join(f"{x:.2f}" for x in v)
                      + f" ({'decreasing' if o else 'not decreasing'}; largest step {models[k]}→{models[k + 1]})")
    verdict = _combine([all(order_ok), all(strat_ok)])
    head = (f"order holds in {sum(order_ok)}/{len(order_ok)} sequence×distribution cells, stratification "
            f"is the largest step in {sum(strat_ok)}/{len(strat_ok)}. CoV×10³: ")
    return _row(1, verdict, head + "; ".join(ev), criterion)


# --------------------------------------------------------------------------- claim 2
def claim_dice_not_sacrificed(
    summary: pd.DataFrame, *, models=ABLATIONS, sequences=SEQUENCES, tolerance: float = DICE_TOLERANCE,
    results: pd.DataFrame | None = None,
) -> dict:
    criterion = (f"every physics model's mean Dice ≥ Baseline − {tolerance} (absolute), for GM and WM, "
                 "IoD and OoD, both sequences")
    d = summary[(summary["table"] == "dice") & summary["tissue"].isin(PAPER_TISSUES)]
    base = models[0]
    if d[d["model"] == base].empty:
        return _row(2, NOT_TESTABLE, f"no {base} Dice", criterion)
    phys = [m for m in models[1:] if not d[d["model"] == m].empty]
    if not phys:
        return _row(2, NOT_TESTABLE, "no physics model Dice", criterion)
    w = d.pivot_table(index=["sequence", "tissue", "distribution"], columns="model", values="mean")
    margins = w[phys].sub(w[base], axis=0)
    worst = margins.stack().idxmin()
    ok = bool((margins.to_numpy()[np.isfinite(margins.to_numpy())] >= -tolerance).all())
    n_fail = int((margins < -tolerance).to_numpy().sum())
    ev = (f"{n_fail}/{margins.size} model×cell comparisons below tolerance; worst margin "
          f"{margins.stack().min():+.4f} ({worst[3]}, {worst[0]} {worst[1]} {worst[2]}); "
          f"mean margin per model: " + ", ".join(f"{m} {margins[m].mean():+.4f}" for m in phys))
    miss = [m for m in models[1:] if m not in phys]
    if miss:
        ev += f"; not trained here: {', '.join(miss)}"
    if results is not None:
        from physeg.evaluation.statistics import dice_comparisons
        cmp = dice_comparisons(results[results["tissue"].isin(PAPER_TISSUES)], unit="image",
                               pairs=[(m, base) for m in phys], n_boot=200)
        if not cmp.empty:
            worse = cmp[(cmp["p"] < ALPHA) & (cmp["median_diff"] < 0)]
            ev += (f"; image-level Wilcoxon: physics significantly below Baseline (p<{ALPHA}) in "
                   f"{len(worse)}/{len(cmp)} tests")
    return _row(2, REPRODUCED if ok else NOT_REPRODUCED, ev, criterion)


# --------------------------------------------------------------------------- claim 3
def claim_aug_spgr(summary: pd.DataFrame, *, cov: pd.DataFrame | None = None,
                   strat: str = "Phys-Strat", aug: str = "Phys-Strat-Aug") -> dict:
    criterion = (f"relative CoV reduction ({strat} − {aug}) / {strat}, averaged over GM/WM × IoD/OoD, "
                 "is positive for SPGR and larger for SPGR than for MPRAGE")
    miss = _missing(summary, "cov_x1000", (strat, aug), ("MPRAGE", "SPGR"))
    if miss:
        return _row(3, NOT_TESTABLE, f"missing models: {', '.join(miss)}", criterion)
    d = summary[(summary["table"] == "cov_x1000") & summary["tissue"].isin(PAPER_TISSUES)]
    w = d.pivot_table(index=["sequence", "tissue", "distribution"], columns="model", values="mean")
    rel = ((w[strat] - w[aug]) / w[strat]).groupby(level="sequence").mean()
    r_m, r_s = float(rel.get("MPRAGE", np.nan)), float(rel.get("SPGR", np.nan))
    ok = bool(r_s > 0 and r_s > r_m)
    ev = f"relative CoV reduction MPRAGE {r_m:+.1%}, SPGR {r_s:+.1%}"
    if cov is not None:
        from physeg.evaluation.statistics import cov_comparisons
        cmp = cov_comparisons(cov, pooled=True, tissues=PAPER_TISSUES, pairs=[(aug, strat)], n_boot=200)
        for r in cmp.itertuples():
            ev += (f"; {r.sequence} pooled Wilcoxon {aug} vs {strat} ({r.unit}, n={r.n}): "
                   f"p={r.p:.3g}, RBC={r.rbc:+.2f}")
    return _row(3, REPRODUCED if ok else NOT_REPRODUCED, ev, criterion)


# --------------------------------------------------------------------------- claim 4
def claim_aleatoric_negligible(uncertainty: pd.DataFrame | None, *,
                               threshold: float = VARIANCE_RATIO_THRESHOLD) -> dict:
    criterion = (f"mean aleatoric volume variance / mean epistemic volume variance over test images < "
                 f"{threshold}, for every uncertainty model and tissue (GM, WM)")
    if uncertainty is None or uncertainty.empty:
        return _row(4, NOT_TESTABLE, "no uncertainty results in this profile", criterion)
    u = uncertainty[uncertainty["tissue"].isin(PAPER_TISSUES)]
    if not {"var_aleatoric", "var_epistemic"} <= set(u.columns):
        return _row(4, NOT_TESTABLE, "aleatoric or epistemic samples missing", criterion)
    g = u.groupby(["model", "tissue"], observed=True)[["var_aleatoric", "var_epistemic"]].mean()
    g = g.dropna()
    if g.empty:
        return _row(4, NOT_TESTABLE, "aleatoric or epistemic samples missing", criterion)
    ratio = g["var_aleatoric"] / g["var_epistemic"].where(g["var_epistemic"] > 0)
    ev = "; ".join(f"{m} {t}: var_a={r.var_aleatoric:.3g} ml², var_e={r.var_epistemic:.3g} ml², "
                   f"ratio={ratio[(m, t)]:.3g}" for (m, t), r in g.iterrows())
    parts = [None if not np.isfinite(r) else bool(r < threshold) for r in ratio]
    if ratio.isna().any():
        ev = "epistemic variance is zero for some model/tissue (ratio undefined): " + ev
    return _row(4, _combine(parts), ev, criterion)


# --------------------------------------------------------------------------- claim 5
def detectable_rho(n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    r"""Smallest |ρ| a two-sided correlation test on ``n`` pairs detects with ``power``.

    Fisher's approximation (used for Spearman's ρ as well):
    :math:`|\rho_{min}| = \tanh\big((z_{1-\alpha/2} + z_{power}) / \sqrt{n - 3}\big)`;
    1 for ``n ≤ 3``.
    """
    if n <= 3:
        return 1.0
    return float(np.tanh((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) / np.sqrt(n - 3)))


def claim_intervals(uncertainty: pd.DataFrame | None, *, aug: str = "Phys-Strat-Aug",
                    base: str = "Baseline", tissues=PAPER_TISSUES, alpha: float = ALPHA) -> dict:
    criterion = (f"(a) {aug} MPRAGE mean calibrated IQR OoD > IoD for GM and WM; (b) {aug} SPGR mean IQR of "
                 f"FA < 10° images > that of the other OoD images and > that of the IoD images, GM and WM; (c) {base}: Spearman correlation "
                 f"of IQR with |volume error| not significant (p ≥ {alpha}) for each sequence × tissue "
                 "(a constant IQR counts as not tracking)")
    if uncertainty is None or uncertainty.empty:
        return _row(5, NOT_TESTABLE, "no uncertainty results in this profile", criterion)
    col = "iqr_cal" if "iqr_cal" in uncertainty.columns and uncertainty["iqr_cal"].notna().any() else "iqr_raw"
    u = uncertainty[uncertainty["tissue"].isin(tissues)]
    kind = "calibrated (the paper's percentile form)" if col == "iqr_cal" else "raw (uncalibrated)"
    parts, ev = [], [f"IQR = {kind} 50 % interval"]

    a = u[(u["model"] == aug) & (u["sequence"] == "MPRAGE")]
    if a.empty or set(a["distribution"]) < set(DISTRIBUTIONS):
        parts.append(None)
        ev.append(f"(a) not testable: no {aug} MPRAGE IoD+OoD results")
    elif not (a[col] > 0).any():
        parts.append(None)
        ev.append(f"(a) not testable: every {aug} MPRAGE interval has zero width (no spread in the samples)")
    else:
        m = a.groupby(["tissue", "distribution"], observed=True)[col].mean().unstack()
        ok = bool((m["OoD"] > m["IoD"]).all())
        parts.append(ok)
        ev.append("(a) " + ", ".join(f"{t} IoD {r.IoD:.3g} vs OoD {r.OoD:.3g} ml" for t, r in m.iterrows()))

    b = u[(u["model"] == aug) & (u["sequence"] == "SPGR")]
    if b.empty or "low_fa" not in b.columns or not b["low_fa"].any() or b["low_fa"].all():
        parts.append(None)
        ev.append(f"(b) not testable: no {aug} SPGR results with and without FA < 10°")
    elif not (b[col] > 0).any():
        parts.append(None)
        ev.append(f"(b) not testable: every {aug} SPGR interval has zero width (no spread in the samples)")
    else:
        grp = np.where(b["low_fa"], "FA<10°", np.where(b["distribution"] == "OoD", "other OoD", "IoD"))
        m = b.assign(group=grp).groupby(["tissue", "group"], observed=True)[col].mean().unstack()
        others = [g for g in ("IoD", "other OoD") if g in m.columns]
        ok = bool(all((m["FA<10°"] > m[g]).all() for g in others))
        parts.append(ok)
        ev.append("(b) " + ", ".join(f"{t} " + " vs ".join(f"{g} {r[g]:.3g}" for g in ["FA<10°", *others]) + " ml"
                                     for t, r in m.iterrows()))

    c = u[u["model"] == base]
    if c.empty or "abs_error" not in c.columns:
        parts.append(None)
        ev.append(f"(c) not testable: no {base} uncertainty results")
    else:
        track, txt, powered = [], [], []
        for (s, t), g in c.groupby(["sequence", "tissue"], observed=True):
            x, y = g[col].to_numpy(float), g["abs_error"].to_numpy(float)
            if len(g) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
                rho, p = float("nan"), float("nan")
            else:
                rho, p = sps.spearmanr(x, y)
            track.append(bool(np.isfinite(p) and p < alpha))
            powered.append(detectable_rho(len(g), alpha=alpha) <= DETECTABLE_RHO)
            txt.append(f"{s} {t} rho={rho:+.2f} p={p:.3g} (n={len(g)}, detectable |rho| ≥ "
                       f"{detectable_rho(len(g), alpha=alpha):.2f} at power {POWER})")
        if any(track):
            parts.append(False)
        elif not all(powered):
            parts.append(None)
            txt.append(f"not testable: too few images to detect |rho| = {DETECTABLE_RHO} with power {POWER}, "
                       "so a non-significant test is no evidence")
        else:
            parts.append(True)
        ev.append(f"(c) {base}: " + ", ".join(txt))
        pa = u[u["model"] == aug]
        if not pa.empty:
            txt = []
            for (s, t), g in pa.groupby(["sequence", "tissue"], observed=True):
                x, y = g[col].to_numpy(float), g["abs_error"].to_numpy(float)
                rho = sps.spearmanr(x, y)[0] if len(g) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
                txt.append(f"{s} {t} rho={rho:+.2f}")
            ev.append(f"for contrast {aug}: " + ", ".join(txt))
    return _row(5, _combine(parts), "; ".join(ev), criterion)


# --------------------------------------------------------------------------- table
def _across_seeds(claim_fn, table: pd.DataFrame | None, *, on_means: bool = True, **kw) -> dict:
    """Judge a claim on every training seed's rows of ``table`` (module docstring, "Seeds").

    ``table`` is the summary (claims 1–3) or the per-image uncertainty table
    (claims 4–5); its ``seed`` column names the training seed (absent: one
    seed). ``on_means``: the evidence ends with the criterion on the seed means
    of a summary (claims 1–3); otherwise with each seed's own evidence.
    """
    if table is None or table.empty:
        return claim_fn(table, **kw)
    seeds = sorted(table["seed"].unique()) if "seed" in table else [None]
    rows = {sd: claim_fn(table if sd is None else table[table["seed"] == sd], **kw) for sd in seeds}
    verdicts = [r["verdict"] for r in rows.values()]
    first = next(iter(rows.values()))
    if NOT_TESTABLE in verdicts:
        sd, row = next((sd, r) for sd, r in rows.items() if r["verdict"] == NOT_TESTABLE)
        return row if len(seeds) < 2 else {**row, "evidence": f"not testable on seed {sd}: {row['evidence']}"}
    if len(seeds) < 2:
        on_one = "holds" if verdicts[0] == REPRODUCED else "does not hold"
        return {**first, "verdict": NOT_TESTABLE,
                "evidence": f"one training seed, so the seed-to-seed spread is unknown (on this seed the "
                            f"criterion {on_one}): {first['evidence']}"}
    per_seed = ", ".join(f"seed {sd}: {r['verdict']}" for sd, r in rows.items())
    if all(v == REPRODUCED for v in verdicts):
        verdict = REPRODUCED
    elif all(v == NOT_REPRODUCED for v in verdicts):
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    if on_means:
        detail = f"on the seed means: {claim_fn(_seed_means(table), **kw)['evidence']}"
    else:
        detail = "; ".join(f"seed {sd}: {r['evidence']}" for sd, r in rows.items())
    return {**first, "verdict": verdict, "evidence": f"{len(seeds)} seeds ({per_seed}); {detail}"}


def _seed_means(summary: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in ("table", "model", "sequence", "tissue", "distribution") if k in summary]
    return summary.groupby(keys, observed=True, as_index=False)["mean"].mean()


def evaluate_claims(
    summary: pd.DataFrame | None,
    *,
    profile: str,
    cov: pd.DataFrame | None = None,
    results: pd.DataFrame | None = None,
    uncertainty: pd.DataFrame | None = None,
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The claims table: ``claim, statement, verdict, evidence, criterion, profile, paper_numbers``.

    ``paper_numbers``: the verdict of the same criterion on the paper's own
    Tables 1–2 (claims 1–3), "n/a" otherwise.
    """
    if paper is None:
        from physeg.evaluation.paper_tables import paper_tables
        paper = paper_tables()
    empty = pd.DataFrame(columns=["table", "model", "sequence", "tissue", "distribution", "mean"])
    s = summary if summary is not None else empty
    rows = [
        _across_seeds(claim_cov_order, s),
        _across_seeds(claim_dice_not_sacrificed, s, results=results),
        _across_seeds(claim_aug_spgr, s, cov=cov),
        _across_seeds(claim_aleatoric_negligible, uncertainty, on_means=False),
        _across_seeds(claim_intervals, uncertainty, on_means=False),
    ]
    on_paper = {1: claim_cov_order(paper)["verdict"], 2: claim_dice_not_sacrificed(paper)["verdict"],
                3: claim_aug_spgr(paper)["verdict"]}
    out = pd.DataFrame(rows)
    out["profile"] = profile
    out["paper_numbers"] = out["claim"].map(on_paper).fillna("n/a")
    return out


def summary_prose(claims: pd.DataFrame) -> str:
    """Markdown paragraph(s) summarising the claims table — generated, never hand-written."""
    profile = ", ".join(sorted(set(claims["profile"])))
    counts = claims["verdict"].value_counts()
    parts = [f"With the **{profile}** profile, of {len(claims)} claims: {counts.get(REPRODUCED, 0)} reproduced, "
             f"{counts.get(NOT_REPRODUCED, 0)} not reproduced, {counts.get(INCONCLUSIVE, 0)} inconclusive "
             f"(seeds disagree), {counts.get(NOT_TESTABLE, 0)} not testable here."]
    for r in claims.itertuples():
        line = f"- Claim {r.claim} ({r.statement}): **{r.verdict}**. {r.evidence}."
        if r.paper_numbers != "n/a":
            line += f" The same criterion applied to the paper's own table gives: {r.paper_numbers}."
        parts.append(line)
    if "smoke" in profile:
        parts.append("The smoke profile trains for a few steps on tiny volumes: it checks that the chain "
                     "runs end to end; its verdicts say nothing about the science.")
    return "\n".join(parts)
