"""Training throughput of mixsweep's own stages: `fit` on a real job, whole epochs of a pack, one fresh process
per row.

Every row builds the job a stage runs (PretrainJob / FinetuneJob from the recipes, their batch sizes unless
--batch says otherwise), packs its data with the product's code and trains it with `mixsweep.train.loop.fit`:
the same step function (`train_step`), the same compiled graph, the same masking noise and loss placement.

    python benchmarks/throughput.py                                  # CUDA: base preset, 3 epochs per row
    python benchmarks/throughput.py --preset tiny --batch 16 --epochs 3 --steps pretrain   # CPU-sized
    python benchmarks/throughput.py --profile traces/                # also a torch.profiler trace per row

Rows: step (pretrain, finetune, resnet50) x mode (eager, compiled) x data:
  packed     the job's own PackedLoader over a pack of mixsweep's synthetic COCO- and Pet-format images
  synthetic  the loader's first batch again and again, already on the device: the step alone (a diagnostic)
Columns:
  img/s       step throughput: the median of epochs 2.. (epoch 1 holds the compile), from the loop's own log
  compile s   the first optimizer step's time (one sync; the compile of the training graph is in it)
  eval s      evaluation, all epochs;  ckpt s  checkpoint writes, all epochs (the final weights-only one)
  GFLOP/img   forward + backward FLOPs per image (FlopCounterMode on the task's loss)
  MFU         img/s x GFLOP/img over a matmul ceiling measured in the same run
No Ray needed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

STEPS = ("pretrain", "finetune", "resnet50")
MODES = ("eager", "compiled")
DATA = ("packed", "synthetic")


@dataclass
class Row:
    step: str
    mode: str
    data: str
    batch: int
    res: int
    img_s: float
    compile_s: float
    eval_s: float
    checkpoint_s: float
    loop_s: float
    gflop_img: float
    peak_gib: float | None = None


def device_name(device: torch.device) -> str:
    from mixsweep.provenance import device_name as name

    return name(device)


def matmul_ceiling(device: torch.device) -> tuple[float, str]:
    """Measured dense-matmul TFLOP/s: the MFU denominator."""
    n, dtype, iters = (8192, torch.bfloat16, 20) if device.type == "cuda" else (1024, torch.float32, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / iters
    return 2 * n**3 / dt / 1e12, f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} {n}³ matmul"


# --- inputs: the product's own data path on synthetic files ------------------------------------------

def write_inputs(root: Path, scale: str) -> dict[str, str]:
    """mixsweep's synthetic COCO- and Pet-format images, a COCO mixture (F=0.5) and a Pet manifest."""
    from mixsweep.data.coco import build_coco_index
    from mixsweep.data.mixture import build_mixture
    from mixsweep.data.pets import build_pets_manifest
    from mixsweep.synth import write_synth
    from mixsweep.tables import write_table

    paths = write_synth(root / "synth", scale=scale, seed=0)
    index, _ = build_coco_index(paths.coco_train_annotations, paths.coco_train_images)
    write_table(build_mixture(index, 0.5, seed=0), root / "mix.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic set's deliberately broken files
        write_table(build_pets_manifest(paths.pets_root), root / "pets.parquet")
    return {"mix": str(root / "mix.parquet"), "pets": str(root / "pets.parquet"),
            "images": str(paths.coco_train_images), "cache": str(root / "cache")}


def job_config(step: str, inputs: dict, out: Path, preset: str, epochs: int, batch: int | None,
               compiled: bool) -> dict:
    """The job a stage of this step runs (a fine-tune from scratch: the MAE fine-tune's cost, no checkpoint)."""
    from mixsweep.models.mae import get_preset

    size = int(get_preset(preset).img_size * 256 / 224)  # the sweeps' pack side for their crops
    recipe = {"epochs": epochs, "warmup_epochs": min(1, epochs)}
    if batch is not None:
        recipe["batch_size"] = batch
    run = {"name": f"{step}", "storage": str(out), "compile": compiled}
    if step == "pretrain":
        return {"kind": "pretrain", "preset": preset, "recipe": recipe, "run": run,
                "data": {"mixture": inputs["mix"], "images": inputs["images"], "cache": inputs["cache"],
                         "pack_size": size}}
    if step == "resnet50":
        recipe["layer_decay"] = 1.0
    return {"kind": "finetune", "preset": preset, "model": "scratch" if step == "finetune" else "resnet50",
            "recipe": recipe, "run": run, "data": {"manifest": inputs["pets"], "cache": inputs["cache"],
                                                   "pack_size": size}}


class RepeatBatch:
    """A loader that yields one device-resident batch as many times as the real loader has batches."""

    def __init__(self, loader):
        self.batch, self.n, self.augment = next(iter(loader)), len(loader), loader.augment

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (self.batch for _ in range(self.n))


def build_task(job, world):
    """The job's Task, as run_pretrain / run_finetune build it."""
    from mixsweep.train.launch import prepare_data

    pack = prepare_data(job)
    torch.manual_seed(job.seed)
    if job.kind == "pretrain":
        from mixsweep.train.pretrain import PretrainTask

        return PretrainTask(job, pack, world)
    from mixsweep.train.finetune import FinetuneTask

    return FinetuneTask(job, pack, world)


def flops_per_image(task, device) -> float:
    """fwd + bwd FLOPs of one image of the task's loss, from a 2-image batch."""
    batch = next(iter(task.train_loader))
    small = {k: (v[:2] if torch.is_tensor(v) else v) for k, v in batch.items()}
    model = task.model.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        task.loss(model, small, gen).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / small["images"].shape[0]


def measure(config: dict, data: str, profile: str | None = None) -> Row:
    """Train one job with `fit` in this process and read its own timings back."""
    from mixsweep.models.mae import get_preset
    from mixsweep.train.config import parse_job
    from mixsweep.train.loop import CheckpointPolicy, fit, local_world, read_metrics

    job = parse_job(config, "benchmark job")
    world = local_world(Path(job.run.storage) / job.run.name, job.run.device, resume=False)
    task = build_task(job, world)
    gflop = flops_per_image(task, world.device) / 1e9
    if data == "synthetic":
        task.train_loader = RepeatBatch(task.train_loader)
    if world.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(world.device)
    context = torch.profiler.profile() if profile else None
    if context is not None:
        context.__enter__()
    fit(task, world, job.seed, checkpoints=CheckpointPolicy.of(job.run), meta={"kind": job.kind},
        compile_model=job.run.compile, compile_cache=job.run.compile_cache,
               compile_mode=job.run.compile_mode, attention=job.run.attention)
    if context is not None:
        context.__exit__(None, None, None)
        Path(profile).parent.mkdir(parents=True, exist_ok=True)
        context.export_chrome_trace(profile)
    epochs = read_metrics(world.run_dir)
    rates = [m["img_per_s"] for m in epochs[1:]] or [epochs[0]["img_per_s"]]
    peak = torch.cuda.max_memory_allocated(world.device) / 2**30 if world.device.type == "cuda" else None
    t = world.timing
    return Row(job.kind if job.kind == "pretrain" else ("resnet50" if job.model == "resnet50" else "finetune"),
               "compiled" if job.run.compile else "eager", data, job.recipe.batch_size,
               get_preset(job.preset).img_size, statistics.median(rates), t.get("first_step_s", 0.0),
               t.get("eval_s", 0.0), t.get("checkpoint_s", 0.0), world.loop_seconds, gflop, peak)


def _environ(changes: dict) -> dict:
    """This process's environment with `changes` (a None value removes the variable)."""
    env = {**os.environ, **{k: v for k, v in changes.items() if v is not None}}
    return {k: v for k, v in env.items() if changes.get(k, "") is not None}


def measure_in_child(config: dict, data: str, profile: str | None = None, env: dict | None = None) -> Row:
    """One fresh process per row: no compiled graph, cache or allocator state carries over."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps({"config": config, "data": data,
                                                                           "profile": profile})],
                         capture_output=True, text=True, env=_environ(env or {}))
    if out.returncode != 0:
        raise SystemExit(f"benchmark row {config['run']['name']} ({data}) failed:\n{out.stderr[-4000:]}")
    return Row(**json.loads(out.stdout.strip().splitlines()[-1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)} (default: all)")
    p.add_argument("--modes", default=None, help="comma list of eager, compiled (default: both on CUDA, eager on CPU)")
    p.add_argument("--data", default=",".join(DATA), help="comma list of packed, synthetic (default: both)")
    p.add_argument("--preset", default=None,
                   help="MAE preset: base, small or tiny (default: base on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=int, default=None, help="effective batch (default: the recipe's)")
    p.add_argument("--compile-mode", default="default",
                   help="compiled rows' torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, ...")
    p.add_argument("--attention", default="auto", help="attention kernel: auto, flash, efficient, cudnn, math")
    p.add_argument("--augment-ahead", action="store_true", help="make each batch one step early, on a side stream")
    p.add_argument("--epochs", type=int, default=3, help="epochs per row; the first, with the compile, is not timed")
    p.add_argument("--scale", default=None, help="synthetic data scale: small, medium (default: medium on CUDA)")
    p.add_argument("--profile", default=None, metavar="DIR", help="write a torch.profiler trace per row here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.steps = [s for s in args.steps.split(",") if s]
    args.modes = [m for m in (args.modes or ("eager,compiled" if cuda else "eager")).split(",") if m]
    args.data = [d for d in args.data.split(",") if d]
    for name, values, allowed in (("--steps", args.steps, STEPS), ("--modes", args.modes, MODES),
                                  ("--data", args.data, DATA)):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    args.preset = args.preset or ("base" if cuda else "tiny")
    args.scale = args.scale or ("medium" if cuda else "small")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        task = json.loads(args.child)
        print(json.dumps(asdict(measure(task["config"], task["data"], task["profile"]))))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ceiling, ceiling_label = matmul_ceiling(device)
    print(f"{device_name(device)}: {ceiling_label} {ceiling:.2f} TFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixsweep-bench-") as tmp:
        t0 = time.perf_counter()
        inputs = write_inputs(Path(tmp), args.scale)
        print(f"synthetic inputs ({args.scale}) in {time.perf_counter() - t0:.0f} s", flush=True)
        for step in args.steps:
            for mode in args.modes:
                for data in args.data:
                    name = f"{step}-{mode}-{data}"
                    config = job_config(step, inputs, Path(tmp) / "runs" / name, args.preset, args.epochs, args.batch,
                                        mode == "compiled")
                    config["run"].update(compile_mode=args.compile_mode, attention=args.attention,
                                         augment_ahead=args.augment_ahead)
                    trace = str(Path(args.profile).resolve() / f"{name}.json") if args.profile else None
                    r = measure_in_child(config, data, trace)
                    print(f"{name}: {r.img_s:,.1f} img/s, compile {r.compile_s:.1f} s, eval {r.eval_s:.1f} s, "
                          f"checkpoints {r.checkpoint_s:.1f} s", flush=True)
                    rows.append(r)

    from rich.console import Console
    from rich.table import Table

    t = Table(title=device_name(device), caption=f"preset {args.preset}, {args.epochs} epochs per row, synthetic "
              f"{args.scale} data, compile mode {args.compile_mode}, attention {args.attention}, augment ahead "
              f"{args.augment_ahead}, torch "
              f"{torch.__version__}; MFU vs {ceiling_label} = {ceiling:.3g} TFLOP/s")
    cols = ("step", "mode", "data", "batch", "res", "img/s", "compile s", "eval s", "ckpt s", "loop s", "GFLOP/img",
            "MFU") + (("peak GiB",) if device.type == "cuda" else ())
    for col in cols:
        t.add_column(col, justify="left" if col in ("step", "mode", "data") else "right")
    for r in rows:
        row = [r.step, r.mode, r.data, str(r.batch), str(r.res), f"{r.img_s:,.1f}", f"{r.compile_s:.1f}",
               f"{r.eval_s:.1f}", f"{r.checkpoint_s:.2f}", f"{r.loop_s:.1f}", f"{r.gflop_img:.2f}",
               f"{r.img_s * r.gflop_img / 1e3 / ceiling:.1%}"]
        if device.type == "cuda":
            row.append(f"{r.peak_gib:.1f}")
        t.add_row(*row)
    Console(width=max(120, int(os.environ.get("COLUMNS", 0) or 0))).print(t)


if __name__ == "__main__":
    main()
