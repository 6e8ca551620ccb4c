#!/usr/bin/env bash
# The GPU check, on the device machine (run from the checkout's root, .gpu_carry carried;
# built here by `python -m benchmarks.gpu_prepare`). Extra arguments go to benchmarks.gpu_check.
#   device run: bash benchmarks/gpu_run.sh          (carry: [".gpu_carry"], timeout_s 590)
set -euo pipefail
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu_carry/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    BATCHMIXUP_MINILM_DIR="$PWD/.gpu_carry/minilm_tokenizer"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m benchmarks.gpu_check --out "$out" --data-dir .gpu_carry/data "$@" 2>&1 \
    | tee "$out/gpu_check.log"
