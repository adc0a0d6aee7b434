#!/usr/bin/env bash
# One call on a GPU machine: the CUDA checks, then the timed sweep of benchmarks/train_gpu.py.
# Needs only python3 with torch, numpy, pyarrow, safetensors (and transformers for the baseline); the project need not be
# installed. Logs and JSON go to $OUT (default ./gpu-out); BUDGET_S bounds the sweep (default 360 s).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
shim=$(mktemp -d)
mkdir -p "$shim/webtext"
ln -s "$PWD/train" "$shim/webtext/train"  # webtext.train without installing the project
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
    --format=csv | tee "$out/nvidia-smi.csv"
"$python" -c 'import torch, numpy, pyarrow; print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__, "pyarrow", pyarrow.__version__)'
timeout "${CHECK_TIMEOUT_S:-150}" "$python" benchmarks/train_gpu.py --check 2>&1 | tee "$out/check.log"
"$python" benchmarks/train_gpu.py --sweep --budget-s "${BUDGET_S:-360}" --json "$out/sweep.json" \
    --child-log "$out/children.log" "$@" 2>&1 | tee "$out/sweep.log"
