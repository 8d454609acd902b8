#!/usr/bin/env bash
# Issue #6's one-call GPU check, for a GPU host without Ray (e.g. the device tool's machine, whose Python
# has torch, timm, pyarrow, pillow, rich and pyyaml but no pydantic: carry its wheels in .whl/).
#   bash benchmarks/gpu_check.sh            # numerics on CUDA, then the throughput table (time unmeasured)
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
# The stages' own `fit`, eager and compiled, from a pack and from one resident batch; the recipes' batches.
python3 benchmarks/throughput.py --preset base --epochs 4 --scale medium 2>&1 | tee "$out/throughput.txt"
# The levers, one at a time, compiled rows only.
python3 benchmarks/throughput.py --preset base --epochs 4 --scale medium --modes compiled --data packed --compile-mode reduce-overhead 2>&1 | tail -8
python3 benchmarks/throughput.py --preset base --epochs 4 --scale medium --modes compiled --data packed --attention cudnn 2>&1 | tail -8
python3 benchmarks/throughput.py --preset base --epochs 4 --scale medium --modes compiled --data packed --augment-ahead 2>&1 | tail -8
