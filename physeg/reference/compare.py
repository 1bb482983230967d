r"""Column groups wherever numbers appear: this run, the committed runs, the paper.

The site's results pages (notebooks 03–06) show the numbers of the run that
just executed (smoke or demo), those of each committed run
(``results/reference/`` and ``results/reference-long/``,
:mod:`physeg.reference.status`) and the paper's Tables 1–2
(:func:`physeg.evaluation.paper_tables.paper_tables`) side by side, under one
banner per committed run saying where it came from and whether it is stale.

Every function takes the committed runs as one frame (shown as ``reference``)
or as a mapping ``{label: frame}``, one column group each, in the mapping's order.

Units as in the paper: Dice, and CoV × 10³ (the results CSV stores CoV as a
fraction, :data:`physeg.evaluation.seeds.METRICS`). Per group: ``mean``,
``sd_subjects`` (SD across test subjects, what the paper reports in brackets)
and ``sd_seeds`` (SD across training seeds, empty for one seed and for the paper).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from physeg.reference.status import ABSENT, ALTERED, STALE, ReferenceStatus

KEYS: tuple[str, ...] = ("table", "model", "sequence", "tissue", "distribution")
VALUES: tuple[str, ...] = ("mean", "sd_subjects", "sd_seeds")
#: Metric of the results CSV → (table name of the paper's layout, scale to the paper's units).
TABLE_OF: dict[str, tuple[str, float]] = {"dice": ("dice", 1.0), "cov": ("cov_x1000", 1e3)}
REFERENCE_LABEL = "reference"
PAPER_LABEL = "paper"

#: One committed run's frame, or several as ``{label: frame}`` (``None``: that run has none).
Committed = pd.DataFrame | None | Mapping[str, "pd.DataFrame | None"]


def _committed(reference: Committed) -> dict[str, pd.DataFrame | None]:
    """``{label: frame}`` of the committed runs (a single frame is labelled ``reference``)."""
    if isinstance(reference, Mapping):
        return dict(reference)
    return {REFERENCE_LABEL: reference}


def from_results_csv(frame: pd.DataFrame | None) -> pd.DataFrame:
    """A results CSV (``model, sequence, tissue, distribution, metric, mean, sd, sd_subjects``) in the paper's units."""
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[*KEYS, *VALUES])
    d = frame[frame["metric"].isin(TABLE_OF)].copy()
    scale = d["metric"].map(lambda m: TABLE_OF[m][1]).astype(float)
    d["table"] = d["metric"].map(lambda m: TABLE_OF[m][0])
    d["sd_seeds"] = d["sd"] * scale if "sd" in d else np.nan
    d["sd_subjects"] = d["sd_subjects"] * scale if "sd_subjects" in d else np.nan
    d["mean"] = d["mean"] * scale
    return d[[*KEYS, *VALUES]]


def from_paper(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's long tables (``table, …, mean, sd``): ``sd`` is across subjects; no seed SD."""
    d = paper.rename(columns={"sd": "sd_subjects"}).assign(sd_seeds=np.nan)
    return d[[*KEYS, *VALUES]]


def three_columns(current: pd.DataFrame | None, reference: Committed, paper: pd.DataFrame, *,
                  current_label: str, table: str | None = None) -> pd.DataFrame:
    """One frame, rows = table cells, column groups: ``current_label``, each committed run, ``paper``.

    ``current`` and each committed frame: results CSVs (``tables.csv`` of notebook 04,
    or ``None`` when absent); ``paper``: :func:`~physeg.evaluation.paper_tables.paper_tables`.
    ``table``: ``"dice"`` or ``"cov_x1000"`` to keep one table. Cells a source
    lacks are NaN; the rows are the union of the sources.
    """
    groups = {current_label: from_results_csv(current),
              **{label: from_results_csv(d) for label, d in _committed(reference).items()},
              PAPER_LABEL: from_paper(paper)}
    frames = []
    for label, d in groups.items():
        if table is not None:
            d = d[d["table"] == table]
        d = d.set_index(list(KEYS))[list(VALUES)]
        d.columns = pd.MultiIndex.from_product([[label], VALUES])
        frames.append(d)
    out = pd.concat(frames, axis=1, join="outer")
    return out.sort_index()


def claims_three_columns(current: pd.DataFrame | None, reference: Committed, *,
                         current_label: str) -> pd.DataFrame:
    """Claims side by side: statement, this run's verdict, each committed run's verdict, the paper's numbers.

    Every input is a claims table (:func:`physeg.evaluation.claims.evaluate_claims`,
    or ``claims.csv``); ``paper`` is the claim's criterion applied to the paper's
    own Tables 1–2 (``paper_numbers``), "n/a" where the paper gives no table.
    """
    sources = {current_label: current, **_committed(reference)}
    columns = ["statement", *sources, PAPER_LABEL]
    cols = ["claim", "statement", "verdict", "paper_numbers"]
    base = [d[cols] for d in sources.values() if d is not None and not d.empty]
    if not base:
        return pd.DataFrame(columns=["claim", *columns])
    rows = pd.concat(base).drop_duplicates("claim").set_index("claim")[["statement", "paper_numbers"]]
    for label, d in sources.items():
        verdicts = d.set_index("claim")["verdict"] if d is not None and not d.empty else pd.Series(dtype=object)
        rows[label] = verdicts.reindex(rows.index).fillna("–")
    rows = rows.rename(columns={"paper_numbers": PAPER_LABEL}).fillna({PAPER_LABEL: "n/a"})  # CSV reads "n/a" as NaN
    return rows[columns].sort_index().reset_index()


def _provenance_line(prov: dict) -> str:
    machine = prov.get("machine", {})
    wall = prov.get("wall_time", {})
    total = wall.get("notebooks_total_s")
    dirty = " (dirty checkout)" if prov.get("dirty") else ""
    run_commits = ", ".join(prov.get("run", {}).get("commits", [])) or "?"
    precision = ", ".join(sorted({p.split(":")[0] for p in prov.get("precision") or []})) or "?"
    return (f"profile `{prov.get('profile')}` (settings hash `{prov.get('profile_hash')}`), run at commit(s) "
            f"`{run_commits}`, frozen at `{prov.get('commit')}`{dirty} on {prov.get('frozen_utc')}; "
            f"machine {machine.get('cpu_model')}, {machine.get('cpu_cores')} cores"
            + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
            + f", torch {machine.get('torch')}, precision {precision}"
            + (f"; notebooks' wall time {total / 3600:.2f} h" if total else "")
            + _training_line(prov.get("training") or {}))


def _training_line(training: dict) -> str:
    devices = ", ".join(training.get("devices") or [])
    note = training.get("note")
    return (f"; models trained on {devices or '?'}" + (f" ({note})" if note else "")) if devices or note else ""


def banner(status: ReferenceStatus) -> str:
    """Markdown paragraph above the reference columns: where they came from, or why they are absent or stale."""
    where = f"`results/{status.profile}/`"
    name = "Reference results" if status.profile == REFERENCE_LABEL else f"Committed results `{status.profile}`"
    if status.state == ABSENT:
        return (f"**{name}: none committed** ({where} is absent), so the `{status.profile}` columns are empty. "
                f"To add them: `make paper PROFILE={status.profile}`, then "
                f"`physeg reference freeze --profile {status.profile}`.")
    if status.state == ALTERED:
        return (f"**{name} NOT shown: {where} does not match its checksums.** "
                + " ".join(status.reasons))
    head = (f"**{name} — STALE** ({'; '.join(status.reasons)}). They are what the code of their commit "
            "produced, not what this code would produce. " if status.state == STALE
            else f"**{name}** (current: profile and code versions match). ")
    return head + "From " + where + ": " + _provenance_line(status.provenance or {}) + "."


def banners(runs: Mapping[str, ReferenceStatus]) -> str:
    """:func:`banner` of every committed run (:func:`physeg.reference.status.committed_runs`), one paragraph each."""
    return "\n\n".join(banner(st) for st in runs.values())


def committed_tables(runs: Mapping[str, ReferenceStatus], name: str) -> dict[str, pd.DataFrame | None]:
    """``{label: table}``: the frozen table ``name`` (``"tables"``, ``"claims"``, …) of each committed run."""
    return {label: st.table(name) for label, st in runs.items()}


def verdict_changes(claims: Mapping[str, pd.DataFrame | None]) -> list[str]:
    """One Markdown line per claim whose verdict differs between the runs of ``claims`` (``{label: claims table}``).

    Runs without a claims table are left out; an empty list means every run that has one agrees.
    """
    verdicts = pd.DataFrame({label: d.set_index("claim")["verdict"] for label, d in claims.items()
                             if d is not None and not d.empty})
    if verdicts.shape[1] < 2:
        return []
    return [f"- Claim {claim}: " + "; ".join(f"`{label}` {v}" for label, v in row.fillna("–").items())
            for claim, row in verdicts.iterrows() if row.nunique(dropna=False) > 1]


def side_by_side(current: pd.DataFrame | None, reference: Committed, *, current_label: str,
                 values: list[str] | None = None) -> pd.DataFrame:
    """Column groups, this run and each committed run, for tables the paper has no numbers for.

    All inputs are indexed alike (for example
    :func:`physeg.evaluation.interval_scores.coverage50_summary` of each run);
    ``values`` keeps some columns (those a source has: a run frozen before a
    column existed lacks it). Rows are the union; a source's missing cells are NaN.
    """
    frames = []
    for label, d in {current_label: current, **_committed(reference)}.items():
        if d is None or d.empty:
            continue
        d = d[[c for c in values if c in d]] if values is not None else d
        d = d.copy()
        d.columns = pd.MultiIndex.from_product([[label], list(d.columns)])
        frames.append(d)
    return pd.concat(frames, axis=1, join="outer").sort_index() if frames else pd.DataFrame()


def model_validation(models: pd.DataFrame | None) -> pd.DataFrame | None:
    """Validation Dice per model × sequence, mean over training seeds, with ``epochs`` trained and ``n_seeds``.

    ``models``: ``finished.json`` rows (notebook 03's summary, or the reference's ``models.csv``).
    """
    if models is None or models.empty:
        return None
    cols = [c for c in ("val_dice_GM", "val_dice_WM", "val_dice_CSF", "epochs") if c in models]
    g = models.groupby(["model", "sequence"], sort=False)
    return g[cols].mean().assign(n_seeds=g.size())
