"""Demo uncertainty variants with a second training seed (seed 1), on the cached demo models of cold3."""
import dataclasses, json, sys, time
from pathlib import Path
import pandas as pd
from physeg.profiles import get_profile
from physeg.evaluation import runs as ev
from physeg.evaluation import interval_scores as scores
from physeg.evaluation.models import mc_mean_against_parents

OUT = Path(sys.argv[1])

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    prof = dataclasses.replace(get_profile("demo"), uncertainty_seeds=2)
    t0 = time.time()
    res = ev.run_uncertainty_seeds(prof)
    print("wall", time.time() - t0, flush=True)
    for seed, r in res.items():
        cov = scores.coverage50_summary(r.per_image)
        cov.to_csv(OUT / f"coverage50_seed{seed}.csv")
        r.calibration.to_csv(OUT / f"calibration_seed{seed}.csv", index=False)
        iod = cov.xs("IoD", level="distribution")
        for col in ("coverage50_scl", "coverage50_loc", "coverage50", "coverage50_raw"):
            if col in iod:
                print(seed, col, "pooled", round(iod[col].mean(), 3), "cells in 35-65:",
                      int(iod[col].between(0.35, 0.65).sum()), "of", len(iod), flush=True)
    per = ev.per_image_by_seed(res)
    per.to_csv(OUT / "per_image.csv", index=False)
    m = mc_mean_against_parents(per)
    m.to_csv(OUT / "mc_mean_vs_parent.csv", index=False)
    print(m.round(3).to_string())
