"""The study report: one static, offline HTML page (``report.html`` at the derivatives root).

Every scan is a row, flagged ones first (failed, then out-of-distribution
protocol, then a wide 50 % interval, see :mod:`physeg.study.table`), with its
protocol, model, GM/WM/CSF volumes with their 50 % and 95 % intervals, the
protocol card when computed, and its QC figure (a relative link: the page
works from any copy of the derivatives folder, with no network). Clicking a
column header sorts the table (a few lines of inline JavaScript, numeric
where the cells are numbers; a failed scan's row, whose error spans the
volume columns, sorts as empty there).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from physeg.conventions import TISSUES
from physeg.study.derivatives import write_text_atomic

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#eee;cursor:pointer;position:sticky;top:0}tr.failed{background:#fdd}tr.flagged{background:#ffe9c4}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{width:240px}.small{color:#666;font-size:12px}
"""
_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var key = function (r) { return r.cells[col] ? r.cells[col].dataset.sort : ''; };
      var x = key(a), y = key(b);
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _num(v: Any, digits: int = 1) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"


def _cell(text: str, sort: Any, *, num: bool = False) -> str:
    cls = ' class="num"' if num else ""
    return f'<td{cls} data-sort="{html.escape(str(sort))}">{text}</td>'


def _volume_cell(row: Mapping[str, Any], t: str) -> str:
    text = (f"{_num(row[f'{t}_ml'])}<br><span class=small>50%: [{_num(row[f'{t}_p50_low_ml'])}, "
            f"{_num(row[f'{t}_p50_high_ml'])}]<br>95%: [{_num(row[f'{t}_p95_low_ml'])}, "
            f"{_num(row[f'{t}_p95_high_ml'])}]</span>")
    return _cell(text, row[f"{t}_ml"], num=True)


def _card_cell(row: Mapping[str, Any]) -> str:
    if f"GM_card_bias_pct" not in row or pd.isna(row["GM_card_bias_pct"]):
        return _cell("", "")
    text = "<br>".join(f"{t}: bias {_num(row[f'{t}_card_bias_pct'])} %, CoV {_num(row[f'{t}_card_cov_pct'], 2)} %"
                       for t in TISSUES)
    return _cell(f'<span class=small>{text}<br>n = {int(row["card_n_subjects"])}</span>', row["GM_card_bias_pct"])


def _status(row: Mapping[str, Any]) -> tuple[int, str]:
    flags = [f for f in str(row.get("flags") or "").split(";") if f]
    rank = 1 if "OoD" in flags else (2 if "wide" in flags else 3)
    return rank, ", ".join(flags) or "ok"


def scan_rows(table: pd.DataFrame, *, qc: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """``(rank, scan, <tr>…</tr>)`` per segmented scan; rank 1 OoD, 2 wide interval, 3 ok."""
    out = []
    for row in table.to_dict("records"):
        rank, status = _status(row)
        img = qc.get(row["scan"])
        fig = f'<a href="{html.escape(img)}"><img src="{html.escape(img)}" alt="QC {html.escape(row["scan"])}"></a>' \
            if img else ""
        cells = [_cell(status, rank), _cell(html.escape(row["scan"]), row["scan"]),
                 _cell(html.escape(row["protocol"]) + ("" if row["in_distribution"] else " (OoD)"), row["protocol"]),
                 _cell(f'{html.escape(row["model"])}<br><span class=small>{row["model_sha256"][:12]}</span>',
                       row["model"]),
                 *[_volume_cell(row, t) for t in TISSUES], _cell(_num(row["p50_rel_width"] * 100), row["p50_rel_width"],
                                                                 num=True),
                 _card_cell(row), _cell(fig, "")]
        cls = ' class="flagged"' if rank < 3 else ""
        out.append((rank, row["scan"], f"<tr{cls}>{''.join(cells)}</tr>"))
    return out


def failure_rows(failures: Sequence[Mapping[str, Any]], *, n_columns: int) -> list[tuple[int, str, str]]:
    """``(0, scan, <tr>…</tr>)`` per failed scan: the error across the remaining columns."""
    out = []
    for f in failures:
        cells = [_cell("failed", 0), _cell(html.escape(str(f["scan"])), f["scan"]),
                 f'<td colspan="{n_columns - 2}" data-sort="">{html.escape(str(f["error"]))}</td>']
        out.append((0, str(f["scan"]), f'<tr class="failed">{"".join(cells)}</tr>'))
    return out


def write_report(path: Path, *, table: pd.DataFrame, failures: Sequence[Mapping[str, Any]],
                 qc: Mapping[str, str], title: str = "physeg study report") -> Path:
    """Write the HTML report (module docstring); ``qc`` maps a scan to its figure's path relative to ``path``."""
    header = ["status", "scan", "protocol", "model", *[f"{t} ml" for t in TISSUES], "widest 50% (% of median)",
              "protocol card", "QC"]
    rows = sorted([*failure_rows(failures, n_columns=len(header)),
                   *(scan_rows(table, qc=qc) if not table.empty else [])], key=lambda r: (r[0], r[1]))
    n_flag = sum(1 for r in rows if 0 < r[0] < 3)
    summary = (f"{len(table)} scans segmented, {len(failures)} failed, {n_flag} flagged "
               "(OoD: protocol outside the model's training range; wide: 50% interval wider than the threshold).")
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p id=\"summary\">{html.escape(summary)}</p>"
        "<p class=small>Volumes: median of the Monte-Carlo sample volumes (ml); intervals from the same samples, "
        "calibrated where the model has a calibration (see volumes.tsv: calibrated_50, calibrated_95). "
        "Click a column header to sort.</p>"
        f"<table id=\"scans\"><thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr></thead>"
        f"<tbody>{''.join(r[2] for r in rows)}</tbody></table>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    return write_text_atomic(path, doc)
