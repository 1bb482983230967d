"""Training-step time: physics + stratification model vs a plain U-Net of the same size.

The physics model (Phys-Strat: physics branch injected early and late, stratified
batch, L = CE + λ·L_strat) is timed against the Baseline U-Net (no physics, CE
only) with the same channel widths, patch and batch, in one run, CPU and CUDA
when available. Goal: ≤ 10 % overhead. Prints one line per device and the ratio.

    python benchmarks/train_step.py --profile smoke [--steps 10] [--device cpu cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from physeg.models.losses import segmentation_loss
from physeg.models.registry import get_model_spec
from physeg.models.network import build_network, count_parameters
from physeg.profiles import Profile, get_profile
from physeg.simulation.parameters import sample_parameters
from physeg.inference.predictor import autocast_context
from physeg.training.identity import network_config


def step_time(name: str, *, profile: Profile, device: torch.device, steps: int, warmup: int = 2,
              patch: int | None = None) -> tuple[float, int]:
    """Median seconds per optimiser step and parameter count."""
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = build_network(network_config(spec, profile=profile, sequence="SPGR")).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=profile.training.learning_rate)
    p = patch or profile.patch_size
    x = torch.randn(profile.training.batch_size, 1, p, p, p, device=device)
    y = torch.randint(0, 4, (profile.training.batch_size, p, p, p), device=device)
    # θ (s/rad) from the training box: the network computes its physics features itself
    theta = sample_parameters("SPGR", profile.training.batch_size, generator=torch.Generator().manual_seed(0))
    phys = theta.to(device) if spec.physics != "none" else None
    lam = profile.training.strat_weight if spec.strat_loss else 0.0
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast_context(device):
            parts = segmentation_loss(model.heads(x, phys), y, strat_weight=lam)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], count_parameters(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--patch", type=int, default=None, help="override the profile's patch edge")
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda if available")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"profile={profile.name} channels={profile.channels} patch={args.patch or profile.patch_size} "
          f"batch={profile.training.batch_size} threads={torch.get_num_threads()}")
    for dev in devices:
        device = torch.device(dev)
        # interleave the two models to share any drift in machine load
        base, phys = [], []
        for _ in range(3):
            b, nb = step_time("Baseline", profile=profile, device=device, steps=args.steps, patch=args.patch)
            s, ns = step_time("Phys-Strat", profile=profile, device=device, steps=args.steps, patch=args.patch)
            base.append(b)
            phys.append(s)
        b, s = min(base), min(phys)
        print(f"{dev}: baseline {b * 1e3:.1f} ms/step ({nb:,} params) | physics+strat {s * 1e3:.1f} ms/step "
              f"({ns:,} params) | ratio {s / b:.3f} (overhead {100 * (s / b - 1):+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
