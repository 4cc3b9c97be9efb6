#!/usr/bin/env bash
# The one prepared check of hw4's CUDA path, for a machine with a GPU; under 10 minutes on one H200.
#   1. set-up: the machine's python3 must have torch with CUDA; pycocotools is installed from .whl/ if it
#      is missing there (GPU images often have no network: download the wheel beside the repo first, see
#      the README's "The CUDA path");
#   2. tests/test_cuda.py: every test must pass, none may skip;
#   3. a timed 15-epoch Net1/Net2/Net3 run on the exercise's pictures (class folders: the basic_cnns/ folder
#      of alimkarimi/ece60146 at 082e1c2e, 1500 train + 500 val per class, --device cuda), then the per-net
#      training times and best val accuracies.
# Without CUDA it says so and exits 0; on any failure it exits non-zero.
# Usage: bash benchmarks/gpu_check.sh [BASIC_CNNS_DIR]   (default: ece60146/basic_cnns, else .gpu/basic_cnns)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
data=${1:-}
for candidate in "$data" ece60146/basic_cnns .gpu/basic_cnns; do
  if [ -n "$candidate" ] && [ -d "$candidate/train" ]; then data=$candidate; break; fi
done

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: $PY has no torch that sees a CUDA device; nothing to check"; exit 0
fi
if ! "$PY" -c "import pycocotools" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/hw4-site .whl/*.whl
  export PYTHONPATH=/tmp/hw4-site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch; print('gpu_check:', torch.__version__, torch.cuda.get_device_name(0))"

echo "== tests/test_cuda.py"
"$PY" -m pytest -q -rs tests/test_cuda.py -p no:cacheprovider | tee /tmp/hw4-cuda-tests.txt
if grep -q "skipped" /tmp/hw4-cuda-tests.txt; then echo "gpu_check: a CUDA test skipped"; exit 1; fi

if [ ! -d "$data/train" ]; then echo "gpu_check: no basic_cnns folder found (pass it as the argument)"; exit 1; fi
echo "== 15 epochs of Net1/Net2/Net3 on $data, --device cuda"
out=$(mktemp -d)
start=$(date +%s)
"$PY" hw4.py --image-folders "$data" --dataset-dir "$out/ds" --out "$out/r" --device cuda
echo "gpu_check: whole run $(( $(date +%s) - start )) s (build, training, figures and report)"
"$PY" - "$out/r/metrics.json" <<'EOF'
import json, sys
nets = json.load(open(sys.argv[1]))["nets"]
for name, r in nets.items():
    print(f"gpu_check: {name}: {r['train_time_s']:.1f} s for 15 epochs, best val accuracy "
          f"{max(r['epoch']['val_class_acc']):.4f}")
EOF
