"""Timing of the simulation layer against a naive NumPy loop and a memory copy.

Used by ``benchmarks/simulation.py`` (1 mm MNI volume) and notebook 01 (small
volume). All timings are medians of ``repeats`` runs in the same process.

* **layer**: :func:`physeg.simulation.simulate` (with normalisation, and the
  signal alone as ``layer_signal_s``).
* **naive**: a straightforward NumPy implementation looping over realisations
  (:func:`naive_simulate`), CPU only; it is also the numerical cross-check.
* **copy**: ``torch.clone`` of the input maps plus ``torch.clone`` of a tensor
  of the output's size -- the cost of touching the same bytes once.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np
import torch

from .equations import EPS_S, MPRAGE_TAU_S, MPRAGE_TD_S
from .layer import NORMALISATION_CLIP, NORMALISATION_PERCENTILE, simulate
from .parameters import check_sequence, sample_parameters

__all__ = ["naive_simulate", "time_call", "benchmark_simulation", "format_results", "benchmark_artefacts",
           "format_artefact_results", "ARTEFACT_CASES"]


def naive_simulate(maps: np.ndarray, *, sequence: str, params: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: the equations written per realisation in NumPy (magnitude MPRAGE, normalised)."""
    sequence = check_sequence(sequence)
    pd = np.nan_to_num(maps[0], nan=0.0, posinf=0.0, neginf=0.0)
    pd[pd < 0] = 0
    t1 = np.where(np.isnan(maps[1]), EPS_S, np.maximum(maps[1], EPS_S)).astype(maps.dtype)
    t2 = np.where(np.isnan(maps[2]), EPS_S, np.maximum(maps[2], EPS_S)).astype(maps.dtype)
    out = []
    for p in params:
        if sequence == "MPRAGE":
            ti = p[0]
            s = pd * (1 - 2 * np.exp(-ti / t1) / (1 + np.exp(-(ti + MPRAGE_TD_S + MPRAGE_TAU_S) / t1)))
            s = np.abs(s)
        else:
            tr, te, fa = p
            e1 = np.exp(-tr / t1)
            s = pd * np.sin(fa) * (1 - e1) * np.exp(-te / t2) / (1 - np.cos(fa) * e1)
        q = np.percentile(s[mask], NORMALISATION_PERCENTILE)
        if q > 0:
            s = s / q
        out.append(np.clip(s, 0, NORMALISATION_CLIP)[None])
    return np.stack(out).astype(maps.dtype)


def time_call(fn: Callable[[], object], *, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up (CUDA-synchronised)."""
    cuda = torch.device(device).type == "cuda"
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def benchmark_simulation(
    maps: torch.Tensor,
    mask: torch.Tensor,
    *,
    n: int = 4,
    sequences: Sequence[str] = ("MPRAGE", "SPGR"),
    repeats: int = 5,
    device: torch.device | str = "cpu",
    naive: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Time layer, naive loop and copy for each sequence; one dict per sequence.

    Keys: sequence, device, shape, n, layer_s, layer_signal_s, copy_s, naive_s
    (NaN if skipped), copy_ratio (layer/copy), naive_speedup (naive/layer),
    max_abs_diff (layer vs naive, NaN if skipped).
    """
    device = torch.device(device)
    maps_d = maps.to(device)
    mask_d = mask.to(device)
    out_like = torch.empty((n, 1, *maps.shape[1:]), dtype=maps.dtype, device=device)
    results = []
    for seq in sequences:
        params = sample_parameters(seq, n, generator=torch.Generator().manual_seed(seed), dtype=maps.dtype)
        params_d = params.to(device)
        layer_s = time_call(lambda: simulate(maps_d, sequence=seq, params=params_d, mask=mask_d), repeats=repeats, device=device)
        signal_s = time_call(
            lambda: simulate(maps_d, sequence=seq, params=params_d, mask=mask_d, normalise=False), repeats=repeats, device=device
        )
        copy_s = time_call(lambda: (maps_d.clone(), out_like.clone()), repeats=repeats, device=device)
        naive_s = diff = float("nan")
        if naive:
            maps_np, mask_np, params_np = maps.numpy(), mask.numpy().astype(bool), params.numpy()
            ref = None

            def run_naive():
                nonlocal ref
                ref = naive_simulate(maps_np, sequence=seq, params=params_np, mask=mask_np)

            naive_s = time_call(run_naive, repeats=max(1, min(repeats, 3)))
            got = simulate(maps_d, sequence=seq, params=params_d, mask=mask_d).cpu().numpy()
            diff = float(np.abs(got - ref).max())
        results.append(
            dict(
                sequence=seq, device=str(device), shape=tuple(maps.shape[1:]), n=n,
                layer_s=layer_s, layer_signal_s=signal_s, copy_s=copy_s, naive_s=naive_s,
                copy_ratio=layer_s / copy_s, signal_copy_ratio=signal_s / copy_s,
                naive_speedup=naive_s / layer_s, max_abs_diff=diff,
            )
        )
    return results


def format_results(results: list[dict]) -> str:
    """Plain-text table of :func:`benchmark_simulation` results."""
    lines = [
        f"{'sequence':8s} {'device':6s} {'layer ms':>9s} {'signal ms':>9s} {'copy ms':>8s} {'naive ms':>9s} "
        f"{'layer/copy':>10s} {'signal/copy':>11s} {'naive/layer':>11s} {'max|diff|':>9s}"
    ]
    for r in results:
        lines.append(
            f"{r['sequence']:8s} {r['device']:6s} {1e3 * r['layer_s']:9.1f} {1e3 * r['layer_signal_s']:9.1f} "
            f"{1e3 * r['copy_s']:8.1f} {1e3 * r['naive_s']:9.1f} {r['copy_ratio']:10.2f} {r['signal_copy_ratio']:11.2f} "
            f"{r['naive_speedup']:11.1f} {r['max_abs_diff']:9.2e}"
        )
    return "\n".join(lines)


#: Artefact settings timed by :func:`benchmark_artefacts` (ranges as in :class:`~physeg.simulation.Artefacts`).
ARTEFACT_CASES: dict[str, dict] = {
    "b1": {"b1": (0.2, 0.3)},
    "noise": {"snr": (20.0, 40.0)},
    "b1+noise": {"b1": (0.2, 0.3), "snr": (20.0, 40.0)},
}


def benchmark_artefacts(
    maps: torch.Tensor, mask: torch.Tensor, *, n: int = 4, sequences: Sequence[str] = ("MPRAGE", "SPGR"),
    rounds: int = 7, seed: int = 0,
) -> list[dict]:
    """Layer with physics artefacts vs without, and without vs a memory copy, interleaved per round (CPU).

    Each round times, back to back, the copy (``torch.clone`` of the maps and of
    an output-sized tensor), the layer without artefacts and the layer with each
    case of :data:`ARTEFACT_CASES` (fixed draws); the ratios are taken *within*
    a round and their median over ``rounds`` is reported, so that the load of a
    shared machine cancels. One dict per sequence and case: ``on_off`` (with /
    without artefacts), ``off_copy`` (layer / copy) and the median times in s.
    """
    from .artefacts import Artefacts
    from .layer import simulate

    out_like = torch.empty((n, 1, *maps.shape[1:]), dtype=maps.dtype)
    rows = []
    for seq in sequences:
        params = sample_parameters(seq, n, generator=torch.Generator().manual_seed(seed), dtype=maps.dtype)
        draws = {k: Artefacts(**v).draw(n, generator=torch.Generator().manual_seed(seed + 1), dtype=maps.dtype)
                 for k, v in ARTEFACT_CASES.items()}
        times: dict[str, list[float]] = {k: [] for k in ("copy", "off", *draws)}
        for r in range(rounds + 1):  # round 0 warms up (and fills the field-basis cache)
            t = {"copy": time_call(lambda: (maps.clone(), out_like.clone()), repeats=1)}
            t["off"] = time_call(lambda: simulate(maps, sequence=seq, params=params, mask=mask), repeats=1)
            for k, d in draws.items():
                t[k] = time_call(lambda: simulate(maps, sequence=seq, params=params, mask=mask, artefacts=d), repeats=1)
            if r:
                for k, v in t.items():
                    times[k].append(v)
        off_copy = statistics.median(o / c for o, c in zip(times["off"], times["copy"]))
        for k in draws:
            rows.append(dict(sequence=seq, case=k, threads=torch.get_num_threads(), n=n,
                             shape=tuple(maps.shape[1:]), rounds=rounds,
                             on_off=statistics.median(a / o for a, o in zip(times[k], times["off"])),
                             off_copy=off_copy, on_s=statistics.median(times[k]),
                             off_s=statistics.median(times["off"]), copy_s=statistics.median(times["copy"])))
    return rows


def format_artefact_results(rows: list[dict]) -> str:
    """Plain-text table of :func:`benchmark_artefacts` rows."""
    lines = [f"{'sequence':8s} {'threads':>7s} {'case':9s} {'off ms':>8s} {'on ms':>8s} {'copy ms':>8s} "
             f"{'on/off':>7s} {'off/copy':>8s}"]
    for r in rows:
        lines.append(f"{r['sequence']:8s} {r['threads']:7d} {r['case']:9s} {1e3 * r['off_s']:8.1f} "
                     f"{1e3 * r['on_s']:8.1f} {1e3 * r['copy_s']:8.1f} {r['on_off']:7.2f} {r['off_copy']:8.2f}")
    return "\n".join(lines)
