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
# # 07 — Segment your own scan
#
# The models of notebook 03 are usable on any MPRAGE or SPGR brain image whose
# acquisition parameters are known. This page goes through the two commands a
# user needs, on a held-out test subject of the cohort so that we can compare
# with its Physics Gold Standard (PGS):
#
# 1. `physeg simulate` turns quantitative maps into an image, with the
#    parameters in a BIDS JSON sidecar (`InversionTime` in seconds);
# 2. `physeg segment` reads the image and its sidecar, checks units and the
#    sequence, resamples to the model's voxel size, runs the model with
#    Monte-Carlo samples and resamples the result back to the input grid.
#
# What each command logs (on stderr in a terminal) is printed under its cell.
#
# On the command line this page is
#
# ```bash
# physeg simulate --bids COHORT --subject sub-23 --sequence MPRAGE --ti 0.9 0.3 -o sims/
# physeg segment sims/sim-001_MPRAGE.nii.gz sims/sim-002_MPRAGE.nii.gz \
#     --model MODEL_FOLDER --calibration calibration.json -o seg/
# ```
#
# The tissue volume of each Monte-Carlo sample $s$ is
# $V_s = N_s \, v$ with $N_s$ the voxel count of the tissue and $v$ the voxel
# volume; the table reports the interquartile range of the $V_s$, recalibrated
# on the validation subjects (Eaton-Rosen et al. 2018) when notebook 05 has
# fitted a calibration:
#
# $$ \mathrm{IQR} = \left[\hat F^{-1}(p_\mathrm{lo}),\ \hat F^{-1}(p_\mathrm{hi})\right],
#    \qquad \text{raw: } p_\mathrm{lo} = 0.25,\ p_\mathrm{hi} = 0.75 . $$

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import json
import logging
import sys

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import display

from physeg.evaluation import runs as ev
from physeg.cli import main as physeg
from physeg.data import build_cohort, cohort_split, load_subject
from physeg.evaluation.metrics import volumes_ml
from physeg.training.orchestrate import train_all
from physeg.paths import cache_root
from physeg.profiles import get_profile
from physeg.inference.calibration_io import calibration_to_json

# The commands' log messages (stderr in a terminal) are part of this page's story: print them with the outputs.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
prof = get_profile(profile)
MODEL, SEQUENCE = "Phys-Strat-Aug-Epistemic", "MPRAGE"
work = cache_root() / "segment_your_scan" / prof.name
bids = build_cohort(prof, progress=False)
subject_id = cohort_split(prof)["test"][0]
folders = ev.model_folders(train_all(prof, progress=False))  # cached by notebook 03
model_dir = folders[(MODEL, SEQUENCE)]
print(f"test subject {subject_id}; model {model_dir}")

# %% [markdown]
# ## 1. Simulate two MPRAGE scans of a held-out subject
#
# TI = 0.9 s lies inside the training range (0.6–1.2 s); TI = 0.3 s lies
# outside it, so `physeg segment` will flag that image as out of distribution.

# %%
sims = work / "sims"
rc = physeg(["simulate", "--bids", str(bids), "--subject", subject_id, "--sequence", SEQUENCE,
             "--ti", "0.9", "0.3", "--output", str(sims), "--force"])
assert rc == 0, f"physeg exited with {rc} (message above)"
images = sorted(sims.glob(f"sim-*_{SEQUENCE}.nii.gz"))
print(json.dumps(json.loads(images[0].with_name(images[0].name.replace(".nii.gz", ".json")).read_text()), indent=1))

# %% [markdown]
# ## 2. Segment them
#
# The calibration comes from the uncertainty evaluation (notebook 05, cached);
# it is written to a JSON file that `physeg segment --calibration` reads.

# %%
unc = ev.run_uncertainty(prof, folders=folders)
cal_args = []
cal = unc.calibration
for key in (MODEL, MODEL.removesuffix("-Epistemic")):  # rows are keyed by the base model name
    if not cal.empty and ((cal.model == key) & (cal.sequence == SEQUENCE)).any():
        cal_file = calibration_to_json(cal, work / "calibration.json", model=key, sequence=SEQUENCE)
        cal_args = ["--calibration", str(cal_file)]
        break
print("calibration:", cal_args or "none (uncalibrated intervals)")

out = work / "segmentation"
rc = physeg(["segment", *map(str, images), "--model", str(model_dir), "--output", str(out),
             "--samples", str(prof.n_uncertainty_samples), "--force", "--no-progress", *cal_args])
assert rc == 0, f"physeg exited with {rc} (message above)"
doc = json.loads((out / "volumes.json").read_text())
for im in doc["images"]:
    print(f"{im['image'].split('/')[-1]}: {im['parameters']}  in distribution: {im['in_distribution']}")
    for w in im["warnings"]:
        print("  WARNING:", w)

# %% [markdown]
# ## 3. Volumes with intervals, beside the PGS
#
# `volume_ml` is counted on the output label map; `median_ml` and the IQR come
# from the Monte-Carlo samples. The PGS volume is the reference the models were
# trained against.

# %%
subject = load_subject(bids, subject_id)
pgs = volumes_ml(subject.pgs, subject.voxel_volume_ml)
table = pd.read_csv(out / "volumes.tsv", sep="\t")
table["pgs_ml"] = table["tissue"].map(pgs)
table["inside_iqr"] = (table.pgs_ml >= table.iqr_low_ml) & (table.pgs_ml <= table.iqr_high_ml)
display(table.round(2))

# %% [markdown]
# ## 4. Overlay
#
# Middle axial slice: the simulated image, the label map of `physeg segment`
# and the PGS (GM red, WM blue, CSF green).

# %% tags=["hide-input"]
cmap = plt.matplotlib.colors.ListedColormap([(0, 0, 0, 0), (0.9, 0.2, 0.2, 0.6), (0.2, 0.4, 0.9, 0.6),
                                             (0.2, 0.8, 0.3, 0.6)])
z = subject.pgs.shape[2] // 2
fig, axes = plt.subplots(1, len(images) + 1, figsize=(4 * (len(images) + 1), 4))
for ax, img in zip(axes, images):
    data = np.asarray(nib.load(str(img)).dataobj)
    labels = np.asarray(nib.load(str(out / img.name.replace(".nii.gz", "_dseg.nii.gz"))).dataobj)
    ax.imshow(data[:, :, z].T, cmap="gray", origin="lower")
    ax.imshow(labels[:, :, z].T, cmap=cmap, vmin=0, vmax=3, origin="lower", interpolation="nearest")
    ti = json.loads(img.with_name(img.name.replace(".nii.gz", ".json")).read_text())["InversionTime"]
    ax.set_title(f"physeg segment, TI = {ti:g} s")
axes[-1].imshow(np.asarray(nib.load(str(images[0])).dataobj)[:, :, z].T, cmap="gray", origin="lower")
axes[-1].imshow(subject.pgs[:, :, z].numpy().T, cmap=cmap, vmin=0, vmax=3, origin="lower", interpolation="nearest")
axes[-1].set_title("PGS")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# On the `smoke` profile the model is barely trained, so the labels are rough;
# the point here is the chain: files in, files and an honest table out. With the
# `demo` or `paper` profile the out-of-distribution image gets a visibly wider
# interval.
