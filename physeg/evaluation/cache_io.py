"""The evaluation cache on disk: CSV, JSON and ``.npz`` only, nothing is ever unpickled.

A cached table is two files: ``<name>.csv`` and ``<name>.schema.json`` (the
column order and each column's dtype). Columns holding numpy arrays (the
Monte-Carlo volume samples, or ``None`` where a variant is missing) are
written as JSON lists in the CSV cell; floats are written with Python's
shortest round-trip repr and read back exactly (``float_precision="round_trip"``
before pandas 3, its default since), so a cached table equals the computed one bit for bit. Arrays (the Figure 2
examples) go to ``.npz`` read with ``allow_pickle=False``; their nesting to a
JSON file beside it. Every file is written atomically
(:mod:`physeg.io_safety`); a damaged or foreign cache file raises
:class:`ValueError` naming it rather than being trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from physeg.io_safety import atomic_write, atomic_write_json

#: Exact float parsing: an option before pandas 3 (deprecated there, where it is the default).
_ROUND_TRIP: dict[str, str] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def _is_array_column(col: pd.Series) -> bool:
    return col.dtype == object and col.map(lambda v: v is None or isinstance(v, np.ndarray)).all() and \
        col.map(lambda v: isinstance(v, np.ndarray)).any()


def _encode(v: Any) -> str:
    return "null" if v is None else json.dumps([float(x) for x in np.asarray(v, dtype=np.float64).ravel()])


def save_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as ``path`` (``.csv``) plus ``<stem>.schema.json``; schema last."""
    path = Path(path)
    arrays = {c: str(next(v for v in frame[c] if v is not None).dtype)
              for c in frame.columns if _is_array_column(frame[c])}
    out = frame.copy()
    for c in arrays:
        out[c] = out[c].map(_encode)
    text = [str(c) for c in frame.columns if frame[c].dtype == object and c not in arrays
            and frame[c].map(lambda v: isinstance(v, str)).all()]
    schema = {"columns": [str(c) for c in frame.columns], "text": text,
              "dtypes": {str(c): str(t) for c, t in frame.dtypes.items() if c not in arrays}, "arrays": arrays}
    atomic_write(path, lambda tmp: out.to_csv(tmp, index=False))
    atomic_write_json(schema_path(path), schema)
    return path


def schema_path(path: Path) -> Path:
    """``<stem>.schema.json`` beside a cached ``<stem>.csv``."""
    return path.with_name(path.stem + ".schema.json")


def load_frame(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_frame` with its dtypes; :class:`ValueError` naming a bad file."""
    path = Path(path)
    try:
        schema = json.loads(schema_path(path).read_text())
        columns, dtypes, arrays, text = schema["columns"], schema["dtypes"], schema["arrays"], schema["text"]
        if not columns:
            return pd.DataFrame()
        conv = {c: str for c in text} | {c: _decoder(arrays[c]) for c in arrays}
        frame = pd.read_csv(path, converters=conv, **_ROUND_TRIP)
        if list(frame.columns) != columns:
            raise ValueError(f"columns {list(frame.columns)} differ from the schema's {columns}")
        for c, t in dtypes.items():
            if c not in text and str(frame[c].dtype) != t:
                frame[c] = frame[c].astype(t)
        return frame
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as exc:
        raise ValueError(f"damaged evaluation cache {path} ({exc.__class__.__name__}: {exc}); "
                         "delete its folder to recompute") from None


def _decoder(dtype: str):
    def decode(cell: str) -> np.ndarray | None:
        value = json.loads(cell)
        return None if value is None else np.asarray(value, dtype=np.float64).astype(dtype)

    return decode


def save_arrays(tree: dict[str, Any], path: str | Path) -> Path:
    """A nested dict of strings, numbers and numpy arrays as ``<path>.npz`` + ``<path>.json`` (layout)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {"dict": {str(k): walk(v) for k, v in node.items()}}
        if isinstance(node, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = node
            return {"array": key}
        return {"value": node}

    layout = walk(tree)
    atomic_write(path.with_suffix(".npz"), lambda tmp: np.savez_compressed(tmp, **arrays))
    atomic_write_json(path.with_suffix(".json"), layout)
    return path


def load_arrays(path: str | Path) -> dict[str, Any]:
    """Read what :func:`save_arrays` wrote (``allow_pickle=False``)."""
    path = Path(path)
    try:
        layout = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}

        def build(node: dict) -> Any:
            if "dict" in node:
                return {k: build(v) for k, v in node["dict"].items()}
            if "array" in node:
                return arrays[node["array"]]
            return node["value"]

        return build(layout)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"damaged evaluation cache {path.with_suffix('.npz')} ({exc.__class__.__name__}: "
                         f"{exc}); delete its folder to recompute") from None
