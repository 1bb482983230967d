"""Page 09's TorchIO arm (and optionally the physics arm) of reference-long, SPGR, with more training seeds, on the CPU.

The committed record (runs/2026-11-26-paper-short-gpu/page09-arms.md) trained each arm with seed 0 only: the
TorchIO arm's SPGR model reached validation CSF Dice 0.25-0.26 (GPU bf16 and CPU fp32) against 0.65 for the
physics arm. Does another seed of the TorchIO arm also lose CSF on SPGR? Usage, from the repository root:

    PHYSEG_CACHE=<cache> .venv/bin/python runs/2026-11-26-torchio-arm-seeds/train_arms.py OUT.csv ARM:SEED [...]

One process per job, side by side (one thread each); the models go to the cache's reference-long
augmentation folder; OUT.csv gets each model's finished.json summary.
"""

import sys

from physeg.profiles import get_profile
from physeg.training.orchestrate import train_jobs
from physeg.training.parallel import TrainingJob

if __name__ == "__main__":
    out, specs = sys.argv[1], sys.argv[2:]
    profile = get_profile("reference-long")
    jobs = [TrainingJob("Phys-Strat-Aug", "SPGR", int(seed), augmentation=arm)
            for arm, seed in (s.split(":") for s in specs)]
    result = train_jobs(profile, jobs, device="cpu", progress=False, workers=len(jobs))
    summary = result["summary"].assign(job=[f"{j.augmentation}:{j.seed}" for j in jobs])
    summary.to_csv(out, index=False)
    print(summary[[c for c in ("job", "model", "sequence", "wall_time_s", "val_dice_GM", "val_dice_WM",
                               "val_dice_CSF", "precision") if c in summary]].to_string())
