# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 — Robustness: B1+ error, receive bias, noise and an unseen sequence (beyond the paper)
#
# The paper's physics stops at two static equations with ideal flip angles and
# noise-free images, and names MR artefacts and more sequences as future work
# (§5). Real 3 T scans carry a ±20–30 % transmit-field (B1+) variation across
# the head, a receive-field bias and Rician noise, and MP2RAGE has become a
# common T1-weighted protocol. This page asks how the ablations trained by
# notebook 03 (loaded from the model cache, not retrained) hold up when the
# *test* images carry these artefacts, and on MP2RAGE images they never saw.
#
# The artefacts are physics, not a multiplication after the fact
# (`physeg.simulation.artefacts`): the B1+ field $B_1^+ = 1 + A f$ ($f$ a smooth
# random polynomial field with peak 1 over the head) scales the flip angle in
# the SPGR equation and sets MPRAGE's inversion efficiency
# $\delta = -\cos(\pi B_1^+)$ in
#
# $$ S = \mathrm{PD}\left(1 - \frac{(1+\delta)\,e^{-TI/T_1}}{1 + \delta\,e^{-(TI+T_D+\tau)/T_1}}\right), $$
#
# which is the paper's equation for $\delta = 1$. The receive bias
# $e^{A_b f'}$ multiplies the signal, and the noise is complex Gaussian with
# $\sigma = \overline{|S|}_\text{head}/\mathrm{SNR}$, so magnitude images are
# Rician and the background Rayleigh. One artefact at a time, at increasing
# levels (the paper profile runs three per artefact; demo the upper two, smoke
# only the largest, to stay within its time budget), on the IoD test
# parameters of notebook 04; every image draws its own field. The study lives in `physeg.evaluation.robustness`; this page calls and plots.

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from physeg.data import build_cohort, cohort_split, load_subject
from physeg.evaluation import robustness as rb
from physeg.evaluation.models import load_models, model_folders
from physeg.profiles import get_profile
from physeg.simulation import Artefacts, get_sequence, simulate
from physeg.simulation.sequences import mp2rage
from physeg.training.orchestrate import arm_jobs, train_all, train_jobs
from physeg.training.parallel import resolve_workers

prof = get_profile(profile)
pd.set_option("display.max_columns", 40, "display.width", 200)
cfg = rb.config_for(prof)
root = build_cohort(prof)
subjects = [load_subject(root, sid) for sid in cohort_split(prof)["test"][: cfg.n_subjects]]
t0 = time.perf_counter()
frames, mp2_frames = [], []
for seed in prof.seeds:
    trained = train_all(prof, models=list(prof.ablations), seed=seed, progress=False)  # cached by notebook 03
    models = load_models(model_folders(trained), names=prof.ablations)
    frames.append(rb.evaluate_artefacts(prof, models, subjects, config=cfg, training_seed=seed))
    mp2_frames.append(rb.evaluate_mp2rage(prof, models, subjects, config=cfg, training_seed=seed))
results = pd.concat(frames, ignore_index=True)
mp2 = pd.concat(mp2_frames, ignore_index=True)
wall = time.perf_counter() - t0
print(f"profile {prof.name}: training seeds {list(prof.seeds)}, data/grid seed {prof.seed}; "
      f"{cfg.n_subjects} test subject(s) × {cfg.n_images} IoD images per condition; "
      f"{results[['training_seed', 'sequence', 'model', 'kind', 'level', 'subject', 'image']].drop_duplicates().shape[0]}"
      f" segmentations in {wall:.0f} s")

# %% [markdown]
# ## What the artefacts look like
#
# One test subject, MPRAGE at TI = 0.9 s and SPGR at TR 30 ms / TE 5 ms / FA 30°:
# clean, with a 30 % B1+ error, with a receive bias of peak log amplitude 0.6,
# and at SNR 10. The B1+ field changes *contrast* (grey/white differences move
# with the local flip angle), the receive bias only brightness.

# %% tags=["hide-input"]
subj = subjects[0]
show = [("clean", None), ("B1+ 30 %", Artefacts(b1=(0.3, 0.3))), ("bias 0.6", Artefacts(bias=(0.6, 0.6))),
        ("SNR 10", Artefacts(snr=(10.0, 10.0)))]
theta = {"MPRAGE": torch.tensor([[0.9]]), "SPGR": torch.tensor([[0.030, 0.005, np.radians(30.0)]])}
fig, axes = plt.subplots(len(prof.sequences), len(show), figsize=(2.6 * len(show), 2.6 * len(prof.sequences)),
                         squeeze=False)
z = subj.maps.shape[3] // 2
for r, seq in enumerate(prof.sequences):
    for c, (title, art) in enumerate(show):
        draw = None if art is None else art.draw(1, generator=torch.Generator().manual_seed(prof.seed))
        img = simulate(subj.maps, sequence=seq, params=theta[seq], mask=subj.mask, artefacts=draw)[0, 0]
        axes[r, c].imshow(np.rot90(img[:, :, z].numpy()), cmap="gray", vmin=0, vmax=1.5)
        axes[r, c].set_title(f"{seq}: {title}", fontsize=9)
        axes[r, c].axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Dice under increasing artefacts
#
# Mean Dice over GM, WM and CSF (subjects, images and training seeds pooled);
# level 0 is the clean image. The table below gives every tissue.

# %% tags=["hide-input"]
tab = rb.summary(results)
clean = tab[tab["kind"] == "clean"]
kinds = [k for k in cfg.levels]


def plot_dice_vs_level(tab: pd.DataFrame, models) -> None:
    """Mean Dice against the artefact level (1/SNR for noise), the clean image at 0; one panel per sequence × kind."""
    fig, axes = plt.subplots(len(prof.sequences), len(kinds), figsize=(4 * len(kinds), 3 * len(prof.sequences)),
                             squeeze=False)
    at_zero = tab[tab["kind"] == "clean"]
    for r, seq in enumerate(prof.sequences):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            for model in models:
                d0 = at_zero[(at_zero["sequence"] == seq) & (at_zero["model"] == model)]
                d = tab[(tab["sequence"] == seq) & (tab["model"] == model) & (tab["kind"] == kind)]
                if d.empty or d0.empty:
                    continue
                xs = [0.0] + [1.0 / x if kind == "SNR" else x for x in d["level"]]
                ax.plot(xs, [float(d0["mean"].iloc[0])] + d["mean"].tolist(), marker="o", label=model)
            ax.set_title(f"{seq}: {kind}", fontsize=9)
            ax.set_xlabel("1 / SNR" if kind == "SNR" else "level")
            ax.set_ylabel("mean Dice")
    axes[0, -1].legend(fontsize=7)
    plt.tight_layout()
    plt.show()


plot_dice_vs_level(tab, prof.ablations)

# %%
tab.round(3)

# %% [markdown]
# ## Volume consistency under artefacts
#
# CoV × 10³ of the GM and WM volumes over a condition's images (different θ
# *and* different artefact draws), per subject, then averaged. With the clean
# images this is the IoD CoV of notebook 04 on this page's smaller grid.

# %%
rb.cov_summary(results).pivot_table(index=["sequence", "model"], columns=["kind", "level"],
                                    values="cov_x1000").round(1)

# %% [markdown]
# ## Out of family: MP2RAGE UNI to the MPRAGE models
#
# MP2RAGE (Marques et al. 2010) combines two gradient-echo images after one
# inversion into $\mathrm{UNI} = S_1S_2/(S_1^2+S_2^2) \in [-\tfrac12, \tfrac12]$,
# free of PD, T2\* and the receive field. Our equations are written as a chain
# of affine maps of $M_z$ (`physeg.simulation.sequences.mp2rage`) and are tested
# against an event-by-event pulse-train simulation. The curve of UNI against
# T1 for a 3 T protocol close to Marques' (TI1/TI2 = 0.7/2.5 s, 4°/5°, cycle
# 5 s) has the published shape: monotonic decreasing over the brain's T1
# range, white matter bright, CSF near −0.5.

# %% tags=["hide-input"]
t1 = torch.linspace(0.4, 4.5, 200, dtype=torch.float64)
p3t = torch.tensor([[mp2rage.MARQUES_3T[n] for n in mp2rage.NAMES]], dtype=torch.float64)
u = mp2rage.uni(mp2rage.mp2rage(torch.ones_like(t1), t1, torch.full_like(t1, 0.05), p3t))[0]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(t1, u)
for name, x in (("WM", 0.83), ("GM", 1.33), ("CSF", 4.2)):
    ax.axvline(x, color="grey", lw=0.5)
    ax.text(x, 0.45, name, fontsize=8)
ax.set_xlabel("T1 (s)")
ax.set_ylabel("UNI")
ax.set_ylim(-0.55, 0.55)
plt.show()
t1s = torch.tensor([0.5, 0.83, 1.33, 2.0, 4.2], dtype=torch.float64)
vals = mp2rage.uni(mp2rage.mp2rage(torch.ones_like(t1s), t1s, torch.full_like(t1s, 0.05), p3t))[0]
print("UNI at T1 =", ", ".join(f"{a:.2f} s: {b:+.3f}" for a, b in zip(t1s.tolist(), vals.tolist())))

# %% [markdown]
# The MPRAGE models are given the UNI image (UNI + ½, then the usual
# percentile normalisation) and, as physics input, TI = TI1. Beside each, the
# same models on the MPRAGE image at that TI. MP2RAGE parameters are drawn from
# its IoD box (`get_sequence("MP2RAGE").iod`) with the seed in the table.

# %% tags=["hide-input"]
if mp2.empty:
    display(Markdown("No MPRAGE models in this profile: nothing to test on MP2RAGE."))
else:
    out_family = rb.summary(mp2, by=("model", "kind"))
    display(out_family.round(3))
    print("MP2RAGE parameters seed:", sorted(mp2["seed"].unique().tolist()),
          "; IoD box:", {k: tuple(round(x, 4) for x in v) for k, v in get_sequence("MP2RAGE").iod.items()})

# %% [markdown]
# ## Training with artefacts: inside the equation or after it
#
# The usual way to make a segmenter robust to these artefacts is to multiply
# its training images by a random smooth field and add noise (TorchIO's
# `RandomBiasField` and `RandomNoise`, SynthSeg's generator). A physics
# simulator can instead put the flip-angle error *inside* the equation, where
# it changes contrast as on a scanner. Here two Phys-Strat-Aug models are
# trained at the profile's budget (same steps, same seed; the physics arm's
# draws come from the sampler's stream, so its later batches differ), one with
# the physics artefacts drawn per
# realisation inside the simulation (B1+ peak error 0–30 %, receive bias peak
# log 0–0.6, SNR 10–40), one with TorchIO's bias field (coefficients ±0.6,
# order 2) and Gaussian noise (SNR 10–40) applied to the clean simulated image
# (`physeg.training.augmentation.ARMS`). Both are then tested under the same
# artefacts as above, beside the plain Phys-Strat-Aug of notebook 03 trained
# with the same seed.

# %% tags=["hide-input"]
arm_seed = prof.seeds[0]
jobs = arm_jobs(prof)  # Phys-Strat-Aug x each arm x each sequence, first training seed
t1 = time.perf_counter()
arm_trained = train_jobs(prof, jobs, progress=False, workers=resolve_workers(None))
arm_train_s = time.perf_counter() - t1
arm_label = {"physics": "PSA + physics artefacts", "torchio": "PSA + TorchIO bias/noise"}
arm_models = load_models({(arm_label[j.augmentation], j.sequence): f for j, f in arm_trained["folders"].items()})
plain = train_all(prof, models=["Phys-Strat-Aug"], seed=arm_seed, progress=False)  # cached by notebook 03
arm_models |= {("PSA (clean training)", seq): m
               for (name, seq), m in load_models(model_folders(plain), names=["Phys-Strat-Aug"]).items()}
arms = rb.evaluate_artefacts(prof, arm_models, subjects, config=cfg, training_seed=arm_seed)
print(f"training seed {arm_seed}; {len(jobs)} models trained or reused in {arm_train_s:.0f} s "
      f"({int(arm_trained['summary']['cached'].sum())} from the cache)")
# where and in which precision each arm was trained (a copied GPU-trained folder says so in its finished.json)
arm_where = arm_trained["summary"].assign(arm=[j.augmentation for j in jobs],
                                          precision=lambda d: d["precision"].str.split().str[0])
display(arm_where[["arm", "sequence", "device", "precision", "wall_time_s"]].round(1))
arm_tab = rb.summary(arms)
display(arm_tab.pivot_table(index=["sequence", "model"], columns=["kind", "level"], values="mean").round(3))

# %% tags=["hide-input"]
plot_dice_vs_level(arm_tab, sorted(arms["model"].unique()))

# %% tags=["hide-input"]
arm_cov = rb.cov_summary(arms).pivot_table(index=["sequence", "model"], columns=["kind", "level"],
                                          values="cov_x1000").round(1)
display(arm_cov)
# the seed-to-seed spread of the plain Phys-Strat-Aug (first section, every training seed) as the yardstick
spread = rb.seed_spread(results, model="Phys-Strat-Aug")
gap = rb.arm_difference(arm_tab, first="PSA + physics artefacts", second="PSA + TorchIO bias/noise")
lines = [f"- {seq}, {kind} {level:g}: mean Dice physics − TorchIO {g:+.3f}" for (seq, kind, level), g in gap.items()]
verdict = ("the seed-to-seed SD of the plain Phys-Strat-Aug's mean Dice under these conditions is at most "
           f"{spread:.3f} (seeds {list(prof.seeds)}): a difference smaller than about twice that is not a finding"
           if spread == spread else "one training seed only: no spread to compare the difference with")
display(Markdown(f"Training seed {arm_seed} for both arms; {verdict}.\n\n" + "\n".join(lines)))

# %% [markdown]
# ## What this page shows, and what it does not
#
# The numbers above are this profile's: on `smoke` the models are trained for a
# few steps on 6 mm volumes, so only the *direction* of a change means
# anything, and even that only for large ones; on `demo` one test grid of
# 2 subjects × 2 images per condition is small, and the two augmentation arms
# are trained with one seed. On the demo budget every model is short of
# convergence (notebook 03), so an arm that wins here may simply have been
# easier to fit in the profile's few hundred steps; a B1+ field inside the
# equation is a harder training task than a brightness field.

# %% tags=["hide-input"]
drops = tab.merge(clean[["sequence", "model", "mean"]].rename(columns={"mean": "clean"}), on=["sequence", "model"])
drops = drops[drops["kind"] != "clean"]
drops["drop"] = drops["clean"] - drops["mean"]
worst = drops.sort_values("drop", ascending=False).groupby(["sequence", "kind"], observed=True).head(1)
lines = [f"- {r.sequence}, {r.kind} {r.level:g}: largest mean-Dice drop {r.drop:+.3f} ({r.model}, "
         f"{r.clean:.3f} → {r.mean:.3f})" for r in worst.itertuples()]
display(Markdown(f"Training seeds {list(prof.seeds)}; artefact draws seeded per sequence, condition and subject "
                 f"(`seed` column of the results, from profile seed {prof.seed}).\n\n" + "\n".join(lines)))

# %% [markdown]
# ## This run's numbers, and the committed runs'
#
# The summaries above go to this run's results folder (`robustness_*.csv`
# beside notebook 04's tables), so that `physeg reference freeze` keeps them
# with the rest of a run. Mean Dice per condition (tissues, subjects, images
# and training seeds pooled) of this run beside each committed run that holds
# this page's numbers:

# %% tags=["hide-input"]
from physeg.evaluation import seeds as seed_tables
from physeg.paths import build_root
from physeg.reference import compare
from physeg.reference.status import committed_runs

robustness_tables = {"robustness_summary": tab, "robustness_cov": rb.cov_summary(results),
                     "robustness_arms": arm_tab, "robustness_arms_cov": rb.cov_summary(arms)}
if not mp2.empty:
    robustness_tables["robustness_mp2rage"] = rb.summary(mp2, by=("model", "kind"))
written = seed_tables.write_csv_tables(robustness_tables, build_root() / "results" / prof.name)
print("written:", ", ".join(str(p) for p in written.values()))
keys = ["sequence", "model", "kind", "level"]
runs = committed_runs()
committed = {label: None if d is None or d.empty else d.set_index(keys)
             for label, d in compare.committed_tables(runs, "robustness_summary").items()}
if any(d is not None for d in committed.values()):
    display(Markdown(compare.banners(runs)))
    display(compare.side_by_side(tab.set_index(keys), committed, current_label=f"{prof.name} (this run)",
                                 values=["mean"]).round(3))
else:
    display(Markdown("No committed run holds this page's numbers yet: the frozen runs were frozen before the "
                     "page wrote them (the `reference-long` page is recorded as text in "
                     "`runs/2026-11-26-reference-long-gpu/page09.md`)."))
