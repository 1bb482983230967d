# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — Simulating MRI contrasts from quantitative maps
#
# The method of Borges et al. (2021) never trains on acquired images: it
# *simulates* them, on the fly, from a subject's quantitative maps
# (proton density PD, $T_1$, $T_2^*$) with static signal equations (paper §2.3).
# This notebook shows the two equations, how contrast moves across the
# acquisition-parameter space, where the training (in-distribution, IoD) and
# test-only (out-of-distribution, OoD) ranges lie, and how fast the vectorised
# simulation layer is. The code lives in `physeg.simulation`; this notebook
# only calls and plots it.

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import physeg.simulation as sim
from physeg.profiles import get_profile
from physeg.simulation.benchmark import benchmark_simulation, format_results
from physeg.simulation.phantom import mni_phantom

P = get_profile(profile)
t_start = time.perf_counter()
torch.manual_seed(P.seed)
print(f"profile {P.name}: voxel size {P.voxel_size_mm} mm, batch of {P.training.batch_size} realisations")

# %% [markdown]
# ## The signal equations
#
# Units: times in seconds, angles in radians inside the code (degrees only for
# display). **MPRAGE**, in the form the authors implemented, with delay time
# $T_D$ = 10 ms and slice imaging time $\tau$ = 10 ms:
#
# $$
# S_\text{MPRAGE} = PD\left(1 - \frac{2\,e^{-TI/T_1}}{1 + e^{-(TI + T_D + \tau)/T_1}}\right)
# $$
#
# **SPGR** (spoiled gradient echo in the Ernst steady state), repetition time
# $TR$, echo time $TE$, flip angle $\alpha$:
#
# $$
# S_\text{SPGR} = PD\,\sin\alpha\,\frac{\left(1 - e^{-TR/T_1}\right)e^{-TE/T_2^*}}{1 - \cos\alpha\; e^{-TR/T_1}}
# $$
#
# Maps contain background and fitting failures: PD that is NaN, infinite or
# negative is set to 0 (no signal); $T_1$, $T_2^*$ that are NaN or below
# $\varepsilon = 10^{-6}$ s are set to $\varepsilon$; $+\infty$ means "no
# relaxation". Every simulated value is finite and $|S| \le PD$.
#
# The tissue values below are literature values at 3 T (Wansapura 1999 for
# $T_1$, Peters 2007 for $T_2^*$; PD and CSF by convention).

# %% tags=["hide-input"]
tissues = pd.DataFrame(
    {name: {"PD (a.u.)": t.pd, "T1 (s)": t.t1_s, "T2* (s)": t.t2star_s, "source": t.source}
     for name, t in sim.TISSUE_PARAMETERS.items()}
).T
tissues

# %% tags=["hide-input"]
COLORS = {"WM": "tab:blue", "GM": "tab:orange", "CSF": "tab:green"}
T = {k: torch.tensor(v.as_tuple(), dtype=torch.float64) for k, v in sim.TISSUE_PARAMETERS.items()}


def shade(ax, name, sequence, scale=1.0):
    """Shade the OoD (light) and IoD (dark) range of one parameter on the x axis."""
    lo, hi = sim.OOD_RANGES[sequence][name]
    ax.axvspan(lo * scale, hi * scale, color="0.9", zorder=0, label="OoD range")
    lo, hi = sim.IOD_RANGES[sequence][name]
    ax.axvspan(lo * scale, hi * scale, color="0.75", zorder=0, label="IoD range")


def crossings(x, a, b):
    """x where the curves a and b cross (linear interpolation of a sign change of a - b)."""
    d = (a - b).numpy()
    idx = np.nonzero(np.sign(d[1:]) != np.sign(d[:-1]))[0]
    return [float(x[i] - d[i] * (x[i + 1] - x[i]) / (d[i + 1] - d[i])) for i in idx]


# %% [markdown]
# ## MPRAGE: signal against inversion time
#
# With the authors' very short $T_D$ and $\tau$ the denominator is close to
# $1 + e^{-TI/T_1}$, so $S \approx PD \tanh\!\big(TI/(2T_1)\big)$: a monotonic
# recovery. At short TI the short-$T_1$ tissue (WM) is brightest ($T_1$
# weighting); at long TI the signal approaches PD and the high-PD tissues
# overtake it (PD weighting). These *contrast inversions* are located below
# (searching TI > 50 ms; below that every tissue is near 0, see the next
# section). Note that they lie outside the IoD range: inside it the tissue
# ordering WM > GM > CSF never changes, only the contrast between them.

# %% tags=["hide-input"]
ti = torch.linspace(1e-3, 6.0, 3000, dtype=torch.float64)
sig = {k: sim.mprage(v[0], v[1], ti=ti, sign="signed") for k, v in T.items()}
fig, ax = plt.subplots(figsize=(7, 4))
shade(ax, "TI", "MPRAGE")
for k, s in sig.items():
    ax.plot(ti, s, color=COLORS[k], label=k)
for name, (a, b) in {"GM/WM": ("GM", "WM"), "CSF/GM": ("CSF", "GM"), "CSF/WM": ("CSF", "WM")}.items():
    sel = ti > 0.05
    for x in crossings(ti[sel], sig[a][sel], sig[b][sel]):
        ax.axvline(x, ls=":", color="k")
        ax.text(x, 0.02, f" {name}\n {x:.2f} s", fontsize=8)
        where = "IoD" if 0.6 <= x <= 1.2 else ("OoD range" if 0.1 <= x <= 2.0 else "outside both ranges")
        print(f"MPRAGE {name} contrast inverts at TI = {x:.3f} s ({where})")
ax.set(xlabel="TI (s)", ylabel="signal (a.u.)", title="MPRAGE (TD = τ = 10 ms)")
handles, labels = ax.get_legend_handles_labels()
ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(), fontsize=8)
plt.show()

# %% [markdown]
# ### Signed, magnitude or clipped?
#
# The formula is signed: it is negative where $2e^{-TI/T_1} > 1 + e^{-(TI+T_D+\tau)/T_1}$,
# i.e. below the zero crossing
#
# $$
# TI_0 = T_1 \ln\left(2 - e^{-(T_D+\tau)/T_1}\right) < T_D + \tau = 20\ \text{ms},
# $$
#
# for *every* $T_1$ (since $\ln(2-e^{-x}) < x$). Scanners reconstruct the
# magnitude $|S|$, the authors set negative values to 0. We default to the
# magnitude (`sign="magnitude"`; `"clip"` and `"signed"` are options). With the
# authors' constants the choice is **invisible in the paper's ranges**
# (TI ≥ 0.1 s even for OoD). It matters for plain inversion recovery
# ($T_D+\tau\to\infty$, $S = PD(1-2e^{-TI/T_1})$), whose crossing is the
# familiar $T_1\ln 2$ — shown on the right for comparison only.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ti_short = torch.linspace(1e-4, 0.04, 400, dtype=torch.float64)
ti = torch.linspace(1e-3, 2.5, 1000, dtype=torch.float64)
for k, v in T.items():
    for mode, ls in (("signed", "-"), ("magnitude", "--"), ("clip", ":")):
        axes[0].plot(1e3 * ti_short, sim.mprage(v[0], v[1], ti=ti_short, sign=mode), ls=ls, color=COLORS[k],
                     label=f"{k} {mode}")
    print(f"{k}: zero crossing TI0 = {1e3 * sim.mprage_zero_crossing(float(v[1])).item():.2f} ms "
          f"(authors' MPRAGE); {1e3 * float(v[1]) * math.log(2):.0f} ms (inversion recovery, T1 ln 2)")
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(xlabel="TI (ms)", ylabel="signal", title="authors' MPRAGE near TI = 0")
axes[0].legend(fontsize=6, ncol=3)
big = 1e6  # T_D + tau -> infinity: plain inversion recovery
for k, v in T.items():
    for mode, ls in (("signed", "-"), ("magnitude", "--")):
        axes[1].plot(ti, sim.mprage(v[0], v[1], ti=ti, sign=mode, td=big), ls=ls, color=COLORS[k], label=f"{k} {mode}")
shade(axes[1], "TI", "MPRAGE")
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set(xlabel="TI (s)", title="inversion recovery limit (for comparison)")
axes[1].legend(fontsize=6, ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## SPGR: signal against TR, TE and flip angle
#
# Each panel varies one parameter around a mid-IoD protocol (TR 50 ms, TE 5 ms,
# FA 30°). The Ernst angle $\alpha_E = \arccos e^{-TR/T_1}$ maximises each
# tissue's signal; at small flip angles the contrast is PD- and
# $T_2^*$-weighted (CSF bright), at large ones $T_1$-weighted (WM bright) —
# another contrast inversion, located below.

# %% tags=["hide-input"]
base = dict(tr=0.05, te=0.005, fa=math.radians(30))
sweeps = {
    "TR": (torch.linspace(0.005, 0.25, 500, dtype=torch.float64), 1e3, "TR (ms)"),
    "TE": (torch.linspace(0.001, 0.025, 500, dtype=torch.float64), 1e3, "TE (ms)"),
    "FA": (torch.linspace(math.radians(1), math.radians(100), 500, dtype=torch.float64), 180 / math.pi, "FA (°)"),
}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, (name, (x, scale, label)) in zip(axes, sweeps.items()):
    kw = {**base, name.lower(): x}
    curves = {k: sim.spgr(v[0], v[1], v[2], **kw) for k, v in T.items()}
    shade(ax, name, "SPGR", scale)
    for k, s in curves.items():
        ax.plot(x * scale, s, color=COLORS[k], label=k)
    for a, b in (("GM", "WM"), ("CSF", "GM"), ("CSF", "WM")):
        for c in crossings(x, curves[a], curves[b]):
            ax.axvline(c * scale, ls=":", color="k")
            print(f"SPGR vs {name}: {a}/{b} contrast inverts at {name} = {c * scale:.1f} {label.split()[-1][1:-1]}")
    if name == "FA":
        for k, v in T.items():
            ae = sim.ernst_angle(float(v[1]), tr=base["tr"]).item()
            ax.plot(math.degrees(ae), sim.spgr(v[0], v[1], v[2], **{**base, "fa": ae}), "v", color=COLORS[k])
    ax.set(xlabel=label, ylabel="signal (a.u.)")
handles, labels = axes[0].get_legend_handles_labels()
axes[0].legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(), fontsize=8)
fig.suptitle("SPGR (triangles: Ernst angle)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A teaching phantom
#
# To see images we need maps. `physeg.simulation.phantom.mni_phantom` mixes the
# literature tissue values with the MNI152 GM/WM/brain-mask probability
# templates that ship inside nilearn (no download): $PD = \sum_t f_t PD_t$ and
# relaxation *rates* $1/T_1$, $1/T_2^*$ mixed linearly. It is a phantom for
# teaching and benchmarking, not the project's cohort (notebook 02).

# %% tags=["hide-input"]
ph = mni_phantom(voxel_size_mm=P.voxel_size_mm)
z = int(ph.mask.sum(dim=(0, 1)).argmax())  # the axial slice with most brain
print("phantom shape", tuple(ph.maps.shape[1:]), "voxel", ph.voxel_size_mm, "mm; slice z =", z)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
for ax, ch, unit, vmax in zip(axes, sim.MAP_CHANNELS, ("a.u.", "s", "s"), (1.0, 4.2, 0.5)):
    im = ax.imshow(ph.maps[sim.MAP_CHANNELS.index(ch), :, :, z].T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
    ax.set_title(f"{ch} ({unit})")
    ax.axis("off")
    plt.colorbar(im, ax=ax, fraction=0.046)
plt.show()

# %% [markdown]
# ## Simulated contrasts across parameter space
#
# One call of `simulate` renders a whole batch of parameter vectors (here the
# IoD centre and corners and a few OoD extremes). Each image is normalised by
# its 99th percentile inside the brain mask and clipped to [0, 2] — the
# intensity normalisation every simulated image gets before the network.

# %% tags=["hide-input"]
mp = sim.mprage_params([0.01, 0.1, 0.3, 0.6, 0.9, 1.2, 2.0])
sp = sim.spgr_params(
    [0.015, 0.05, 0.1, 0.05, 0.05, 0.2, 0.01, 0.05],
    [0.004, 0.007, 0.01, 0.005, 0.02, 0.004, 0.002, 0.005],
    [15, 45, 75, 5, 30, 90, 10, 90],
)
rows = [("MPRAGE", mp), ("SPGR", sp)]
fig, axes = plt.subplots(2, 8, figsize=(16, 4.6))
for r, (seq, params) in enumerate(rows):
    imgs = sim.simulate(ph.maps, sequence=seq, params=params, mask=ph.mask)
    iod = sim.is_in_distribution(seq, params)
    for c in range(8):
        ax = axes[r, c]
        ax.axis("off")
        if c >= len(params):
            continue
        ax.imshow(imgs[c, 0, :, :, z].T, origin="lower", cmap="gray", vmin=0, vmax=1.2)
        d = sim.to_display_units(seq, params[c : c + 1])[0]
        txt = "\n".join(f"{k.split('_')[0]} {v:.0f}{'°' if k.endswith('deg') else ' ms'}" for k, v in d.items())
        ax.set_title(f"{'IoD' if iod[c] else 'OoD'}\n{txt}", fontsize=7, color="k" if iod[c] else "tab:red")
plt.suptitle("MPRAGE (top) and SPGR (bottom); red titles are out of distribution", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The layer: sampling IoD and OoD parameters
#
# `SimulationLayer(sequence, distribution=..., seed=...)` samples a batch of
# parameters and renders it in one pass: the augmentation layer of paper §2.3.
# IoD draws are uniform in the training box; OoD draws are uniform on the OoD
# box *minus* the IoD box (outside IoD in at least one parameter), with
# TE < TR for SPGR. The same thing is available as a TorchIO transform,
# `SimulateMRI`, for `tio.Compose` / `tio.Queue` pipelines.

# %% tags=["hide-input"]
layer_iod = sim.SimulationLayer("SPGR", distribution="iod", seed=P.seed)
layer_ood = sim.SimulationLayer("SPGR", distribution="ood", seed=P.seed)
p_iod, p_ood = layer_iod.sample(300), layer_ood.sample(300)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (i, j) in zip(axes, ((0, 2), (0, 1))):
    names = sim.PARAMETER_NAMES["SPGR"]
    sc = lambda k: 180 / math.pi if names[k] == "FA" else 1e3  # noqa: E731
    ax.scatter(p_ood[:, i] * sc(i), p_ood[:, j] * sc(j), s=6, c="tab:red", label="OoD draws")
    ax.scatter(p_iod[:, i] * sc(i), p_iod[:, j] * sc(j), s=6, c="tab:blue", label="IoD draws")
    ax.set(xlabel=f"{names[i]} ({'°' if names[i] == 'FA' else 'ms'})", ylabel=f"{names[j]} ({'°' if names[j] == 'FA' else 'ms'})")
axes[0].legend(fontsize=8)
plt.suptitle("SPGR parameter draws (OoD points may look inside IoD in a 2-D projection: they are outside in the third parameter)")
plt.tight_layout()
plt.show()
images, params = layer_iod(ph.maps, P.training.batch_size, mask=ph.mask)
print("layer output", tuple(images.shape), images.dtype, "parameters", tuple(params.shape))

# %% [markdown]
# ## How fast is the layer?
#
# The layer's work is a handful of element-wise operations per voxel and
# realisation: it should cost about as much as touching the same bytes once.
# `benchmarks/simulation.py` times it on a 1 mm MNI volume
# (197 × 233 × 189) × 4 realisations against a naive NumPy loop over
# realisations and against a plain memory copy (`torch.clone` of the input maps
# plus an output-sized tensor). Here a small version runs live, on the phantom
# at this profile's resolution; the ratios on tiny volumes are dominated by
# per-call overheads, so read them as a check that the code runs, and see the
# benchmark script for the real numbers.

# %%
results = benchmark_simulation(ph.maps, ph.mask, n=P.training.batch_size, repeats=3)
print(format_results(results))
for r in results:
    print(f"{r['sequence']}: layer = {r['copy_ratio']:.1f} x copy, {r['naive_speedup']:.1f} x faster than naive; "
          f"max |layer - naive| = {r['max_abs_diff']:.1e}")
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s")
