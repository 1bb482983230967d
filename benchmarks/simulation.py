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

Measured (artefacts) on the idle 2-core machine, ``--artefacts --voxel-size 1 --rounds 3``,
2026-11-26 00:03 UTC, load average 1.05; times are medians, ratios medians of per-round ratios::

    sequence threads case        off ms    on ms  copy ms  on/off off/copy
    MPRAGE         1 b1           169.5    337.3    110.2    1.84     1.54
    MPRAGE         1 noise        169.5    573.5    110.2    3.43     1.54
    MPRAGE         1 b1+noise     169.5    597.7    110.2    3.74     1.54
    SPGR           1 b1           164.6    375.4    101.4    2.10     1.58
    SPGR           1 noise        164.6    485.7    101.4    3.14     1.58
    SPGR           1 b1+noise     164.6    558.0    101.4    3.39     1.58
    MPRAGE         2 b1           129.1    241.3    100.7    1.67     1.32
    MPRAGE         2 noise        129.1    384.5    100.7    2.64     1.32
    MPRAGE         2 b1+noise     129.1    447.2    100.7    3.46     1.32
    SPGR           2 b1           156.5    221.6    113.4    1.52     1.38
    SPGR           2 noise        156.5    474.0    113.4    2.87     1.38
    SPGR           2 b1+noise     156.5    516.2    113.4    3.30     1.38

Again on the idle host (2026-11-26 23:55 UTC, commit afa4a38, same command): on/off with B1+ and noise
2.50 / 2.30 (MPRAGE / SPGR, 1 thread) and 3.17 / 3.56 (2 threads); off/copy 1.30 / 1.49 and 1.27 / 1.41.
The floor, same host, one thread: ``normal_`` 4.13 ns, ``uniform_`` 3.71 ns and a copy 2.58 ns per element
(34.7 M elements, 197 x 233 x 189 x 4): one normal per voxel and realisation is 143 ms against the 93 ms
(0.5x of the 186 ms noise-free layer) that the goal leaves for B1+ and noise together, and Rician noise
needs two per head voxel.

The goals (on/off ≤ 1.5 with B1+ and noise, off/copy ≤ 1.2) are NOT met. Why, from the code and a
profile: B1+ adds one cos (MPRAGE) or a sin and a cos (SPGR) per head voxel and realisation inside
the cache-blocked kernels; noise needs two Gaussian draws per head voxel and one uniform per
background voxel and realisation, and the two draws alone (``torch.normal_``, ~6 ns each on one
thread) cost more than the whole noise-free layer, so noise is bounded below by the random-number
throughput, not by the equations. (Runs of 2026-11-25 under a load of 10-12 gave ratios dominated
by the load, the copy alone varying 30x; they are in this file's history.)
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
