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
# # 07 — Segment your own scans: a BIDS study
#
# The models of notebook 03 are usable on any MPRAGE or SPGR brain image whose
# acquisition parameters are known. People who segment scans usually have many
# of them, from several sites and protocols, in a BIDS dataset. This page is the
# walk-through of that case, on simulated scans of the cohort's held-out test
# subjects so that every volume can be compared with the subject's Physics Gold
# Standard (PGS):
#
# 1. a small BIDS dataset: every test subject "scanned" in four sessions with
#    mixed protocols (MPRAGE and SPGR, inside and outside the training range),
#    each image with its JSON sidecar;
# 2. **one command** segments the whole study and writes a BIDS derivatives
#    dataset: label maps, probabilities, a per-scan record, a QC figure per scan,
#    the study table `volumes.tsv`, `failures.tsv` and an offline HTML report;
#    with `--protocol-card`, the model's expected bias and CoV at each protocol;
# 3. `physeg consistency` compares the scans of the same subject: per-tissue
#    CoV, ICC and Bland–Altman plots.
#
# On the command line this page is
#
# ```bash
# physeg segment BIDS_ROOT --model MPRAGE=MPRAGE_MODEL --model SPGR=SPGR_MODEL --protocol-card --profile demo
# physeg consistency BIDS_ROOT/derivatives/physeg
# ```
#
# (single images and folders of images go through the same command, see the README).
#
# **Volumes and intervals.** For each Monte-Carlo sample $s$ of a scan the tissue
# volume is $V_s = N_s\,v$, with $N_s$ the voxel count of the tissue and $v$ the
# voxel volume. The reported volume (`GM_ml` in `volumes.tsv`; `volume_ml` for
# single images) is the **sample median**; the 50 % and 95 % intervals come from
# the same samples, **recalibrated** on the validation subjects (Eaton-Rosen et
# al. 2018) when notebook 05 has fitted a calibration, so that they cover the
# truth at their nominal rate:
#
# $$ I_c = \left[\hat F^{-1}(p^{\mathrm{lo}}_c),\ \hat F^{-1}(p^{\mathrm{hi}}_c)\right],
#    \qquad \text{raw: } p^{\mathrm{lo}}_c = \tfrac{1-c}{2},\ p^{\mathrm{hi}}_c = \tfrac{1+c}{2}. $$
#
# `label_map_ml` is the volume of the written label map (the majority vote of the
# same samples, on the input grid): it is *not* the median of the sample volumes,
# and is kept for reference.

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import json
import logging
import shutil
import sys

import numpy as np
import pandas as pd
from IPython.display import Image, display

from physeg.cli import main as physeg
from physeg.data import load_split
from physeg.evaluation import runs as ev
from physeg.evaluation.metrics import volumes_ml
from physeg.inference.calibration_io import calibration_to_json
from physeg.paths import hashed_dir
from physeg.profiles import get_profile
from physeg.study.simulated import Protocol, simulated_study
from physeg.training.orchestrate import train_all

# The commands' log messages (stderr in a terminal) are part of this page's story: print them with the outputs.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
prof = get_profile(profile)
MODEL = "Phys-Strat-Aug-Epistemic"
PROTOCOLS = (
    Protocol("1", "MPRAGE", {"TI": 0.9}),                          # inside the training range
    Protocol("2", "MPRAGE", {"TI": 0.3}),                          # outside (TI < 0.6 s)
    Protocol("3", "SPGR", {"TR": 0.030, "TE": 0.005, "FA": 25.0}),  # inside
    Protocol("4", "SPGR", {"TR": 0.030, "TE": 0.005, "FA": 8.0}),   # outside (FA < 15°)
)
subjects = load_split(prof, "test")
folders = ev.model_folders(train_all(prof, progress=False))  # cached by notebook 03
work = hashed_dir("study_walkthrough", {"profile": prof.to_dict(), "model": MODEL,
                                        "models": sorted(str(folders[(MODEL, s)]) for s in ("MPRAGE", "SPGR")),
                                        "protocols": [(p.session, p.sequence, dict(p.values)) for p in PROTOCOLS]})
print(f"test subjects {[s.subject_id for s in subjects]}; work folder {work}")

# %% [markdown]
# ## 1. The models, with their interval calibration
#
# One model per sequence. The calibration comes from the uncertainty evaluation
# (notebook 05, cached) and is stored as `calibration.json` in a copy of each
# model folder, where `physeg segment` finds it (the trained folders in the
# cache are left as notebook 03 wrote them).

# %%
cal = ev.run_uncertainty(prof, folders=folders).calibration
models = {}
for seq in ("MPRAGE", "SPGR"):
    src, dst = folders[(MODEL, seq)], work / "models" / seq
    if not (dst / "best.pt").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("plans.json", "best.pt", "integrity.json"):  # integrity.json: sha256 checked before use
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
    for key in (MODEL, MODEL.removesuffix("-Epistemic")):  # rows are keyed by the base model name
        if not cal.empty and ((cal.model == key) & (cal.sequence == seq)).any():
            calibration_to_json(cal, dst / "calibration.json", model=key, sequence=seq)
            break
    models[seq] = dst
    print(f"{seq}: {src.name}, calibration: {'yes' if (dst / 'calibration.json').is_file() else 'none'}")

# %% [markdown]
# ## 2. A BIDS dataset of simulated scans
#
# Every test subject at every protocol: `sub-XX/ses-N/anat/sub-XX_ses-N_acq-SEQ_T1w.nii.gz`
# with a sidecar holding the parameters in BIDS units (seconds, degrees). Built
# once; a re-run of this page reuses it.

# %%
bids = work / "bids"
if not (bids / "dataset_description.json").is_file():
    simulated_study(bids, subjects=subjects, protocols=PROTOCOLS)
scans = sorted(bids.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
print(f"{len(scans)} scans, e.g. {scans[-1].relative_to(bids)}")
print(json.dumps(json.loads(scans[-1].with_name(scans[-1].name.replace(".nii.gz", ".json")).read_text())))

# %% [markdown]
# ## 3. Segment the study: one command
#
# The scans' sequences and parameters come from their sidecars; each scan goes to
# the model of its sequence. A scan outside the model's training range is
# segmented anyway and flagged (`OoD`). A scan that fails (a damaged file, a
# missing sidecar) would be listed in `failures.tsv` and the report while the
# others go on; scans whose outputs are current are skipped, so re-running this
# cell does no work.

# %%
rc = physeg(["segment", str(bids), "--model", f"MPRAGE={models['MPRAGE']}", "--model", f"SPGR={models['SPGR']}",
             "--samples", str(prof.n_uncertainty_samples), "--protocol-card", "--profile", prof.name,
             "--no-progress"])
assert rc == 0, f"physeg exited with {rc} (message above)"
deriv = bids / "derivatives" / "physeg"
print(sorted(p.name for p in deriv.iterdir()))

# %% [markdown]
# ## 4. The study table and the report
#
# One row per scan. The volumes are sample medians with their 50 % and 95 %
# intervals; `*_sd_epistemic_ml` is the spread of the Monte-Carlo dropout samples
# (this model samples epistemic uncertainty only: the aleatoric column is empty).
# The protocol card gives, for the scan's protocol, the model's mean volume error
# against the PGS on the simulated test subjects (`card_bias_pct`) and the CoV of
# the volume when each parameter moves by ±10 % (`card_cov_pct`). The same table,
# flagged scans first, with the QC figures, is `report.html` in the derivatives
# folder (static, offline).

# %%
table = pd.read_csv(deriv / "volumes.tsv", sep="\t")
cols = ["participant_id", "session_id", "protocol", "flags", "GM_ml", "GM_p50_low_ml", "GM_p50_high_ml",
        "GM_p95_low_ml", "GM_p95_high_ml", "GM_sd_epistemic_ml", "GM_card_bias_pct", "GM_card_cov_pct",
        "calibrated_50"]
display(table[cols].round(2))

# %% [markdown]
# Each scan's QC figure: three orthogonal slices through the brain with the
# labels (GM red, WM blue, CSF green), its volumes and intervals in the title.
# Here the out-of-distribution MPRAGE of the first subject:

# %% tags=["hide-input"]
first_ood = table[~table.in_distribution].iloc[0]
record = json.loads((deriv / first_ood.scan.replace("_T1w.nii.gz", "_dseg.json")).read_text())
display(Image(filename=str(deriv / record["qc"])))

# %% [markdown]
# ## 5. Against the Physics Gold Standard
#
# The simulated scans have a reference: the subject's PGS volume. Does it lie in
# the scan's 95 % interval?

# %%
pgs = {s.subject_id: volumes_ml(s.pgs, s.voxel_volume_ml) for s in subjects}
rows = []
for r in table.itertuples():
    for t in ("GM", "WM", "CSF"):
        ref = pgs[r.participant_id][t]
        lo, hi = getattr(r, f"{t}_p95_low_ml"), getattr(r, f"{t}_p95_high_ml")
        rows.append({"protocol": r.protocol, "tissue": t, "pgs_ml": ref, "median_ml": getattr(r, f"{t}_ml"),
                     "inside_95": lo <= ref <= hi})
check = pd.DataFrame(rows)
display(check.groupby(["protocol", "tissue"], sort=False)
        .agg(pgs_ml=("pgs_ml", "mean"), median_ml=("median_ml", "mean"), inside_95=("inside_95", "mean")).round(2))

# %% [markdown]
# ## 6. Consistency of repeated scans
#
# Every subject was scanned four times, with four protocols. An
# acquisition-invariant segmenter gives the same volumes each time: low CoV,
# ICC close to 1, Bland–Altman differences close to 0 (here between each
# subject's first two sessions, both MPRAGE).

# %%
rc = physeg(["consistency", str(deriv), "--force"])
assert rc == 0, f"physeg exited with {rc} (message above)"
display(pd.read_csv(deriv / "consistency" / "consistency.tsv", sep="\t").round(3))

# %% tags=["hide-input"]
display(Image(filename=str(deriv / "consistency" / "bland_altman.png")))

# %% [markdown]
# On the `smoke` profile the models are barely trained, so labels and volumes are
# rough and with two test subjects the ICC says little; the point here is the
# chain: a BIDS dataset in, BIDS derivatives, a study table with calibrated
# intervals and a report out. With the `demo` or `paper` profile the
# out-of-distribution scans get visibly wider intervals and the protocol cards
# show where the model's volumes drift.
