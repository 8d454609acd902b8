"""Training-step throughput: MAE pre-training, segmentation fine-tuning and the ResNet-50 baseline.

Each step is one full optimizer step (forward, loss, backward, AdamW from mixsweep.train.recipes) under
autocast. After warm-up, `--iters` steps run without any host sync inside the loop (fp16's GradScaler
makes one per step, as in the reference recipe) and the table reports:
  img/s        images per second over the timed steps
  GFLOP/img    forward + backward FLOPs per image, counted once with FlopCounterMode (matmuls, convs, attention)
  TFLOP/s      img/s x GFLOP/img: the model FLOP rate
  MFU          TFLOP/s over a matmul ceiling measured in the same run (bf16 8192^3 on CUDA, fp32 2048^3 on CPU)

    python benchmarks/throughput.py                                  # base preset, synthetic batches
    python benchmarks/throughput.py --preset tiny --steps finetune   # CPU-sized
    python benchmarks/throughput.py --data packed --pack CACHE/<key> # end to end from a pack, GPU augmentation
    python benchmarks/throughput.py --modes reference,fast --data packed --synth   # issue #6's table

Modes (`--modes`, one table row per step and mode):
  reference  the reference MAE recipe as it runs: eager, fp16 autocast + GradScaler, foreach AdamW, and per
             step `loss.item()` plus `torch.cuda.synchronize()` (its logging and NaN check)
  fast       mixsweep's training path on CUDA: torch.compile, bf16, fused AdamW, no host sync in the loop
  custom     whatever --compile / --dtype / --fused say (the default)
`--synth` writes mixsweep's synthetic COCO- and Pet-format images (scale medium) to a temp folder and packs
them, so the packed path runs with no dataset on the machine.
No Ray needed.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mixsweep.data.pets import IGNORE_LABEL
from mixsweep.models.mae import build_mae, get_preset
from mixsweep.models.segment import build_segmenter
from mixsweep.train.recipes import FinetuneRecipe, PretrainRecipe, build_optimizer

STEPS = ("mae-pretrain", "finetune", "resnet50")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Result:
    step: str
    batch: int
    res: int
    img_s: float
    gflop_img: float
    peak_gib: float | None
    mode: str = "custom"

    def tflops(self) -> float:
        return self.img_s * self.gflop_img / 1e3


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device) -> tuple[float, str]:
    """Measured dense-matmul TFLOP/s: the MFU denominator."""
    n, dtype, iters = (8192, torch.bfloat16, 20) if device.type == "cuda" else (2048, torch.float32, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    dt = (time.perf_counter() - t0) / iters
    label = f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} {n}³ matmul"
    return 2 * n**3 / dt / 1e12, label


# ---------------------------------------------------------------------------------------------------------
# Models and their losses


class PretrainLoss(nn.Module):
    def __init__(self, preset: str, mask_ratio: float):
        super().__init__()
        self.model = build_mae(preset, norm_pix_loss=True)
        self.mask_ratio = mask_ratio

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.model(x, mask_ratio=self.mask_ratio)[0]


class SegLoss(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(self.model(x).float(), y, ignore_index=IGNORE_LABEL)


def build_step_model(step: str, preset: str, head: str, mask_ratio: float) -> tuple[nn.Module, object]:
    if step == "mae-pretrain":
        return PretrainLoss(preset, mask_ratio), PretrainRecipe()
    if step == "finetune":
        # "scratch" has the fine-tune's exact cost without needing a checkpoint.
        return SegLoss(build_segmenter("scratch", preset=preset, head=head)), FinetuneRecipe()
    return SegLoss(build_segmenter("resnet50")), FinetuneRecipe(layer_decay=1.0)


# ---------------------------------------------------------------------------------------------------------
# Batches


def synthetic_batches(batch: int, res: int, device: torch.device, channels_last: bool) -> Iterator[tuple]:
    """The same device-resident batch forever: measures the step alone."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, res, res, device=device, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch, res, res), device=device, generator=g)
    y[:, :2] = IGNORE_LABEL
    return itertools.repeat((x, y))


def packed_batches(pack_dir: str, step: str, batch: int, res: int, device: torch.device,
                   channels_last: bool) -> Iterator[tuple]:
    """Batches from a mixsweep pack, augmented on `device` by PackedLoader, epoch after epoch."""
    from mixsweep.data.augment import AugmentConfig
    from mixsweep.data.loader import PackedLoader
    from mixsweep.data.packed import PackedSet

    pack = PackedSet.open(pack_dir)
    if step != "mae-pretrain" and pack.masks is None:
        raise SystemExit(f"--pack {pack_dir}: step {step} needs masks and this pack has none")
    rec = PretrainRecipe() if step == "mae-pretrain" else FinetuneRecipe()
    aug = AugmentConfig(out_size=res, scale=rec.crop_scale, hflip=rec.hflip, vflip=rec.vflip)
    loader = PackedLoader(pack, batch, train=True, augment=aug, device=device, drop_last=True)
    if len(loader) == 0:
        raise SystemExit(f"--pack {pack_dir}: {len(loader.rows)} usable images, fewer than one batch of {batch}")
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        for b in loader:
            x = b["images"]
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
            yield x, b["masks"]


# ---------------------------------------------------------------------------------------------------------
# Timing


def flops_per_image(loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> float:
    """fwd + bwd FLOPs of one image, from a 2-image batch (dtype does not change the count)."""
    n = min(2, x.shape[0])
    with FlopCounterMode(display=False) as counter:
        loss_fn(x[:n], None if y is None else y[:n]).backward()
    loss_fn.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


MODES = {
    "reference": {"compile": False, "dtype": "fp16", "fused": False, "host_sync": True},
    "fast": {"compile": True, "dtype": "bf16", "fused": True, "host_sync": False},
}


def mode_args(args: argparse.Namespace, mode: str) -> argparse.Namespace:
    if mode == "custom":
        return argparse.Namespace(**{**vars(args), "host_sync": False})
    out = argparse.Namespace(**{**vars(args), **MODES[mode]})
    if out.device == "cpu" and out.dtype != "fp32":
        out.dtype = "fp32"  # CPU autocast in half precision measures nothing useful
    return out


def synth_packs(root, res: int) -> dict[str, str]:
    """Pack folders per step from mixsweep's synthetic COCO (2,000 images) and Pet (740, with trimaps) sets."""
    from pathlib import Path

    from mixsweep.data.packed import PackItem, build_pack
    from mixsweep.data.pets import PACK_FIT, build_pets_manifest, pets_pack_items, trimap_to_labels
    from mixsweep.synth import write_synth

    root = Path(root)
    t0 = time.perf_counter()
    paths = write_synth(root / "synth", scale="medium", seed=0)
    size = max(res, int(res * 256 / 224))  # the jobs' pack_size: 256 for 224 crops
    coco = sorted(paths.coco_train_images.glob("*.jpg"))
    pre = build_pack([PackItem(key=p.stem, image_path=str(p)) for p in coco], root / "cache", size=size, fit="crop")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic set's deliberately broken files
        manifest = build_pets_manifest(paths.pets_root)
        seg = build_pack(pets_pack_items(manifest, paths.pets_root), root / "cache", size=size, fit=PACK_FIT,
                         mask_fn=trimap_to_labels)
    print(f"synthetic packs: {len(coco)} COCO-format + {manifest.num_rows} Pet images at {size}² in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"mae-pretrain": str(pre.path), "finetune": str(seg.path), "resnet50": str(seg.path)}


def run_step(step: str, args: argparse.Namespace, device: torch.device) -> Result:
    torch.manual_seed(0)
    res = get_preset(args.preset).img_size
    channels_last = step == "resnet50"
    loss_fn, recipe = build_step_model(step, args.preset, args.head, args.mask_ratio)
    loss_fn = loss_fn.to(device)
    if channels_last:
        loss_fn = loss_fn.to(memory_format=torch.channels_last)
    opt = build_optimizer(loss_fn.model, recipe, world_batch=args.batch, device=device, fused=args.fused)
    if args.data == "packed":
        pack = args.packs[step] if getattr(args, "packs", None) else args.pack
        batches = packed_batches(pack, step, args.batch, res, device, channels_last)
    else:
        batches = synthetic_batches(args.batch, res, device, channels_last)

    x0, y0 = next(batches)
    gflop = flops_per_image(loss_fn, x0, y0) / 1e9
    fwd = torch.compile(loss_fn, mode=args.compile_mode) if args.compile else loss_fn
    dtype = DTYPES[args.dtype]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def train_step(x: torch.Tensor, y: torch.Tensor | None) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:  # the reference recipe: loss scaling, with its one inf check (a host sync) per step
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if args.host_sync:  # the reference's per-step logging: loss.item() and a device synchronize
            if not math.isfinite(loss.item()):
                raise SystemExit(f"{step}: loss is not finite")
            sync(device)

    for _ in range(args.warmup):
        train_step(*next(batches))
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        train_step(*next(batches))
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Result(step, args.batch, res, args.batch * args.iters / dt, gflop, peak)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)} (default: all)")
    p.add_argument("--preset", default="base", help="MAE preset: base, small or tiny (sets the resolution)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: 256 on CUDA, 8 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="autocast dtype (default: bf16 on CUDA, fp32 on CPU); fp16 adds a GradScaler")
    p.add_argument("--compile", action="store_true", help="torch.compile the model and loss")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default, max-autotune-no-cudagraphs, reduce-overhead (CUDA graphs)")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="fused AdamW kernel (default: fused on CUDA, foreach on CPU)")
    p.add_argument("--head", default="decoder", help="segmentation head for finetune: decoder or linear")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="MAE pre-training mask ratio")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 CUDA, 2 CPU)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default: 30 CUDA, 5 CPU)")
    p.add_argument("--data", choices=("synthetic", "packed"), default="synthetic",
                   help="synthetic: one random batch already on the device; packed: PackedLoader over --pack")
    p.add_argument("--pack", default=None, help="pack folder (cache_root/<key>) for --data packed")
    p.add_argument("--synth", action="store_true", help="--data packed from synthetic images packed on the spot")
    p.add_argument("--modes", default="custom", help="comma list of reference, fast, custom (default: custom)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        p.error(f"unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in ("reference", "fast", "custom")]
    if bad:
        p.error(f"unknown mode(s) {', '.join(bad)}; choose from reference, fast, custom")
    if args.data == "packed" and not (args.pack or args.synth):
        p.error("--data packed needs --pack DIR or --synth")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(args.device).type == "cuda"
    args.batch = args.batch or (256 if cuda else 8)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.iters = args.iters or (30 if cuda else 5)
    get_preset(args.preset)  # an unknown preset fails here, before any model is built
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    ceiling, ceiling_label = matmul_ceiling(device)
    print(f"{device_name(device)}: {ceiling_label} {ceiling:.2f} TFLOP/s", flush=True)
    if args.data == "packed" and args.synth:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="mixsweep-bench-")
        args.packs = synth_packs(tmp.name, get_preset(args.preset).img_size)
    results = []
    for step in args.steps:
        for mode in args.modes:
            margs = mode_args(args, mode)
            r = run_step(step, margs, device)
            gc.collect()  # the step's model, optimizer and compiled graphs go before the next one
            if device.type == "cuda":
                torch.cuda.empty_cache()
            r.mode = f"{mode} ({margs.dtype}{', compiled' if margs.compile else ''})"
            print(f"{step} [{r.mode}]: {r.img_s:.1f} img/s, {r.gflop_img:.2f} GFLOP/img", flush=True)
            results.append(r)

    from rich.console import Console
    from rich.table import Table

    caption = (f"preset {args.preset}, {args.data} data{' (synthetic pack)' if args.synth else ''}, "
               f"torch {torch.__version__}; MFU vs {ceiling_label} = {ceiling:.3g} TFLOP/s")
    t = Table(title=device_name(device), caption=caption)
    for col in ("step", "mode", "batch", "res", "img/s", "GFLOP/img", "TFLOP/s", "MFU"):
        t.add_column(col, justify="left" if col in ("step", "mode") else "right")
    if device.type == "cuda":
        t.add_column("peak GiB", justify="right")
    for r in results:
        row = [r.step, r.mode, str(r.batch), str(r.res), f"{r.img_s:,.1f}", f"{r.gflop_img:.2f}",
               f"{r.tflops():.3g}", f"{r.tflops() / ceiling:.1%}"]
        if r.peak_gib is not None:
            row.append(f"{r.peak_gib:.1f}")
        t.add_row(*row)
    Console(width=max(100, int(os.environ.get("COLUMNS", 0) or 0))).print(t)


if __name__ == "__main__":
    main()
