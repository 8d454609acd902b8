"""What a TorchTrainer stage costs around its training loop: `run_with_ray` (the product's launch of a stage
with workers or a GPU) on a local Ray, a tiny pre-training on the small synthetic world.

For each setting of Ray Train's controller poll (Ray's default of 2 s, and mixsweep's), it times `runs` stages
of one worker: from the call to rank 0 entering the loop (controller, worker process, imports, process group),
the loop itself, and from the loop's end to the call's return. Prints a table (median seconds) last.

    python benchmarks/stage_overhead.py [--runs 3] [--epochs 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def stage_config(root: Path, inputs: dict, name: str, epochs: int, workers: int) -> dict:
    return {"kind": "pretrain", "preset": "tiny", "seed": 0,
            "data": {"mixture": str(inputs["mix"]), "images": str(inputs["images"]), "cache": str(root / "cache"),
                     "pack_size": 64},
            "recipe": {"epochs": epochs, "batch_size": 8, "warmup_epochs": 1},
            "run": {"name": name, "storage": str(root / "runs"), "checkpoint_every": 1},
            "scaling": {"num_workers": workers, "cpus_per_worker": 1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="stages per setting (the first of all is also Ray's warm-up)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import ray

    from mixsweep.data.coco import build_coco_index
    from mixsweep.data.mixture import build_mixture
    from mixsweep.synth import write_synth
    from mixsweep.tables import write_table
    from mixsweep.train import launch
    from mixsweep.train.config import parse_job

    root = Path(tempfile.mkdtemp(prefix="stage-overhead-"))
    synth = write_synth(root / "synth", scale="small", seed=0)
    index, _ = build_coco_index(synth.coco_train_annotations, synth.coco_train_images)
    write_table(build_mixture(index, 0.5, seed=0), root / "mix.parquet")
    inputs = {"mix": root / "mix.parquet", "images": synth.coco_train_images}
    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    user = os.environ.pop(launch.HEALTH_CHECK_ENV, None)
    settings = {"Ray's default (2 s)": "2.0", f"mixsweep's ({launch.HEALTH_CHECK_INTERVAL_S} s)": None}
    rows = []
    for i in range(args.runs):  # interleaved: a drift of the machine's pace hits both settings alike
        for label, value in settings.items():
            if value is None:
                os.environ.pop(launch.HEALTH_CHECK_ENV, None)
            else:
                os.environ[launch.HEALTH_CHECK_ENV] = value
            job = parse_job(stage_config(root, inputs, f"s{i}-{len(rows)}", args.epochs, args.workers))
            t0 = time.time()
            r = launch.run_with_ray(job)
            t1 = time.time()
            rows.append((label, r.started_at - t0, r.finished_at - r.started_at, t1 - r.finished_at, t1 - t0))
            print(f"{label}: run {i}: start {rows[-1][1]:.1f} s, loop {rows[-1][2]:.1f} s, end {rows[-1][3]:.1f} s",
                  flush=True)
    if user is not None:
        os.environ[launch.HEALTH_CHECK_ENV] = user
    print(f"\n{args.workers} worker(s), {args.epochs} epochs, {args.runs} runs per setting; median seconds")
    print(f"{'controller poll':<22} {'start':>6} {'loop':>6} {'end':>6} {'total':>6}")
    for label in settings:
        mine = [r for r in rows if r[0] == label]
        print(f"{label:<22} " + " ".join(f"{statistics.median(r[k] for r in mine):6.1f}" for k in range(1, 5)))


if __name__ == "__main__":
    sys.exit(main())
