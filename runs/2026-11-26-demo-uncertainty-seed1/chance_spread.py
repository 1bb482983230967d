import dataclasses, sys
from pathlib import Path
import pandas as pd
from physeg.profiles import get_profile
from physeg.evaluation import runs as ev
from physeg.evaluation import interval_scores as scores
from physeg.evaluation import coverage_spread as cs
OUT = Path(sys.argv[1])
if __name__ == "__main__":
    prof = dataclasses.replace(get_profile("demo"), uncertainty_seeds=2)
    res = ev.run_uncertainty_seeds(prof)
    frames = []
    for seed, r in res.items():
        design = cs.design_from_samples(r.val_samples, r.samples, n_samples=prof.n_uncertainty_samples)
        print(seed, design)
        cs.error_components(r.val_samples).assign(seed=seed).to_csv(OUT / f"error_components_seed{seed}.csv", index=False)
        iod = scores.coverage50_summary(r.per_image).xs("IoD", level="distribution")
        t = cs.coverage_against_null(iod, "coverage50_scl", design, repeats=1000).assign(seed=seed)
        frames.append(t)
    t = pd.concat(frames); t.to_csv(OUT / "coverage_vs_null.csv", index=False)
    print(t.round(3).to_string())
