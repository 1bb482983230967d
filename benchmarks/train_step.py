"""Training-step time: physics + stratification model vs a plain U-Net of the same size.

The physics model (Phys-Strat: physics branch injected early and late, stratified
batch, L = CE + λ·L_strat) is timed against the Baseline U-Net (no physics, CE
only) with the same channel widths, patch and batch, in one run, CPU and CUDA
when available. Goal: ≤ 10 % overhead. Prints one line per device and the ratio.

With ``--layout`` it times instead the training loop's CPU layout
(:func:`physeg.models.layout.cpu_layout`: instance norms as channels-last group
norms) against the plain network, Phys-Strat-Aug's network and loss, in one run.

    python benchmarks/train_step.py --profile smoke [--steps 10] [--device cpu cuda]
    python benchmarks/train_step.py --profile demo --layout --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from physeg.models.layout import cpu_layout
from physeg.models.losses import segmentation_loss
from physeg.models.registry import get_model_spec
from physeg.models.network import build_network, count_parameters
from physeg.profiles import Profile, get_profile
from physeg.simulation.parameters import sample_parameters
from physeg.inference.predictor import autocast_context
from physeg.training.identity import network_config


def step_time(name: str, *, profile: Profile, device: torch.device, steps: int, warmup: int = 2,
              patch: int | None = None, layout: bool = False) -> tuple[float, int]:
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
    with cpu_layout(model, device=device) if layout else contextlib.nullcontext():
        _timed_steps(model, opt, x, y, phys, lam=lam, device=device, steps=steps, warmup=warmup, times=times)
    times.sort()
    return times[len(times) // 2], count_parameters(model)


def _timed_steps(model, opt, x, y, phys, *, lam: float, device: torch.device, steps: int, warmup: int,
                 times: list[float]) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--patch", type=int, default=None, help="override the profile's patch edge")
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda if available")
    parser.add_argument("--layout", action="store_true", help="time the CPU layout against the plain network")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"profile={profile.name} channels={profile.channels} patch={args.patch or profile.patch_size} "
          f"batch={profile.training.batch_size} threads={torch.get_num_threads()}")
    if args.layout:
        return layout_comparison(profile=profile, steps=args.steps, patch=args.patch)
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
        peak = (f" | peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
                if device.type == "cuda" else "")
        print(f"{dev}: baseline {b * 1e3:.1f} ms/step ({nb:,} params) | physics+strat {s * 1e3:.1f} ms/step "
              f"({ns:,} params) | ratio {s / b:.3f} (overhead {100 * (s / b - 1):+.1f} %){peak}")
    return 0


def layout_comparison(*, profile: Profile, steps: int, patch: int | None) -> int:
    """Phys-Strat-Aug training step on CPU, plain vs :func:`cpu_layout`, interleaved, best of 3 medians."""
    cpu = torch.device("cpu")
    plain, fast = [], []
    for _ in range(3):
        plain.append(step_time("Phys-Strat-Aug", profile=profile, device=cpu, steps=steps, patch=patch)[0])
        fast.append(step_time("Phys-Strat-Aug", profile=profile, device=cpu, steps=steps, patch=patch,
                              layout=True)[0])
    p, f = min(plain), min(fast)
    print(f"cpu: plain {p * 1e3:.1f} ms/step | cpu_layout {f * 1e3:.1f} ms/step | speed-up {p / f:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
