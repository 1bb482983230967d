"""Benchmark of the simulation layer on a 1 mm MNI-size volume (197 x 233 x 189) x 4 realisations.

Compares, in the same process and as medians of several repeats:

* the layer (:func:`physeg.simulation.simulate`, with and without normalisation),
* a naive NumPy implementation looping over realisations,
* a memory copy of the same bytes (``torch.clone`` of the input maps and of an
  output-sized tensor).

Goals (CPU): layer ≤ 2x the copy, ≥ 5x faster than the naive loop. CUDA is
timed too when available (no naive loop there).

Physics artefacts (``--artefacts``, issue 17): on 1 and 2 threads, interleaved
rounds of copy / layer without artefacts / layer with B1+, with noise, with both
(:func:`physeg.simulation.benchmark.benchmark_artefacts`; ratios within a round,
median over rounds). Goals: with B1+ and noise ≤ 1.5x without; the layer
≤ 1.2x the copy.

Usage::

    python benchmarks/simulation.py [--repeats 5] [--n 4] [--voxel-size 1] [--threads T]
    python benchmarks/simulation.py --artefacts [--rounds 7] [--voxel-size 1]

Measured (artefacts) -- see ARTEFACT_RESULTS below.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from physeg.simulation.benchmark import (
    benchmark_artefacts,
    benchmark_simulation,
    format_artefact_results,
    format_results,
)
from physeg.simulation.phantom import mni_phantom


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=4, help="realisations per call")
    ap.add_argument("--voxel-size", type=float, default=1.0, help="mm; 1 gives 197x233x189")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--artefacts", action="store_true", help="time the physics artefacts on 1 and 2 threads")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds for --artefacts")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ph = mni_phantom(voxel_size_mm=args.voxel_size)
    if args.artefacts:
        return _artefacts(ph, args)
    print(f"volume {tuple(ph.maps.shape[1:])}, {args.n} realisations, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats}")
    results = benchmark_simulation(ph.maps, ph.mask, n=args.n, repeats=args.repeats, device="cpu")
    if torch.cuda.is_available():
        results += benchmark_simulation(ph.maps, ph.mask, n=args.n, repeats=args.repeats, device="cuda", naive=False)
    print(format_results(results))
    for r in results:
        if r["device"] == "cpu":
            print(f"{r['sequence']}: layer/copy = {r['copy_ratio']:.2f} (goal <= 2), "
                  f"naive/layer = {r['naive_speedup']:.1f} (goal >= 5)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def _artefacts(ph, args) -> int:
    """``--artefacts``: the physics-artefact ratios on 1 and 2 threads."""
    import os
    import time

    print(f"volume {tuple(ph.maps.shape[1:])}, {args.n} realisations, {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows += benchmark_artefacts(ph.maps, ph.mask, n=args.n, rounds=args.rounds)
    print(format_artefact_results(rows))
    print("goals: on/off (b1+noise) <= 1.5, off/copy <= 1.2")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
