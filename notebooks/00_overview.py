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
# # physeg: acquisition-invariant brain MRI segmentation, re-run
#
# This site re-implements and re-runs Borges et al. 2021, *Acquisition-invariant
# brain MRI segmentation with informative uncertainties*. Every number and figure
# on these pages was computed by the notebooks when the site was built; the
# paper's own numbers are shown beside ours, and where they differ we say so.
#
# **The problem.** A segmentation network trained on one scanner protocol breaks
# when the protocol changes: the tissue contrast moves with the inversion time,
# the flip angle, the repetition and echo times. Volumes of grey and white matter
# then change with the protocol rather than with the brain.
#
# **The paper's answer.** Train on images *simulated* from quantitative maps
# (proton density PD, $T_1$, $T_2^*$) with static signal equations, so that one
# brain appears under many protocols with one label map, the *physics gold
# standard* (PGS). For MPRAGE the signal is
#
# $$
# S_\text{MPRAGE} = \mathrm{PD}\left(1 - \frac{2\,e^{-\mathrm{TI}/T_1}}{1 + e^{-(\mathrm{TI} + T_D + \tau)/T_1}}\right),
# $$
#
# and for a spoiled gradient echo (SPGR)
#
# $$
# S_\text{SPGR} = \mathrm{PD}\,\sin\alpha\,\frac{\left(1 - e^{-\mathrm{TR}/T_1}\right) e^{-\mathrm{TE}/T_2^*}}{1 - \cos\alpha\, e^{-\mathrm{TR}/T_1}}.
# $$
#
# The network receives the acquisition parameters as an extra input
# (*physics*), sees several realisations of the same subject in one batch and is
# told to give them the same features (*stratification*), and simulates new
# realisations on the fly during training (*augmentation*). Dropout and a
# heteroscedastic output give 50 epistemic and 50 aleatoric samples per image,
# from which calibrated volume intervals follow.

# %% tags=["parameters"]
profile = "demo"

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import FancyBboxPatch

from physeg.reproduce import provenance
from physeg.profiles import get_profile

# %% [markdown]
# ## The pipeline

# %% tags=["hide-input"]
steps = [
    ("Quantitative maps\nPD, $T_1$, $T_2^*$", "02"),
    ("Physics gold\nstandard (GMM)", "02"),
    ("Simulation layer\nMPRAGE / SPGR", "01"),
    ("Physics-conditioned\nU-Net", "03"),
    ("Dice, CoV\nIoD vs OoD", "04"),
    ("50 + 50 samples\ncalibrated intervals", "05"),
]
fig, ax = plt.subplots(figsize=(11, 2.2))
for i, (label, nb) in enumerate(steps):
    ax.add_patch(FancyBboxPatch((i * 1.9, 0), 1.6, 1, boxstyle="round,pad=0.05", fc="#e8f0fa", ec="#2b5d8a"))
    ax.text(i * 1.9 + 0.8, 0.55, label, ha="center", va="center", fontsize=9)
    ax.text(i * 1.9 + 0.8, 0.12, f"notebook {nb}", ha="center", va="center", fontsize=7, color="#555")
    if i < len(steps) - 1:
        ax.annotate("", xy=((i + 1) * 1.9 - 0.05, 0.5), xytext=(i * 1.9 + 1.65, 0.5), arrowprops=dict(arrowstyle="->"))
ax.set_xlim(-0.1, len(steps) * 1.9)
ax.set_ylim(-0.1, 1.1)
ax.axis("off")
plt.show()

# %% [markdown]
# ## The pages
#
# | notebook | what it shows |
# |---|---|
# | 01 simulation | the two signal equations, contrast over the parameter ranges, the simulation layer and its speed |
# | 02 data and PGS | the synthetic MPM cohort built from the MNI152 templates shipped with `nilearn`, the physics gold standard and how well it recovers the generating tissues |
# | 03 training | the network, stratified batches, every ablation trained on this page's profile |
# | 04 evaluation | Dice and volume consistency (CoV) in and out of the training range, Tables 1–2 beside the paper's, statistics |
# | 05 uncertainty | aleatoric vs epistemic samples, calibrated volume intervals, Figure 3 |
# | 06 claims | each claim of the paper: reproduced, not reproduced, or not testable here |
# | 07 segment your scan | the trained models on a new image: `physeg simulate` and `physeg segment`, volumes with intervals |
# | 08 design | how the code is organised, the model-folder contract, and why |
#
# The cohort is **synthetic**: the paper's 27-subject MPM cohort is not public,
# so we generate 27 subjects from the MNI152 2009 template. Real
# MPM data in BIDS qMRI layout can replace it by changing one parameter.

# %% [markdown]
# ## What produced these pages
#
# The profile sets the size of everything: `smoke` checks that the chain runs
# (CI), `demo` is a laptop-CPU run that shows the direction of the claims,
# `paper` uses the paper's settings on a GPU. Numbers from `smoke` and `demo`
# are **not** the paper's experiment: volumes are coarser and training is short.
# Every page opens with the profile, seed(s), commit, device and date of the run
# that executed it (written into the page by the runner); the full record:

# %% tags=["hide-input"]
prov = provenance.collect(profile)
pd.DataFrame({"value": prov}).rename_axis("run")

# %% tags=["hide-input"]
pd.DataFrame({"value": get_profile(profile).flat_dict()}).rename_axis(f"profile {profile}")

# %% [markdown]
# ## Re-running this site
#
# From a clone of the repository, `make paper` installs everything into `.venv`,
# executes these notebooks with papermill on the `demo` profile and builds the
# static site into `_build/html`. `make paper PROFILE=smoke` runs the CI-sized
# version; `make paper PROFILE=paper` runs the paper's settings (GPU). Heavy
# results are cached under `~/.cache/physeg` by the hash of what produced them,
# so re-executing a notebook reuses them.
