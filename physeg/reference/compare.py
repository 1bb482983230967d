r"""Three column groups wherever numbers appear: this run, the committed reference, the paper.

The site's results pages (notebooks 04 and 06) show the numbers of the run
that just executed (smoke or demo), the committed reference results
(``results/reference/``, :mod:`physeg.reference.status`) and the paper's
Tables 1–2 (:func:`physeg.evaluation.paper_tables.paper_tables`) side by side,
under a banner saying where the reference came from and whether it is stale.

Units as in the paper: Dice, and CoV × 10³ (the results CSV stores CoV as a
fraction, :data:`physeg.evaluation.seeds.METRICS`). Per group: ``mean``,
``sd_subjects`` (SD across test subjects, what the paper reports in brackets)
and ``sd_seeds`` (SD across training seeds, empty for one seed and for the paper).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from physeg.reference.status import ABSENT, ALTERED, STALE, ReferenceStatus

KEYS: tuple[str, ...] = ("table", "model", "sequence", "tissue", "distribution")
VALUES: tuple[str, ...] = ("mean", "sd_subjects", "sd_seeds")
#: Metric of the results CSV → (table name of the paper's layout, scale to the paper's units).
TABLE_OF: dict[str, tuple[str, float]] = {"dice": ("dice", 1.0), "cov": ("cov_x1000", 1e3)}
REFERENCE_LABEL = "reference"
PAPER_LABEL = "paper"


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


def three_columns(current: pd.DataFrame | None, reference: pd.DataFrame | None, paper: pd.DataFrame, *,
                  current_label: str, table: str | None = None) -> pd.DataFrame:
    """One frame, rows = table cells, three column groups: ``current_label``, ``reference``, ``paper``.

    ``current`` and ``reference``: results CSVs (``tables.csv`` of notebook 04,
    or ``None`` when absent); ``paper``: :func:`~physeg.evaluation.paper_tables.paper_tables`.
    ``table``: ``"dice"`` or ``"cov_x1000"`` to keep one table. Cells a source
    lacks are NaN; the rows are the union of the three sources.
    """
    groups = {current_label: from_results_csv(current), REFERENCE_LABEL: from_results_csv(reference),
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


def claims_three_columns(current: pd.DataFrame | None, reference: pd.DataFrame | None, *,
                         current_label: str) -> pd.DataFrame:
    """Claims side by side: statement, this run's verdict, the reference's verdict, the paper's numbers.

    Both inputs are claims tables (:func:`physeg.evaluation.claims.evaluate_claims`,
    or ``claims.csv``); ``paper`` is the claim's criterion applied to the paper's
    own Tables 1–2 (``paper_numbers``), "n/a" where the paper gives no table.
    """
    cols = ["claim", "statement", "verdict", "paper_numbers"]
    base = [d[cols] for d in (current, reference) if d is not None and not d.empty]
    if not base:
        return pd.DataFrame(columns=["claim", "statement", current_label, REFERENCE_LABEL, PAPER_LABEL])
    rows = pd.concat(base).drop_duplicates("claim").set_index("claim")[["statement", "paper_numbers"]]
    for label, d in ((current_label, current), (REFERENCE_LABEL, reference)):
        verdicts = d.set_index("claim")["verdict"] if d is not None and not d.empty else pd.Series(dtype=object)
        rows[label] = verdicts.reindex(rows.index).fillna("–")
    rows = rows.rename(columns={"paper_numbers": PAPER_LABEL}).fillna({PAPER_LABEL: "n/a"})  # CSV reads "n/a" as NaN
    return rows[["statement", current_label, REFERENCE_LABEL, PAPER_LABEL]].sort_index().reset_index()


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
            + (f"; notebooks' wall time {total / 3600:.2f} h" if total else ""))


def banner(status: ReferenceStatus) -> str:
    """Markdown paragraph above the reference columns: where they came from, or why they are absent or stale."""
    where = f"`results/{status.profile}/`"
    if status.state == ABSENT:
        return (f"**Reference results: none committed** ({where} is absent), so the reference columns are empty "
                f"and only this run's and the paper's numbers are shown. To add them: `make paper "
                f"PROFILE={status.profile}`, then `physeg reference freeze --profile {status.profile}`.")
    if status.state == ALTERED:
        return (f"**Reference results NOT shown: {where} does not match its checksums.** "
                + " ".join(status.reasons))
    head = (f"**Reference results — STALE** ({'; '.join(status.reasons)}). They are what the code of their commit "
            "produced, not what this code would produce. " if status.state == STALE
            else "**Reference results** (current: profile and code versions match). ")
    return head + "From " + where + ": " + _provenance_line(status.provenance or {}) + "."


def side_by_side(current: pd.DataFrame | None, reference: pd.DataFrame | None, *, current_label: str,
                 values: list[str] | None = None) -> pd.DataFrame:
    """Two column groups, this run and the reference, for tables the paper has no numbers for.

    Both inputs are indexed alike (for example
    :func:`physeg.evaluation.calibration.coverage50_summary` of each run);
    ``values`` keeps some columns. Rows are the union; a source's missing cells are NaN.
    """
    frames = []
    for label, d in ((current_label, current), (REFERENCE_LABEL, reference)):
        if d is None or d.empty:
            continue
        d = d[values] if values is not None else d
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
