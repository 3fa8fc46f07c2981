#!/usr/bin/env bash
# The GPU checks of train.cuda_graph / train.deterministic and the diagnostics' cost, in one go:
#   bash scripts/gpu_checks.sh OUT_DIR [STEP ...]     (default: every step, in this order)
# Steps: cuda_tests, bench_cnn, bench_cnn_deterministic, bench_resnet. Each is bounded by `timeout`
# and writes its result into OUT_DIR as it finishes, so a step that hangs costs only itself.
# Needs a CUDA GPU; PYTHON names the interpreter (default python3).
set -u
out=${1:?usage: bash scripts/gpu_checks.sh OUT_DIR [STEP ...]}
shift
wanted=" ${*:-cuda_tests bench_cnn bench_cnn_deterministic bench_resnet} "
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
py=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  [[ $wanted == *" $name "* ]] || return 0
  echo "== $name: $*" | tee -a "$out/summary.txt"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "   exit $?" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version --format=csv > "$out/gpu.txt" 2>&1
"$py" -c "import torch; print(torch.__version__, torch.version.cuda)" >> "$out/gpu.txt" 2>&1
step cuda_tests 300 "$py" -m pytest -q -rs -n 0 tests/test_graphed.py  # one process: one GPU
step bench_cnn 420 "$py" scripts/bench.py --device cuda --cuda-graph --steps 10 --repeats 3 --json "$out/bench_cnn.json"
step bench_cnn_deterministic 420 "$py" scripts/bench.py --device cuda --cuda-graph --deterministic --steps 10 --repeats 3 \
  --json "$out/bench_cnn_deterministic.json"
step bench_resnet 420 "$py" scripts/bench.py --device cuda --cuda-graph --model resnet --g-ch 256 --d-ch 128 --n-dis 5 \
  --steps 5 --repeats 3 --json "$out/bench_resnet.json"
