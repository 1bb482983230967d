#!/usr/bin/env bash
# Train every model of the `reference-long` profile on one GPU, then pack the finished
# model folders (best.pt and the JSON/CSV records; last.pt, the resume state, stays behind) into
# tarballs of at most 15 MB for the trip back. Afterwards, on any machine:
#
#   mkdir -p "$PHYSEG_CACHE/models/reference-long" && for f in models-*.tar; do tar -xf "$f" -C "$PHYSEG_CACHE/models/reference-long"; done
#   python -m physeg.reproduce.runner --profile reference-long --no-site     # notebooks reuse the models
#
# Usage: scripts/gpu_reference_long.sh OUT_DIR [TRAIN_SECONDS] [WORKERS]
#   OUT_DIR        where the tarballs, logs and the GPU/step-time records go
#   TRAIN_SECONDS  wall-clock cap of the training (default 450); models unfinished by then are not packed
#   WORKERS        training processes sharing the GPU (default 8)
#
# Needs PHYSEG_CACHE to hold the 4 mm cohort (cohorts/synthetic-v1-4mm-seed0: reference-long keeps generator 1)
# and, on a GPU, the 6 mm one of the smoke profile (cohorts/synthetic-v2-6mm-seed0; trained first, every code
# path at toy size, to fail in seconds), or nilearn.
# ARMS (default "physics"): page 09's training arms to train beside the profile's models; "physics torchio"
# trains both on the GPU, so that their comparison is not confounded by device and precision. The TorchIO arm
# needs torchio and its pure-Python dependencies (carry their wheels); where SimpleITK is not installed (its
# 52 MB wheel does not fit the transfer) scripts/device_stubs/ stands in for it: TorchIO imports it, the arm's
# bias field and noise never call it, and any call raises.
# After the training it times one optimiser step of the `paper` profile's network (1 mm, 128^3 patches,
# batch 4, widths 30-480) with benchmarks/train_step.py, the figure behind the paper profile's GPU cost.
set -u
out=${1:?usage: scripts/gpu_reference_long.sh OUT_DIR [TRAIN_SECONDS] [WORKERS]}
train_s=${2:-450}
workers=${3:-8}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
profile=${PROFILE:-reference-long}  # PROFILE=smoke DEVICE=cpu: a quick rehearsal of this script without a GPU
device=${DEVICE:-cuda}
arms=${ARMS:-physics}
case " $arms " in
  *" torchio "*)
    if [ "${SITK_STUB:-auto}" = 1 ] || ! "$py" -c "import SimpleITK" 2>/dev/null; then
      export PYTHONPATH="$here/scripts/device_stubs:$PYTHONPATH"
      echo "SimpleITK: scripts/device_stubs stands in for TorchIO's imports (not installed, or SITK_STUB=1)" > "$out/sitk.txt"
    fi ;;
esac
{
  date -u +%FT%TZ
  # a copied working tree may carry an old .git (seen on the lent GPU machine): COMMIT=<sha> says which code ran
  echo "commit ${COMMIT:-$(git -C "$here" rev-parse HEAD 2>/dev/null || echo "unknown (no .git)")}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$py" -c "import torch, monai, platform; print('torch', torch.__version__, 'monai', monai.__version__, 'python', platform.python_version(), 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  nproc
  echo "arms: $arms"
  cat "$out/sitk.txt" 2>/dev/null && rm -f "$out/sitk.txt"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

if [ "$device" = cuda ]; then  # fail fast: every code path of the real run, at smoke size, on the GPU
  timeout 150 "$py" -m physeg train --profile smoke --all-seeds --augmentation $arms --device cuda \
    --workers "$workers" > "$out/train.log" 2>&1 || { echo "smoke training on the GPU failed:"; tail -n 40 "$out/train.log"; exit 1; }
  echo "smoke training on the GPU: ok"
fi
t0=$(date +%s)
timeout "$train_s" "$py" -m physeg train --profile "$profile" --all-seeds --augmentation $arms \
  --device "$device" --workers "$workers" >> "$out/train.log" 2>&1
echo "training exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$out/train.log"
tail -n 3 "$out/train.log"

"$py" - "$out" "$profile" <<'PY'
import json, sys, tarfile
from pathlib import Path
from physeg.paths import cache_root

out = Path(sys.argv[1])
root = cache_root() / "models" / sys.argv[2]
done = sorted(p for p in root.rglob("finished.json"))
chunks, size, part = [], 0, []
for f in done:
    folder = f.parent
    files = [p for p in sorted(folder.iterdir()) if p.name != "last.pt" and p.is_file()]
    n = sum(p.stat().st_size for p in files)
    if part and size + n > 15e6:
        chunks.append(part); part, size = [], 0
    part.append((folder, files)); size += n
if part:
    chunks.append(part)
for i, chunk in enumerate(chunks):
    with tarfile.open(out / f"models-{i}.tar", "w") as tar:
        for folder, files in chunk:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(root)))
summaries = [json.loads(f.read_text()) | {"folder": str(f.parent.relative_to(root))} for f in done]
(out / "finished.json").write_text(json.dumps(summaries, indent=1))
print(f"packed {len(done)} finished models into {len(chunks)} tarball(s)")
PY

[ "$device" = cuda ] || exit 0
# (at most 8 files come back from the device machine: machine.txt, train.log, finished.json, <= 5 tarballs)
timeout 60 "$py" "$here/benchmarks/train_step.py" --profile paper --device cuda --steps 5 > "$out/paper_step.tmp" 2>&1
echo "paper step timing exit $?" >> "$out/paper_step.tmp"
cat "$out/paper_step.tmp" | tee -a "$out/machine.txt" && rm "$out/paper_step.tmp"
