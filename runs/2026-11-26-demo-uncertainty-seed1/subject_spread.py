import dataclasses
import pandas as pd
from physeg.profiles import get_profile
from physeg.evaluation import runs as ev
from physeg.evaluation import coverage_spread as cs
if __name__ == "__main__":
    prof = dataclasses.replace(get_profile("demo"), uncertainty_seeds=2)
    for seed, r in ev.run_uncertainty_seeds(prof).items():
        v = cs.error_components(r.val_samples).set_index(["model","sequence","tissue"])
        t = cs.error_components(r.samples[r.samples.distribution == "IoD"]).set_index(["model","sequence","tissue"])
        d = pd.DataFrame({"val_between": v.between_sd, "test_sd": t.between_sd}).round(1)
        print(seed); print(d.groupby(level="tissue").median())
