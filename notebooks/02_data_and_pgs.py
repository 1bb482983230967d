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
# # 02 — Data and the Physics Gold Standard
#
# The paper trains on simulations from the quantitative maps (R1, R2\*, PD) of
# 27 subjects (18 train / 4 validation / 5 test) and scores every model against
# one *Physics Gold Standard* (PGS) segmentation per subject (§3.1–3.2). That
# cohort is not public, so by default we build a synthetic stand-in from the
# MNI152 2009 tissue priors shipped with nilearn (offline, deterministic, with
# checksums in `data_manifest.yaml`). Set `bids_root` to a BIDS qMRI folder of
# real MPMs (`R1map`/`R2starmap`/`PDmap` or `T1map`/`T2starmap`) to run the same
# page on real data.

# %% tags=["parameters"]
profile = "smoke"
bids_root = None

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from physeg.data import build_cohort, cohort_split, list_subjects, load_subject
from physeg.data.cohort import SPLIT
from physeg.pgs import PGS_OPTIONS, TISSUES, pgs_posteriors, tissue_parameters, truth_labels, validate_pgs
from physeg.profiles import get_profile

prof = get_profile(profile)
synthetic = bids_root is None
root = build_cohort(prof, progress=False) if synthetic else Path(bids_root)
if synthetic:
    split = cohort_split(prof)
else:
    split = {"all": list_subjects(root)}
subjects = [load_subject(root, s) for ids in split.values() for s in ids]
print(f"{len(subjects)} subjects from {root}")
print(f"grid {tuple(subjects[0].maps.shape[1:])}, voxel {subjects[0].voxel_volume_ml * 1000:.0f} mm^3")

# %% [markdown]
# ## The split
#
# Fixed in code (`physeg.data.cohort.SPLIT`) and recorded in the dataset's
# `dataset_description.json` and `participants.tsv`; a profile uses the first
# `n_train / n_val / n_test` subjects of each part.

# %% tags=["hide-input"]
pd.DataFrame(
    {part: [len(SPLIT[part]), ", ".join(SPLIT[part][:3]) + " …",
            len(split.get(part, [])) if synthetic else "-"] for part in SPLIT},
    index=["cohort", "first ids", f"used by {profile}"],
).T

# %% [markdown]
# ## The synthetic generative model
#
# Tissue fractions $p_k(x)$ (GM, WM, CSF; CSF $=$ mask $-$ GM $-$ WM) of the MNI152
# template are block-averaged to the profile's voxel size, thinned (cortical GM
# to CSF, ventricle growth) by a per-subject atrophy factor and smoothly
# deformed. Each subject draws its tissue parameters around the literature
# values, with smooth within-tissue texture. Partial-volume voxels mix the
# relaxation **rates**:
#
# $$ R_1(x) = \frac{\sum_k p_k(x)\, R_{1,k}(x)}{\sum_k p_k(x)}, \qquad
#    R_2^*(x) = \frac{\sum_k p_k(x)\, R^*_{2,k}(x)}{\sum_k p_k(x)}, \qquad
#    PD(x) = B(x) \sum_k p_k(x)\, PD_k(x) $$
#
# with $B$ a smooth receive field, then Gaussian map noise. The $p_k$ are kept
# as ground truth.
#
# **The brain's edge.** The template's brain mask ends where its background
# begins, and background has no protons. A voxel at the edge that is half grey
# matter and half background keeps grey matter's rates but half its PD: dark
# like CSF in the image, while the PGS, which reads T1, calls it grey matter
# (generator version 1; at 4 mm a fifth of the PGS's CSF voxels were background
# in the truth). A real brain lies in CSF, so version 2 (the default; the
# frozen CPU references keep version 1) turns the background within a few
# millimetres of tissue into CSF before the maps are mixed,
# $\Delta p_\text{CSF} = p_\text{bg}\,\min\!\big(1,\ 3\, G_{2\,\mathrm{mm}} * (1 - p_\text{bg})\big)$,
# so an edge voxel mixes tissue with CSF in its rates, its PD and its truth.

# %% tags=["hide-input"]
subj = subjects[0]
z = subj.maps.shape[-1] // 2 + 2
with np.errstate(divide="ignore"):
    r1 = np.where(subj.maps[1] > 0, 1 / subj.maps[1].numpy(), 0)
    r2s = np.where(subj.maps[2] > 0, 1 / subj.maps[2].numpy(), 0)
panels = [("R1 (1/s)", r1), ("R2* (1/s)", r2s), ("PD (a.u.)", subj.maps[0].numpy())]
if subj.truth is not None:
    panels += [(f"truth p_{t}", subj.truth[i + 1].numpy()) for i, t in enumerate(TISSUES)]
fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
for ax, (title, img) in zip(axes, panels):
    im = ax.imshow(np.rot90(img[:, :, z]), cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.suptitle(f"{subj.subject_id}, axial slice {z}")
plt.tight_layout()

# %% [markdown]
# ## Literature tissue parameters (3 T)
#
# Means from `physeg.simulation.tissues` (T1: Wansapura et al. 1999; T2\*:
# Peters et al. 2007; CSF and PD: conventional values), spreads from
# `physeg.pgs.LITERATURE_SD`.

# %% tags=["hide-input"]
lit = tissue_parameters()
pd.DataFrame(
    {t: {q: f"{m:g} ± {s:g}" for q, (m, s) in lit[t].items()} for t in TISSUES}
).T.rename(columns={"T1": "T1 (s)", "T2star": "T2* (s)", "PD": "PD (a.u.)"})

# %% [markdown]
# ## The PGS mixture on the T1 histogram
#
# Default PGS (faithful to the paper's description): one Gaussian per tissue on
# the T1 map with the literature mean and SD, equal priors, no refitting;
#
# $$ \ell(x) = \arg\max_k \; \pi_k\, \mathcal N\!\left(T_1(x);\, \mu_k, \sigma_k^2\right) $$
#
# inside the brain mask. Because rates mix, a WM/GM voxel crosses the decision
# boundary near 50 % GM; a GM/CSF voxel already at about 30 % CSF (CSF's long
# T1 dominates $1/\sum p_k R_{1,k}$).

# %% tags=["hide-input"]
post, model = pgs_posteriors(subj.maps, subj.mask)
t1 = subj.maps[1][subj.mask].numpy()
grid = np.linspace(0.3, 5.5, 600)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(t1, bins=120, range=(0.3, 5.5), density=True, color="0.75", label="T1 in mask")
for k, t in enumerate(TISSUES):
    m, v, w = model["mean"][k, 0], model["var"][k, 0], model["prior"][k]
    ax.plot(grid, w * np.exp(-(grid - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v), label=f"{t} component")
ax.set_xlabel("T1 (s)")
ax.set_ylabel("density")
ax.set_yscale("log")
ax.set_ylim(1e-3, None)
ax.legend()
plt.tight_layout()

# %% [markdown]
# ## PGS against the generating truth
#
# Dice per tissue between the PGS and the argmax of the generating fractions
# $[p_\text{bg}, p_\text{GM}, p_\text{WM}, p_\text{CSF}]$, for the default and
# the ablation options (multi-map diagonal Gaussian; EM refinement started at
# the literature values).

# %% tags=["hide-input"]
if all(s.truth is not None for s in subjects):
    rows = pd.DataFrame(validate_pgs(subjects))
    table = rows.groupby("option", sort=False)[list(TISSUES)].agg(["mean", "std"]).round(3)
    display(table)  # noqa: F821
else:
    print("no ground truth in this dataset: Dice against truth is not available")

# %% tags=["hide-input"]
if subj.truth is not None:
    ref = truth_labels(subj.truth).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    cmap = plt.get_cmap("viridis", 4)
    for ax, (title, lab) in zip(axes, [("truth argmax", ref), ("PGS (default)", subj.pgs.numpy()),
                                       ("disagreement", (ref != subj.pgs.numpy()) & subj.mask.numpy())]):
        ax.imshow(np.rot90(lab[:, :, z]), cmap=cmap if title != "disagreement" else "Reds", vmin=0,
                  vmax=3 if title != "disagreement" else 1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    plt.tight_layout()

# %% [markdown]
# ## Manifest check
#
# Every file of a recorded build has its size and sha256 in `data_manifest.yaml`;
# `physeg data verify --profile P` repeats this check from the command line.

# %% tags=["hide-input"]
from physeg.data.manifest import load_manifest, verify_build

manifest = load_manifest()
builds = manifest["datasets"]["synthetic-mpm"].get("builds", {})
if synthetic and prof.name in builds and builds[prof.name].get("files"):
    problems = verify_build(root, build=prof.name)
    print(f"generator v{prof.cohort_generator}: {len(builds[prof.name]['files'])} files recorded, "
          f"{len(problems)} mismatches")
    for p in problems[:10]:
        print(p)
else:
    print("no recorded checksums for this dataset/profile")
pd.DataFrame(
    [{"dataset": n, "kind": e.get("kind"), "licence": (e.get("licence") or "")[:40],
      "sha256 recorded": bool(e.get("sha256")) or bool(e.get("builds"))}
     for n, e in manifest["datasets"].items()]
)
