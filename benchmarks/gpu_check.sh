#!/usr/bin/env bash
# The GPU check, in one go on a machine with an NVIDIA GPU (under 10 minutes):
#   1. onnxruntime-gpu for the CUDA reference (installed where missing and reachable),
#   2. the CUDA tests (tests/test_cuda.py, marker `cuda`),
#   3. sreval's attack against the best native loop on CUDA (benchmarks/bench_attack.py),
#   4. a scaled paper sweep, the achieved TFLOPS and the projection to the full sweep
#      (benchmarks/gpu_projection.py).
# Without a GPU it says so in one line and exits 0. Results go to $OUT (default
# benchmarks/gpu_check_out); copy the numbers into benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh            # with the project's environment active
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch on this machine; nothing to check"
  exit 0
fi
OUT=${OUT:-benchmarks/gpu_check_out}
mkdir -p "$OUT"
status=0
step() { echo "== $1"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

step "onnxruntime-gpu"
has_cuda_ort() { "$PY" -c "import sys, onnxruntime as o; sys.exit(0 if 'CUDAExecutionProvider' in o.get_available_providers() else 1)" 2>/dev/null; }
if ! has_cuda_ort; then
  # one Python module in two builds: the GPU one replaces the CPU one
  timeout 180 "$PY" -m pip install -q --upgrade onnxruntime-gpu >"$OUT/pip.txt" 2>&1 || true
fi
if has_cuda_ort; then echo "onnxruntime: CUDAExecutionProvider available"; else
  echo "onnxruntime: no CUDAExecutionProvider (offline?): the reference runs on CPU"; fi

step "CUDA tests"
timeout 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/tests.txt" || status=1

step "attack against the best native loop (EDSR-baseline, T=50, six budgets)"
timeout 180 "$PY" benchmarks/bench_attack.py --device cuda --sizes 64x64,128x128 --steps 50 --repeat 3 \
  --only attack --skip-textbook --json "$OUT/attack.json" 2>&1 | tee "$OUT/attack.txt" || status=1

step "scaled paper sweep and its projection"
timeout 180 "$PY" benchmarks/gpu_projection.py --device cuda --json "$OUT/projection.json" 2>&1 \
  | tee "$OUT/projection.txt" || status=1

echo "gpu_check: done (exit $status); results in $OUT"
exit $status
