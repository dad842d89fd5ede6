#!/usr/bin/env bash
# GPU check (issue 5, item 9): one NVIDIA GPU, under 10 minutes, no download, no Kaggle credentials.
#
#   bash configs/gpu-check.sh [WORKDIR]        # default WORKDIR: /tmp/gic-gpu-check
#
# 1. Synthetic data at 180 px with the seed split's sizes, 1598 / 400 / 800 images: make_synthetic
#    with per_class=800 gives 1600 / 400 / 800; one training image per class is then removed.
# 2. `gic bench train` at 180 px: images/s of the trainer and the seed pipeline per phase, and the
#    fraction of the GPU's bf16 dense peak achieved in phase 2 (the "% peak" column).
# 3. `gic bench search`: a 64-trial search at 0.25 GPU per trial (four trials share the GPU) on
#    that data: wall time, sum of trial times, cold and warm fixed overhead per trial, results/s
#    and the share of slot time in epochs (--no-single: K x one trial alone would not fit in 10 min).
# Not run yet: the machine this was written on has no GPU. Record its output in README when it runs.
set -euo pipefail
WORK=${1:-/tmp/gic-gpu-check}
DATA="$WORK/synth180"
mkdir -p "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ ! -d "$DATA" ]; then
  python - "$DATA" <<'PY'
import sys
from pathlib import Path
from gic.data import make_synthetic
root = Path(sys.argv[1])
make_synthetic(root, per_class=800, size=180, seed=0)        # 1600 / 400 / 800
for cls in ("men", "women"):                                 # -> 1598 / 400 / 800, as the seed split
    sorted((root / "train" / cls).iterdir())[-1].unlink()
print({s: sum(1 for _ in (root / s).rglob("*.png")) for s in ("train", "validation", "test")})
PY
fi

echo "== gic bench train (180 px, 3 epochs per phase, one repeat; ~5 min) =="
timeout 600 gic bench train --data "$DATA" --size 180 --epochs 3 --weights hed --precision auto --repeats 1

echo "== 64-trial search at 0.25 GPU per trial (~5 min) =="
rm -rf "$WORK/results/gpu-check"
start=$(date +%s)
timeout 330 gic bench search --config configs/search.yaml --name gpu-check --no-single --json "$WORK/bench-search.json" \
  --set trainer.data.source=folder --set "trainer.data.dir=$DATA" --set trainer.model.weights=hed \
  --set search.num_samples=64 --set search.resources_per_trial.gpu=0.25 --set "search.storage_path=$WORK/results" \
  | grep -v "started:" || echo "search stopped (timeout or error): see above"
echo "64-trial search, command wall time: $(( $(date +%s) - start )) s"
