import dataclasses, sys
from pathlib import Path
import pandas as pd
from physeg.profiles import get_profile
from physeg.evaluation import runs as ev
OUT = Path(sys.argv[1])
if __name__ == "__main__":
    prof = dataclasses.replace(get_profile("demo"), uncertainty_seeds=2)
    res = ev.run_uncertainty_seeds(prof)
    rows = []
    for seed, r in res.items():
        cov = r.coverage
        iod = cov[cov.distribution == "IoD"]
        for lvl, g in iod.groupby("level"):
            rows.append({"seed": seed, "level": lvl, **{c: round(g[c].mean(), 3) for c in
                         ("coverage_raw", "coverage_cal", "coverage_loc", "coverage_scl")}})
        print(seed, r.folder)
        c50 = pd.read_csv(OUT / f"coverage50_seed{seed}.csv")
        print(c50[c50.distribution == "IoD"].groupby("tissue")[["coverage50_scl", "coverage50_raw"]].mean().round(3))
        print("OoD scl pooled", round(c50[c50.distribution == "OoD"].coverage50_scl.mean(), 3))
    t = pd.DataFrame(rows); print(t.to_string()); t.to_csv(OUT / "coverage_levels_iod.csv", index=False)
