#!/usr/bin/env bash
# One call on a GPU host: a small sweep whose stages ask for a GPU runs end to end through Ray Tune and Ray
# Train on local Ray (NCCL chosen because the worker sees CUDA), each result records the GPU it trained on,
# and the report prints it. Then the fast path's GPU numerics. Prints a short table last.
#   ../shared/device/wheels.sh --ray   # here, once: pydantic, pycocotools and Ray for a host without them
#   bash benchmarks/gpu_sweep_check.sh # there; ~2 min on an H200 (W&B stays off: `wandb: {mode: disabled}`)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
out="${OUT:-/tmp}"
work=$(mktemp -d /tmp/gpu-sweep-XXXX)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cat > "$work/gpu.yaml" <<EOF
name: gpu-check
grid: {animal_fractions: [0.0, 1.0], finetune_fractions: [1.0], seeds: [0]}
baselines: [resnet18]
data: {synth: {scale: small, seed: 0}}
preset: tiny
mixture: {pack_size: 64}
pretrain: {epochs: 3, batch_size: 32, warmup_epochs: 1, blr: 1.5e-3}
finetune: {epochs: 3, batch_size: 32, warmup_epochs: 1, blr: 1.0e-2}
resources:
  pretrain: {num_workers: 1, use_gpu: true, cpus_per_worker: 2}
  finetune: {num_workers: 1, use_gpu: true, cpus_per_worker: 2}
storage: $work/store
wandb: {mode: disabled}
checkpoint_every: 1
EOF
t0=$(date +%s)
python3 -m mixsweep.cli plan "$work/gpu.yaml" | tail -2
python3 -m mixsweep.cli run "$work/gpu.yaml" 2>&1 | tee "$out/gpu_sweep.log" | grep -v "^\s*$" | tail -15
python3 -m mixsweep.cli report "$work/gpu.yaml" 2>&1 | grep -i "made with\|effect\|detected" || true
echo "sweep: $(( $(date +%s) - t0 )) s"
python3 -m pytest -q -p no:cacheprovider tests/test_fast_path.py 2>&1 | tail -2
python3 - "$work/store/results.parquet" <<'PY'
import sys
import pandas as pd
rows = pd.read_parquet(sys.argv[1])
cols = ["kind", "method", "animal_fraction", "status", "device", "in_trial", "loop_s", "overhead_s", "torch_version",
        "ray_version", "code_version"]
print(rows[[c for c in cols if c in rows]].to_string(index=False))
PY
