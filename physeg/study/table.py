r"""The study table: ``volumes.tsv`` (one row per segmented scan) and ``failures.tsv`` (group level).

Built from the per-scan records (:mod:`physeg.study.derivatives`) alone, so
the group level can run after participant-level jobs on other machines.

Columns of ``volumes.tsv``: ``participant_id, session_id, scan, sequence,
protocol`` (e.g. ``MPRAGE TI=900 ms``), the BIDS parameters
(``InversionTime``, ``RepetitionTime``, ``EchoTime`` in s, ``FlipAngle`` in
degrees; empty when the sequence has none), ``in_distribution`` (inside the
model's training range), ``model``, ``model_sha256`` (SHA-256 of its
weights), ``uncertainty``, ``n_samples``, ``calibrated_50``,
``calibrated_95``; per tissue ``{GM,WM,CSF}_ml`` (sample median),
``_p50_low_ml``, ``_p50_high_ml``, ``_p95_low_ml``, ``_p95_high_ml``,
``_sd_aleatoric_ml``, ``_sd_epistemic_ml``, ``_label_map_ml``; ``seconds``;
``p50_rel_width``, the widest relative 50 % interval over the tissues,
:math:`\max_t (h_t - l_t)/m_t`; ``flags``; and, with protocol cards,
``{GM,WM,CSF}_card_bias_pct``, ``_card_cov_pct`` and ``card_n_subjects``
(:mod:`physeg.study.protocol_card`).

Flags: ``OoD`` (parameters outside the model's training range), ``wide``
(``p50_rel_width`` above ``wide_interval``, default 0.10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from physeg.conventions import TISSUES
from physeg.study.derivatives import write_text_atomic

#: Default threshold of the ``wide`` flag: 50 % interval wider than this fraction of the median.
WIDE_INTERVAL: float = 0.10
PARAMETER_COLUMNS: tuple[str, ...] = ("InversionTime", "RepetitionTime", "EchoTime", "FlipAngle")
VOLUME_FIELDS: tuple[str, ...] = ("p50_low_ml", "p50_high_ml", "p95_low_ml", "p95_high_ml", "sd_aleatoric_ml",
                                  "sd_epistemic_ml", "label_map_ml")
FAILURE_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "scan", "error")


def relative_width(volumes: Mapping[str, Mapping[str, Any]]) -> float:
    """Widest 50 % interval relative to its median over the tissues (0 when every median is 0)."""
    widths = [(v["p50_high_ml"] - v["p50_low_ml"]) / v["median_ml"] for v in volumes.values() if v["median_ml"] > 0]
    return float(max(widths)) if widths else 0.0


def flags_of(*, in_distribution: bool, p50_rel_width: float, wide_interval: float) -> str:
    """``"OoD"``, ``"wide"``, both (``"OoD;wide"``) or ``""``."""
    return ";".join(f for f, on in (("OoD", not in_distribution), ("wide", p50_rel_width > wide_interval)) if on)


def record_row(rec: Mapping[str, Any], *, wide_interval: float) -> dict[str, Any]:
    """One ``volumes.tsv`` row from a per-scan record."""
    params = rec.get("parameters", {})
    row: dict[str, Any] = {
        "participant_id": rec["participant_id"], "session_id": rec.get("session_id") or "", "scan": rec["scan"],
        "sequence": rec["sequence"], "protocol": rec["protocol"],
        **{c: params.get(c) for c in PARAMETER_COLUMNS},
        "in_distribution": bool(rec["in_distribution"]), "model": rec["model"]["name"],
        "model_sha256": rec["model"]["sha256"], "uncertainty": rec["model"]["uncertainty"],
        "n_samples": rec["n_samples"],
    }
    vols = rec["volumes"]
    row["calibrated_50"] = all(vols[t]["calibrated_50"] for t in TISSUES)
    row["calibrated_95"] = all(vols[t]["calibrated_95"] for t in TISSUES)
    for t in TISSUES:
        row[f"{t}_ml"] = vols[t]["median_ml"]
        row.update({f"{t}_{f}": vols[t][f] for f in VOLUME_FIELDS})
    row["seconds"] = rec.get("seconds")
    row["p50_rel_width"] = relative_width(vols)
    row["flags"] = flags_of(in_distribution=row["in_distribution"], p50_rel_width=row["p50_rel_width"],
                            wide_interval=wide_interval)
    return row


def study_table(records: Sequence[Mapping[str, Any]], *, wide_interval: float = WIDE_INTERVAL,
                cards: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """The ``volumes.tsv`` frame (module docstring); ``cards``: protocol-card key → card, see
    :func:`physeg.study.protocol_card.card_key`."""
    rows = [record_row(r, wide_interval=wide_interval) for r in records]
    table = pd.DataFrame(rows)
    if cards is not None and not table.empty:
        from physeg.study.protocol_card import card_columns, card_key

        extra = [card_columns(cards.get(card_key(r))) for r in records]
        table = pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1)
    return table


def write_study_tables(out: Path, *, table: pd.DataFrame, failures: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """``volumes.tsv`` and ``failures.tsv`` at the derivatives root (temporary name + rename)."""
    fail = pd.DataFrame(list(failures), columns=list(FAILURE_COLUMNS))
    return {
        "volumes": write_text_atomic(out / "volumes.tsv", table.to_csv(sep="\t", index=False, float_format="%.4g")),
        "failures": write_text_atomic(out / "failures.tsv", fail.to_csv(sep="\t", index=False)),
    }
