#!/usr/bin/env bash
# Issue #6's one-call GPU check, for a GPU host without Ray (e.g. the device tool's machine, whose Python
# has torch, timm, pyarrow, pillow, rich and pyyaml but no pydantic: carry its wheels in .whl/).
#   bash benchmarks/gpu_check.sh            # ~6 min on an H200: numerics on CUDA, then the throughput table
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The fast path's numerics (fp32 on the CPU part of the same tests) and mask uniformity.
python3 -m pytest -q -p no:cacheprovider tests/test_fast_path.py 2>&1 | tail -3
# Reference-style eager fp16 vs mixsweep's fast path, end to end from packed images on disk, batch 256.
python3 benchmarks/throughput.py --preset base --batch 256 --modes reference,fast --data packed --synth \
  --warmup 15 --iters 40 2>&1 | tee "$out/throughput.txt"
