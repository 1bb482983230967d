"""Benchmark: cost of 50 aleatoric and 50 epistemic volume samples vs one forward pass.

The aleatoric model needs ONE sliding-window forward pass; its samples are noisy
logits ``f + σ·ε`` (cheap tensor ops + argmax). Goal: 50 aleatoric samples
cost ≤ 1.5× one forward pass. Epistemic samples need 50 forward passes (MC
dropout), batched: the benchmark reports them per volume, and per sample.

Untrained networks with the profile's widths on a volume of the profile's
grid size (timing does not depend on the weights).

    python benchmarks/uncertainty.py --profile smoke [--device cpu|cuda] [--n 50] [--repeats 3]

Prints a table and one JSON line per device.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from physeg.evaluation import runs as ev
from physeg import simulation as sim
from physeg.models.network import NetworkConfig, build_network
from physeg.profiles import get_profile
from physeg.inference.predictor import infer_volume

#: Approximate MNI brain box (mm) of the cohort; the grid is this / voxel size.
MNI_BOX_MM = (197, 233, 189)


def _timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def run(profile_name: str, device: str, n: int, repeats: int) -> dict:
    profile = get_profile(profile_name)
    shape = tuple(int(round(s / profile.voxel_size_mm)) for s in MNI_BOX_MM)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    seq = "MPRAGE"
    feats = torch.tensor([0.9])  # θ = [TI] in seconds
    torch.manual_seed(0)
    image = torch.rand(1, *shape)

    def net(unc):
        cfg = NetworkConfig(channels=tuple(profile.channels), physics="early+late",
                            sequence=seq, uncertainty=unc)
        return build_network(cfg).to(dev).eval()

    ale, epi, det = net("aleatoric"), net("epistemic"), net("none")
    with torch.no_grad():
        t_fwd = _timed(lambda: infer_volume(det, image, feats, profile=profile), repeats, sync)
        t_fwd_ale = _timed(lambda: infer_volume(ale, image, feats, profile=profile, return_sigma=True), repeats, sync)
        t_ale = _timed(lambda: ev.aleatoric_volumes(ale, image, feats, n=n, voxel_volume_ml=1.0, profile=profile,
                                                    generator=torch.Generator(device=dev).manual_seed(0)
                                                    if dev.type == "cuda" else torch.Generator().manual_seed(0)),
                       repeats, sync)
        t_epi = _timed(lambda: ev.epistemic_volumes(epi, image, feats, n=n, voxel_volume_ml=1.0, profile=profile),
                       max(1, repeats // 2), sync)
    return {
        "profile": profile_name, "device": str(dev), "threads": torch.get_num_threads(), "grid": shape,
        "n_samples": n, "forward_s": t_fwd, "forward_aleatoric_model_s": t_fwd_ale,
        "aleatoric_samples_s": t_ale, "aleatoric_ratio_vs_forward": t_ale / t_fwd,
        "aleatoric_ratio_vs_own_forward": t_ale / t_fwd_ale,
        "epistemic_samples_s": t_epi, "epistemic_ratio_vs_forward": t_epi / t_fwd,
        "epistemic_s_per_sample": t_epi / n,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    devices = a.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for d in devices:
        r = run(a.profile, d, a.n, a.repeats)
        print(f"[{r['device']}] profile={r['profile']} grid={r['grid']} threads={r['threads']}")
        print(f"  one forward pass (deterministic model): {r['forward_s']:.3f} s")
        print(f"  {r['n_samples']} aleatoric samples (1 forward + noise): {r['aleatoric_samples_s']:.3f} s "
              f"= {r['aleatoric_ratio_vs_forward']:.2f}x forward (goal <= 1.5x; "
              f"{r['aleatoric_ratio_vs_own_forward']:.2f}x the aleatoric model's own forward)")
        print(f"  {r['n_samples']} epistemic samples (batched MC dropout): {r['epistemic_samples_s']:.3f} s "
              f"= {r['epistemic_ratio_vs_forward']:.1f}x forward, {r['epistemic_s_per_sample']:.3f} s/sample")
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
