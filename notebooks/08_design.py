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
# # 08 — How the code is built, and why
#
# The pages before this one tell the paper's story; this one tells the
# story of the code that computed them: the stages of the pipeline, where each
# lives in the `physeg` package, the one file every trained model carries, and
# the reasons behind the main design decisions, each tied to the section of
# Borges et al. (2021) it serves.

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import dataclasses
import importlib
import re

from IPython.display import Markdown, display

import physeg
from physeg.models.plans import PLANS_FILE, Plans


def markdown_table(header, rows):
    """A Markdown table (rendered as prose on the site) from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return Markdown("\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]))

# %% [markdown]
# ## The pipeline, stage by stage
#
# | stage | what happens | paper | package |
# |---|---|---|---|
# | maps | quantitative maps PD, $T_1$, $T_2^*$ of each subject: a synthetic cohort, or real maps in BIDS qMRI layout | §3.1 | `physeg.data` |
# | labels | one physics gold standard (PGS) per subject, a literature Gaussian mixture on the maps | §3.2 | `physeg.pgs` |
# | simulation | MPRAGE and SPGR images from the maps by static equations, a batch of protocols in one call | §2.3, §3.2 | `physeg.simulation` |
# | model | the ablation registry, the U-Net whose physics branch maps $\theta \mapsto \varphi(\theta)$, the losses, the two uncertainty samplers, the model-folder contract | §2.1, §2.2, §2.4, §4 | `physeg.models` |
# | training | pre-generated or on-the-fly realisations, mixed or stratified batches, the loop with validation and early stopping, every model of a profile | §2.1–2.3, §4 | `physeg.training` |
# | inference | one predictor (sliding windows over the training patch size) used by validation, evaluation and `physeg segment` | §2.1, §2.4 | `physeg.inference` |
# | evaluation | Dice, CoV, paired tests, calibrated volume intervals, the paper's tables beside ours, the claims | §4, §4.1 | `physeg.evaluation` |
# | reproduction | execute these notebooks, stamp each page with its provenance, build and check this site | — | `physeg.reproduce` |
# | command line | `physeg paper`, `data`, `pgs`, `simulate`, `train`, `segment` | — | `physeg.cli` |
#
# Three small modules are shared by every stage: `physeg.profiles` (the
# three sizes of one configuration), `physeg.paths` (where caches and builds
# go) and `physeg.conventions` (tissue labels, distribution names, derived
# seeds). The table below is generated from the package itself, so it is the
# layout of the code that built this page.

# %% tags=["hide-input"]
PACKAGES = ("simulation", "data", "pgs", "models", "training", "inference", "evaluation", "reproduce", "cli",
            "profiles", "paths", "conventions")
rows = []
for name in PACKAGES:
    first = (importlib.import_module(f"physeg.{name}").__doc__ or "").strip().splitlines()[0]
    rows.append((f"`physeg.{name}`", re.sub(r":\w+:", "", first).replace("``", "`")))
display(markdown_table((f"physeg {physeg.__version__}", "first line of its docstring"), rows))

# %% [markdown]
# ## The model-folder contract
#
# A trained model is a folder. Its `plans.json` says what the model is and how
# to apply it: the ablation's switches, the sequence, the seed, the network
# configuration, the voxel size and patch size, the training ranges of the
# acquisition parameters (seconds, radians), the training settings and the
# version of the training code. One typed class, `physeg.models.plans.Plans`,
# writes it (training) and reads it (loading a model for evaluation or
# `physeg segment`);
# nobody else parses the file. Reading is strict: an unknown or a missing key
# is an error that names the key and the file. The fields:

# %% tags=["hide-input"]
display(markdown_table(
    (f"`{PLANS_FILE}` field", "type", "hashed into the folder name"),
    [(f"`{f.name}`", f"`{f.type}`", "no" if f.name in ("provenance", "plans_version") else "yes")
     for f in dataclasses.fields(Plans)],
))

# %% [markdown]
# Why: three consumers need the same description of a model, and a loose
# dictionary read in three places drifts. With one class there is one
# spelling of each key, a version number, and a loud failure on a folder
# written by another version instead of a half-understood model. The fields
# that determine the weights are hashed into the folder name, so a changed
# setting gives a new folder and a finished folder is reused safely; provenance
# (versions, device, commit) is recorded but not hashed.
#
# ## Decisions, and the reasons for them
#
# **The simulation is a layer, not a preprocessing step** (§2.3). One
# vectorised function renders a batch of protocols from one subject's maps;
# the same function pre-generates the fixed realisations of the ablations
# without augmentation, simulates new ones for every batch of Phys-Strat-Aug,
# builds the test grids and serves `physeg simulate`. A difference between
# ablations can then come only from how the images are used, never from two
# implementations of the equations. Times are in seconds and angles in
# radians everywhere inside; degrees and milliseconds exist only at the edges.
#
# **The network takes θ and computes φ(θ) itself** (§2.1). Callers pass the
# acquisition parameters as measured (MPRAGE: TI; SPGR: TR, TE, FA); the
# physics branch maps them to features, two fully connected layers and the
# early and late injections. No caller has to know the feature map, and a
# model folder cannot be applied with features computed another way.
#
# **Stratification is a property of the batch** (§2.2). The feature loss is
# meaningful only when a batch holds realisations of one subject at one patch
# location; the batch sampler guarantees that, and the loss only compares the
# penultimate features it is given. Mixed and stratified batches differ in
# one switch of the registry, as the ablations of §4 differ in one change
# each.
#
# **Randomness of the uncertainty models is drawn in one place** (§2.4). The
# logit noise of the aleatoric model (in its loss and at inference) and the
# Monte-Carlo dropout of the epistemic model each have one function, so
# training and sampling cannot disagree on what a sample is.
#
# **Artefacts belong to the simulation, and an augmentation is a training
# option** (§5). B1+ error, receive bias and Rician noise are drawn inside the
# layer, so a flip-angle error changes contrast through the equation; the
# usual alternative (TorchIO's multiplicative field and noise after the
# simulation) is the same option with another arm. A model trained with either
# gets its own cache folder, hashed with the arm, so page 09 can compare them
# at the same budget without touching the ablations.
#
# **The same function, a faster layout** (§2.1). On a CPU every training step
# and every inference call runs the network with its instance norms computed
# as channels-last group norms (`physeg.models.layout`): the function is the
# same up to float rounding (tested, gradients included), the convolutions
# skip a memory reorder, and a training step costs about three quarters of
# the plain one.
#
# **One predictor** (§2.1, §2.4). Validation during training, the evaluation
# of notebook 04 and `physeg segment` all apply a model by the same
# sliding-window inference over the training patch size. A Dice on this site
# and a volume from the command line are therefore computed the same way.
#
# **One configuration, five sizes.** The `paper` profile holds the paper's
# settings (1 mm maps, 128³ patches, batch 4, learning rate $10^{-4}$, early
# stopping after 7 epochs without improvement, §2.1); `reference-long`,
# `reference`, `demo` and `smoke` shrink sizes and budgets, never the method.
# Each page says which profile produced it, because their numbers are not the
# paper's experiment; the committed `reference` run (360 training steps per
# model, on the CPU) and `reference-long` run (the same, 1440 steps, trained
# on a GPU, uncertainty on 10 images per cell) are shown beside every `demo`
# result, so a reader sees which verdicts move when the models train longer.
#
# **Results are cached by what produced them.** Models, evaluation and
# uncertainty results live in folders named by a hash of their configuration
# (the synthetic cohort by its generator version, voxel size and seed), so
# re-executing a page reuses finished work and a change of any input
# recomputes what it affects (and only that: the segmentation tables' key
# leaves out the uncertainty settings, so asking for more uncertainty images
# does not re-segment the test grid).
#
# **Statistics state their unit** (§4). The paper bolds the best model at
# p < 0.01 without naming the paired unit; our tests say which unit they pair
# (image or subject), how small a p-value that unit can reach, and report
# effect sizes and intervals beside p.
#
# **The notebooks are the paper; the library owns the logic.** A notebook
# explains, calls the library and plots; anything worth testing lives in
# `physeg` and is tested there. The runner executes the numbered notebooks
# in order with papermill, injects the profile, writes the provenance header
# (profile, seed(s), commit, device, date) under each page's title, and stops
# at the first failing cell. The site is built offline with MyST and a local
# template that folds plotting code, and it is checked in a headless browser
# before it is published: links, equations, figures, and no stray stderr.
