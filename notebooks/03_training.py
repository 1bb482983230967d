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
# # 03 — Training the physics-informed segmenters
#
# This notebook trains (or loads from the cache) every model of the annealing
# study (paper §4) and the uncertainty models (§4.1), for MPRAGE and SPGR:
#
# | model | physics input | data | batches | stratification loss |
# |---|---|---|---|---|
# | Baseline | no | pre-generated | mixed subjects | no |
# | Phys-Base | yes | pre-generated | mixed subjects | no |
# | Phys-Strat | yes | pre-generated | one subject, one patch | yes |
# | Phys-Strat-Aug | yes | simulated on the fly | one subject, one patch | yes |
#
# plus epistemic (MC dropout) and aleatoric (σ head) variants of Baseline and
# Phys-Strat-Aug. The code lives in `physeg.models.network`, `physeg.models.losses`,
# `physeg.training.batches`, `physeg.training.loop` and `physeg.training.orchestrate`; this page
# explains and plots.

# %% tags=["parameters"]
profile = "smoke"
workers = None  # training processes side by side; None = one per available CPU core (1 on a GPU)

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from physeg.reproduce import provenance
from physeg.models.registry import MODELS, profile_models
from physeg.models.network import build_network, describe
from physeg.training.orchestrate import load_volumes, profile_jobs, train_jobs
from physeg.training.parallel import resolve_workers
from physeg.profiles import get_profile
from physeg.training.batches import TrainingBatches
from physeg.training.identity import network_config

P = get_profile(profile)
W = resolve_workers(workers)
print(P.name, "| patch", P.patch_size, "| channels", P.channels, "| batch", P.training.batch_size,
      "| epochs ≤", P.training.max_epochs, "×", P.training.steps_per_epoch, "steps | λ =", P.training.strat_weight)

# %% [markdown]
# ## The network and where the physics enters
#
# A 3D nnU-Net-style U-Net built from MONAI blocks. The acquisition parameters
# θ (MPRAGE: TI; SPGR: TR, TE, FA) become features φ(θ) (MPRAGE: TI, e^{-TI};
# SPGR: TR, TE, FA, e^{-TR}, e^{-TE}, sin FA), pass through two fully connected
# layers
#
# $$
# h = \mathrm{SELU}\big(W_2\,\mathrm{SELU}(W_1\,\varphi(\theta) + b_1) + b_2\big) \in \mathbb{R}^{40},
# $$
#
# and $h$ is tiled over space and concatenated as 40 channels **early**, to the
# input of the first down-sampling convolution, and **late**, to the output of
# the last up-sampling block (the ante-penultimate layer), which feeds the
# penultimate block whose output is used by the stratification loss. (The
# convolution of the tiled channels is computed as a one-channel convolution of
# a map of ones with a per-sample kernel: the same numbers at a fraction of
# the cost.)

# %%
seq = P.sequences[0]
phys_net = build_network(network_config(MODELS["Phys-Strat-Aug"], profile=P, sequence=seq))
print(describe(phys_net))
print()
print(describe(build_network(network_config(MODELS["Baseline"], profile=P, sequence=seq))))


# %% tags=["hide-input"]
def draw_unet(channels, ax):
    """Schematic: encoder down the left, decoder up the right, physics injections in red."""
    L = len(channels)
    for k, c in enumerate(channels):
        ax.add_patch(plt.Rectangle((k * 0.9, -k), 0.6, 0.6, color="tab:blue", alpha=0.6))
        ax.text(k * 0.9 + 0.3, -k + 0.3, f"enc{k}\n{c}", ha="center", va="center", fontsize=8)
        if k < L - 1:
            x = (2 * L - 2 - k) * 0.9
            ax.add_patch(plt.Rectangle((x, -k), 0.6, 0.6, color="tab:green", alpha=0.6))
            ax.text(x + 0.3, -k + 0.3, f"up{k}\n{c}", ha="center", va="center", fontsize=8)
            ax.annotate("", xy=(x, -k + 0.3), xytext=(k * 0.9 + 0.6, -k + 0.3),
                        arrowprops=dict(arrowstyle="->", color="grey", ls=":"))
    xp = (2 * L - 1) * 0.9
    ax.add_patch(plt.Rectangle((xp, 0), 0.6, 0.6, color="tab:orange", alpha=0.7))
    ax.text(xp + 0.3, 0.3, "penult.\nfeatures", ha="center", va="center", fontsize=8)
    ax.add_patch(plt.Rectangle((xp + 0.9, 0), 0.6, 0.6, color="tab:purple", alpha=0.6))
    ax.text(xp + 1.2, 0.3, "1×1×1\nlogits", ha="center", va="center", fontsize=8)
    ax.add_patch(plt.Rectangle((xp - 0.2, 1.4), 1.6, 0.5, color="tab:red", alpha=0.6))
    ax.text(xp + 0.6, 1.65, "φ(θ) → FC40 → FC40", ha="center", va="center", fontsize=8)
    ax.annotate("early", xy=(0.75, -0.6), xytext=(xp - 0.2, 1.6), color="tab:red",
                arrowprops=dict(arrowstyle="->", color="tab:red"))
    ax.annotate("late", xy=(xp + 0.1, 0.6), xytext=(xp + 0.3, 1.4), color="tab:red",
                arrowprops=dict(arrowstyle="->", color="tab:red"))
    ax.set_xlim(-0.3, xp + 1.8)
    ax.set_ylim(-L + 0.2, 2.2)
    ax.axis("off")


fig, ax = plt.subplots(figsize=(9, 3.5))
draw_unet(P.channels, ax)
ax.set_title(f"U-Net ({P.name} widths) with early and late physics injection")
plt.show()

# %% [markdown]
# ## Batch stratification (paper §2.2)
#
# A stratified batch holds $N$ realisations of ONE subject at ONE patch
# location, each simulated with different acquisition parameters. The labels
# (the physics gold standard) are identical across the batch, so the
# penultimate features $F_n$ should be too; the stratification loss is the mean
# over pairs of the mean squared difference,
#
# $$
# L_\text{strat} = \binom{N}{2}^{-1}\sum_{n<m}\frac{1}{D}\lVert F_n - F_m\rVert^2
# = \frac{2}{D}\sum_d \widehat{\mathrm{Var}}_n(F_{n,d}),
# $$
#
# added to the cross-entropy with weight λ. Below, a real on-the-fly batch
# (Phys-Strat-Aug) of this profile's size, from the training subjects.

# %% tags=["hide-input"]
volumes = load_volumes(P)
n_batch = P.training.batch_size
sampler = TrainingBatches(volumes["train"], sequence=seq, patch_size=P.patch_size, batch_size=n_batch,
                          data="onthefly", batches="stratified", seed=0)
batch = sampler.next_batch()
z = P.patch_size // 2
fig, axes = plt.subplots(1, n_batch + 1, figsize=(2.6 * (n_batch + 1), 3))
for i in range(n_batch):
    axes[i].imshow(batch["image"][i, 0, :, :, z].T.cpu(), cmap="gray", origin="lower")
    axes[i].set_title(", ".join(f"{v:.3g}" for v in batch["params"][i].tolist()), fontsize=8)
    axes[i].axis("off")
axes[n_batch].imshow(batch["label"][0, :, :, z].T.cpu(), cmap="viridis", origin="lower", vmin=0, vmax=3)
axes[n_batch].set_title("PGS (same for all)", fontsize=8)
axes[n_batch].axis("off")
fig.suptitle(f"one stratified {seq} batch: subject index {int(batch['subject'][0])}, "
             f"patch corner {batch['start'][0].tolist()} (parameters in s / rad)")
plt.show()

# %% [markdown]
# ## Training every model
#
# Each model is trained for epochs of `steps_per_epoch` Adam steps, validated
# after every epoch on the validation subjects, each simulated with a fixed set
# of in-distribution parameters, segmented whole-volume by sliding windows.
# The early-stopping score is
#
# $$
# \text{score} = \tfrac13\sum_{k\in\{GM,WM,CSF\}} \overline{\text{Dice}}_k
#              - \tfrac13\sum_k \overline{\text{CoV}}_k ,
# $$
#
# the CoV being the SD/mean of a subject's tissue volume over its realisations.
# Validation runs every `val_every_epochs` epochs and after the last; training
# stops after `patience` validations without improvement, and the best
# validated weights are kept. Results are cached under a folder named by the
# hash of everything that produced them, so re-running this notebook reuses them.
#
# Every ablation is trained once per training seed of the profile (the
# seed-to-seed spread is what the claims are judged against, notebook 04); the
# uncertainty variants once, with the first seed. The models are independent
# (an epistemic variant waits for its deterministic parent), so they are
# trained side by side, one process per CPU core with one thread each
# (`physeg.training.parallel`): on a small network that keeps both cores of a
# laptop busy where two threads on one model would not.

# %%
t0 = time.perf_counter()
result = train_jobs(P, profile_jobs(P), progress=False, workers=W)
notebook_train_s = time.perf_counter() - t0
summary = result["summary"]
cols = ["model", "sequence", "seed", "epochs", "best_epoch", "wall_time_s", "val_dice_GM", "val_dice_WM",
        "val_dice_CSF", "val_cov_GM", "val_cov_WM", "val_cov_CSF", "best_score", "cached"]
print(f"{len(summary)} models, {W} worker process(es)")
summary[[c for c in cols if c in summary]].round(4)

# %% [markdown]
# ### A tissue that never appears
#
# A short run can end without ever predicting one tissue: on the demo's cohort
# (generator version 2) 7 of its 16 ablation models ended with validation CSF
# Dice 0, each on one training seed and not the other, and their GM took the
# missing voxels. An untrained network's soft-max is about uniform over the
# four labels while background fills about half of a training patch and CSF a
# tenth. With the profile's `prior_bias`, the output bias starts at the log of
# each label's share of training-patch voxels (computed exactly from the label
# maps, `physeg.training.patches.patch_label_frequencies`); in six paired runs
# (`benchmarks/convergence.py`) a tissue stayed at zero in 3 without it and in
# 1 with it. The fine-tuned uncertainty variants start from their parent
# instead. The models of this run that still lost a tissue:

# %% tags=["hide-input"]
dice_cols = ["val_dice_GM", "val_dice_WM", "val_dice_CSF"]
stuck = summary[(summary[dice_cols] < 0.05).any(axis=1)]
print(f"output prior (prior_bias) on this profile: {P.training.prior_bias}; "
      f"models with a tissue at validation Dice < 0.05: {len(stuck)} of {len(summary)}")
stuck[["model", "sequence", "seed", *dice_cols]].round(3)

# %% [markdown]
# ## Uncertainty variants beside their parents
#
# An uncertainty variant should segment as well as the deterministic model it
# comes from: the epistemic one is that model fine-tuned with dropout after
# every convolution and validated by the vote of Monte-Carlo samples (as it is
# used), the aleatoric one adds a σ head. We ask that no tissue's validation
# Dice falls more than 0.03 below the parent's. The paper's dropout (0.5) on
# this narrow network misses that by far (the `reference-long` rows in the
# committed runs below); the CPU profiles use the profile's `epistemic_dropout`.
# These are validation figures from the 4-sample vote that selects the
# checkpoint, on a handful of images; notebook 05 compares the epistemic
# models with their parents on the test images, with the profile's number of
# samples and their mean soft-max, as the models are used.

# %% tags=["hide-input"]
from physeg.evaluation.models import variants_against_parents

print(f"epistemic dropout of this profile: {P.epistemic_dropout} (input 0.05)")
gaps = variants_against_parents(summary)
gaps.round(3)

# %% [markdown]
# ## Learning curves

# %% tags=["hide-input"]
first_seed = P.seeds[0]
hist = pd.concat(
    [pd.read_csv(f / "metrics.csv").assign(model=job.model, sequence=job.sequence)
     for job, f in result["folders"].items() if job.seed == first_seed],
    ignore_index=True,
)
fig, axes = plt.subplots(len(P.sequences), 3, figsize=(14, 3.6 * len(P.sequences)), squeeze=False)
for r, s in enumerate(P.sequences):
    for name, g in hist[hist.sequence == s].groupby("model", sort=False):
        axes[r, 0].plot(g.epoch, g.train_loss, marker="o", label=name)
        v = g.dropna(subset=["val_dice_mean"])  # validated epochs only
        axes[r, 1].plot(v.epoch, v.val_dice_mean, marker="o", label=name)
        axes[r, 2].plot(v.epoch, v.val_cov_mean, marker="o", label=name)
    axes[r, 0].set_ylabel(f"{s}\ntraining loss")
    axes[r, 1].set_ylabel("val mean Dice (GM, WM, CSF)")
    axes[r, 2].set_ylabel("val mean CoV")
    for a in axes[r]:
        a.set_xlabel("epoch")
axes[0, 2].legend(fontsize=7, loc="upper right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What this profile cost

# %% tags=["hide-input"]
cost = summary.pivot_table(index="model", columns=["sequence", "seed"], values="wall_time_s", sort=False).round(1)
print(provenance.collect(P.name))
print(f"{len(summary)} models; training wall time (sum over models, this run or when cached): "
      f"{summary.wall_time_s.sum() / 60:.1f} min; this notebook's training call ({W} worker process(es)): "
      f"{notebook_train_s / 60:.1f} min")
cost

# %% [markdown]
# ## Reference: the same models trained longer
#
# Validation Dice (mean over training seeds) of this run's models beside the
# committed runs' (`results/<run>/models.csv`): `reference`, the same network
# at 4 mm trained 20 epochs × 18 steps of batch 4 on the CPU (the demo: 16 ×
# 18 steps of batch 2, i.e. 288 steps seeing the patches of 144 such steps), and
# `reference-long`, trained 80 × 18 steps on a GPU; three seeds each. The gaps
# between the columns show how far this profile's models are from where longer
# training takes them; the paper trained to early stopping on a GPU and reports
# no validation figures.

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from physeg.reference import compare
from physeg.reference.status import committed_runs

runs = committed_runs()
display(Markdown(compare.banners(runs)))
committed = {k: compare.model_validation(t) for k, t in compare.committed_tables(runs, "models").items()}
compare.side_by_side(compare.model_validation(summary), committed, current_label=f"{P.name} (this run)").round(3)

# %% [markdown]
# The committed runs' uncertainty variants beside their parents (`reference`:
# epistemic dropout 0.1; `reference-long`: the paper's 0.5):

# %% tags=["hide-input"]
compare.side_by_side(gaps.set_index(["model", "sequence", "seed"]) if not gaps.empty else None,
                     {k: None if t is None else variants_against_parents(t).set_index(["model", "sequence", "seed"])
                      for k, t in compare.committed_tables(runs, "models").items()},
                     current_label=f"{P.name} (this run)",
                     values=["diff_GM", "diff_WM", "diff_CSF", "within"]).round(3)
