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
# # 04 — Evaluation: Dice and volume consistency (paper §4, Tables 1–2)
#
# Every test subject is simulated with a fixed grid of acquisition parameters,
# inside the training ranges (IoD) and outside them (OoD), and each of the four
# ablations (Baseline, Phys-Base, Phys-Strat, Phys-Strat-Aug) segments every
# image. Two numbers per subject and tissue:
#
# * **Dice** against the subject's Physics Gold Standard (PGS), averaged over the
#   subject's images;
# * **coefficient of variation** of the tissue volume over the subject's images,
#   with the sample standard deviation:
#
# $$ \mathrm{CoV}_{s,k} = \frac{\mathrm{SD}_r\left(V_{s,r,k}\right)}{\frac1R\sum_r V_{s,r,k}}, \qquad
#    \mathrm{SD}_r = \sqrt{\tfrac{1}{R-1}\textstyle\sum_r \left(V_{s,r,k}-\bar V_{s,k}\right)^2} $$
#
# The tables give mean (SD) across test subjects, as the paper does, beside the
# paper's numbers. The logic lives in `physeg.evaluation.runs`, `physeg.evaluation.metrics`,
# `physeg.evaluation.statistics` and `physeg.evaluation.paper_tables`; this page calls and plots.

# %% tags=["parameters"]
profile = "smoke"

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from physeg.evaluation import runs as ev
from physeg.data import load_split
from physeg.evaluation import ceiling
from physeg.evaluation import paper_tables as pr
from physeg.evaluation import seeds
from physeg.evaluation import statistics as st
from physeg.paths import build_root
from physeg.training.orchestrate import train_all
from physeg.profiles import get_profile

prof = get_profile(profile)
pd.set_option("display.max_columns", 40, "display.width", 200)
trained = train_all(prof, progress=False)  # cached: returns at once when notebook 03 trained the models
folders = ev.model_folders(trained)
res = ev.run_evaluation(prof, folders=folders)
print(f"profile {prof.name}: {res.results['subject'].nunique()} test subjects, "
      f"{len(res.results) // 3} segmentations; evaluation cache {res.folder} "
      f"(computed in {res.wall_s:.0f} s)")

# %% [markdown]
# ## The test grid
#
# Fixed and seeded (`physeg.evaluation.runs.test_parameters`), identical for every
# subject and model. MPRAGE OoD covers the whole TI axis outside 0.6–1.2 s
# (stratified over 0.1–0.6 s and 1.2–2.0 s); SPGR OoD always holds some
# FA < 10° images, the outliers of the paper's Figure 3.

# %%
res.grid

# %% [markdown]
# ## What each ablation saw in training: same steps, not the same patches
#
# Every ablation gets the same optimiser steps with the same batch size. A mixed
# batch holds `batch_size` patches of different subjects and places; a stratified
# batch (Phys-Strat, Phys-Strat-Aug, §2.2) holds `batch_size` realisations of
# *one* patch of one subject. In the same steps the stratified models therefore
# see `batch_size` times fewer distinct anatomical patches, and Phys-Strat-Aug
# sees a new simulated contrast in each of them. The comparison here is at equal
# steps (equal compute), as in the paper; with a budget this short it favours the
# mixed models on Dice, which is a confound of short runs, not a property of the
# method.

# %% tags=["hide-input"]
T = prof.training
steps = T.max_epochs * T.steps_per_epoch
display(pd.DataFrame([
    {"batches": "mixed (Baseline, Phys-Base)", "optimiser steps": steps, "distinct patches": steps * T.batch_size,
     "realisations per patch": 1},
    {"batches": "stratified (Phys-Strat, Phys-Strat-Aug)", "optimiser steps": steps, "distinct patches": steps,
     "realisations per patch": T.batch_size},
]).set_index("batches"))

# %% [markdown]
# ## Statistics: what a paired unit is
#
# The paper bolds the best model at p < 0.01 (Wilcoxon signed-rank) without
# naming the paired unit. With 5 test subjects a subject-level two-sided exact
# test cannot go below $2/2^5 = 0.0625$, so we test **Dice at the image level**
# (same subject, same parameters, two models) and report the subject-level test
# beside it. CoV exists once per subject, tissue and distribution: its per-cell
# test pairs subjects and is underpowered by construction (`min_p` column); the
# pooled test pairs (subject, tissue, distribution) units of one sequence.
# Every row has the matched-pairs rank-biserial correlation (RBC, positive when
# model `a` is larger), the median paired difference and its seeded bootstrap
# 95 % CI.

# %%
dice_img = st.dice_comparisons(res.results, unit="image")
dice_sub = st.dice_comparisons(res.results, unit="subject")
cov_cell = st.cov_comparisons(res.cov)
cov_pool = st.cov_comparisons(res.cov, pooled=True, tissues=("GM", "WM"))
cols = ["sequence", "distribution", "tissue", "model_a", "model_b", "n", "median_diff", "ci_low", "ci_high",
        "rbc", "p", "min_p", "significant"]
print("Dice, paired unit:", dice_img["unit"].iloc[0])
display(dice_img[cols].round(4))

# %%
print("CoV, pooled per sequence; paired unit:", cov_pool["unit"].iloc[0])
display(cov_pool[[c for c in cols if c in cov_pool]].round(4))
print("CoV per cell; paired unit:", cov_cell["unit"].iloc[0],
      f"— smallest attainable p = {cov_cell['min_p'].min():.4f}")

# %% [markdown]
# ## Table 1 — Dice (ours, the paper's, the difference)
#
# `*` marks the statistically best model(s) of a column (image-level Wilcoxon,
# p < 0.01; models not significantly different from the best are marked too,
# nothing is marked when no difference is significant).

# %%
ours = res.tables()
dice_best = st.mark_best(ours[ours.table == "dice"], dice_img, higher_is_better=True)
pr.side_by_side(ours, "dice", best=dice_best)

# %% [markdown]
# ### The ceiling: PGS against the cohort's ground truth
#
# The models learn, and are scored against, the PGS labels. On the synthetic
# cohort the PGS can itself be scored against the tissue fractions the maps
# were generated from (`physeg.evaluation.ceiling`). The PGS-vs-truth Dice is
# the scale against which to read the model Dice: where the PGS itself departs
# from the truth (at coarse voxels, mostly partial-volume voxels between GM and
# CSF) the target is ambiguous, and a model's CSF Dice against the PGS is bounded
# by how consistently the maps define those voxels (page 02: why the cohort's
# generator version 2 puts CSF around the brain).

# %% tags=["hide-input"]
test_subjects = load_split(prof, "test")
pgs_ceiling = ceiling.ceiling_summary(ceiling.pgs_vs_truth(test_subjects))
best_model = ours[(ours.table == "dice") & (ours.distribution == "IoD")].groupby("tissue", sort=False)["mean"].max()
display(pgs_ceiling.assign(best_model_dice_vs_pgs_IoD=pgs_ceiling["tissue"].map(best_model)).round(3))

# %% [markdown]
# Is the Phys-Strat-Aug model converged enough for its comparisons to mean
# something? Our own bar, on in-distribution test images: GM and WM Dice ≥ 0.92,
# and CSF Dice ≥ 0.75 or within 0.05 of the PGS ceiling above.

# %% tags=["hide-input"]
psa = ours[(ours.table == "dice") & (ours.distribution == "IoD") & (ours.model == "Phys-Strat-Aug")]
ceil_by_tissue = pgs_ceiling.set_index("tissue")["mean"]
bar = psa[["sequence", "tissue", "mean"]].rename(columns={"mean": "dice"}).assign(
    target=lambda d: d["tissue"].map({"GM": 0.92, "WM": 0.92}).fillna(
        d["tissue"].map(lambda t: min(0.75, ceil_by_tissue.get(t, 1.0) - 0.05))))
bar = bar.assign(met=bar["dice"] >= bar["target"])
print(f"{int(bar.met.sum())} of {len(bar)} tissue × sequence cells reach the bar (first training seed)")
bar.round(3)

# %% [markdown]
# ## Table 2 — CoV × 10³
#
# Marks from the pooled test would not be per cell and the per-cell test is
# underpowered, so `*` here uses the per-cell subject-level test and, with 5
# subjects or fewer, can never appear. That is the honest reading of "bold".

# %%
cov_best = st.mark_best(ours[ours.table == "cov_x1000"], cov_cell, higher_is_better=False)
pr.side_by_side(ours, "cov_x1000", best=cov_best)

# %% [markdown]
# ## Seeds: is a difference between models larger than retraining?
#
# Every ablation is trained once per training seed of the profile
# (`profile.seeds`). A step between two models counts only if the CoV falls by
# more than one combined seed-to-seed SD (`physeg.evaluation.seeds`); with a
# single seed that spread is unknown and the column is empty, which is why
# notebook 06 then calls claims 1–3 *not testable here*. The tables above are
# the first seed's; the long CSV below holds the mean and SD over all seeds.

# %%
seed_runs, per_seed = seeds.evaluate_seeds(prof)
summary = seeds.across_seeds(per_seed)
print(f"training seeds: {list(prof.seeds)}")
seeds.spread_table(summary, models=prof.ablations).round(3)

# %% tags=["hide-input"]
results_dir = build_root() / "results" / prof.name
per_image = pd.concat([r.results.assign(seed=s) for s, r in seed_runs.items()], ignore_index=True)
written = seeds.write_csv_tables({"tables": seeds.results_csv_frame(summary), "per_image": per_image,
                                  "per_seed_tables": per_seed, "pgs_ceiling": pgs_ceiling}, results_dir)
print("tables as CSV (long format: model, sequence, tissue, distribution, metric, mean, sd, n_seeds):")
for name, path in written.items():
    print(f"  {name}: {path}")

# %% [markdown]
# ## Dice and CoV per model

# %% tags=["hide-input"]
order = [m for m in prof.ablations if m in set(res.results["model"])]
d = res.results[res.results.tissue.isin(["GM", "WM"])]
g = sns.catplot(data=d, x="model", y="dice", hue="distribution", col="sequence", row="tissue", kind="box",
                order=order, height=2.6, aspect=1.5, sharey=False)
g.set_xticklabels(rotation=20)
plt.show()

# %% tags=["hide-input"]
c = res.cov[res.cov.tissue.isin(["GM", "WM"])]
g = sns.catplot(data=c, x="model", y="cov_x1000", hue="distribution", col="sequence", row="tissue", kind="strip",
                order=order, height=2.6, aspect=1.5, sharey=False, dodge=True)
g.set(yscale="log")
g.set_axis_labels("", "CoV × 10³ (per subject)")
g.set_xticklabels(rotation=20)
plt.show()

# %% [markdown]
# ## Figure 2 analogue — OoD segmentations, Baseline vs Phys-Strat-Aug
#
# First test subject; MPRAGE at the shortest OoD inversion time, SPGR at a
# FA < 10° image. Grey matter in colour over the image.

# %% tags=["hide-input"]
show = [m for m in ("Baseline", "Phys-Strat-Aug") if any(m in e["seg"] for e in res.examples.values())]
seqs = [s for s in prof.sequences if s in res.examples]
if seqs:
    fig, axes = plt.subplots(len(seqs), 2 + len(show), figsize=(3 * (2 + len(show)), 3 * len(seqs)), squeeze=False)
    for r, s in enumerate(seqs):
        e = res.examples[s]
        z = e["pgs"].shape[2] // 2
        panels = [("image", e["image"], None), ("PGS", e["image"], e["pgs"])]
        panels += [(m, e["image"], e["seg"][m]) for m in show if m in e["seg"]]
        for ax, (title, img, lab) in zip(axes[r], panels):
            ax.imshow(np.rot90(img[:, :, z]), cmap="gray")
            if lab is not None:
                ax.imshow(np.rot90(np.ma.masked_where(lab[:, :, z] != 1, lab[:, :, z])), cmap="autumn", alpha=0.6)
            ax.set_title(f"{s}: {title}" if title == "image" else title, fontsize=9)
            ax.axis("off")
        axes[r][0].text(0, -0.08, e["params"], transform=axes[r][0].transAxes, fontsize=8)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Where we stand against the paper
#
# The difference rows above are ours − paper. The paper trained on 18 real
# MPM subjects at 1 mm on a GPU; the smoke profile trains a few steps on
# 6 mm synthetic volumes, so its numbers only show that the chain runs. The
# claims themselves are checked, with their numbers, in notebook 06.

# %%
cmp = pr.comparison(ours)
cmp.dropna(subset=["mean_ours"]).groupby(["table", "model"])[["diff"]].agg(["mean", "min", "max"]).round(4)

# %% [markdown]
# ## Reference results
#
# The same tables side by side: this run (the profile above), the committed
# runs (`results/reference/`: a longer CPU run with three training seeds;
# `results/reference-long/`: the same trained 4× longer on a GPU; each frozen
# by `physeg reference freeze` with its provenance and checksums;
# `physeg.reference`) and the paper. Dice and
# CoV × 10³; `sd_subjects` is the SD across test subjects (the paper's
# brackets), `sd_seeds` the SD across training seeds (empty for one seed and
# for the paper). The banners say where the committed numbers came from, and
# that they are stale, with the reason, when their profile or the code that
# produced them has changed since.

# %% tags=["hide-input"]
from physeg.reference import compare
from physeg.reference.status import committed_runs

runs = committed_runs()
display(Markdown(compare.banners(runs)))
committed_tables = compare.committed_tables(runs, "tables")
this_run = seeds.results_csv_frame(summary)
run_label = f"{prof.name} (this run)"

# %%
compare.three_columns(this_run, committed_tables, pr.paper_tables(), current_label=run_label,
                      table="dice").round(3)

# %%
compare.three_columns(this_run, committed_tables, pr.paper_tables(), current_label=run_label,
                      table="cov_x1000").round(2)

# %% [markdown]
# ## At the paper's own scale, for eight minutes of a GPU
#
# One lent H200 ran the `paper-short` profile (`scripts/gpu_paper_short.py`):
# the paper's 1 mm cohort, network, patches, batch and optimiser, cut to
# 576 steps of its up to 14 400 and one training seed, 4 + 4 test images per
# subject. The Baseline finished its 576 steps; Phys-Strat-Aug was stopped by
# the lease's time cap and is shown from its epoch-4 checkpoint (288 steps), so
# the two rows are not a comparison of the ablations. What the record shows is
# how fast the paper's recipe learns at its own scale; the table below is read
# from the committed record (`runs/2026-11-26-paper-short-gpu/`, with its
# device, commit and times), not computed on this page.

# %% tags=["hide-input"]
from physeg.paths import REPO_ROOT

gpu_record = REPO_ROOT / "runs" / "2026-11-26-paper-short-gpu" / "tables_vs_paper.csv"
if gpu_record.is_file():
    gpu = pd.read_csv(gpu_record)  # its `steps` column: how many optimiser steps each model had
    display(gpu.pivot_table(index=["table", "model", "steps", "distribution"], columns="tissue",
                            values=["mean_ours", "mean_paper"]).round(3))
else:
    print(f"{gpu_record} is not in this installation (it ships with the repository)")
