"""Data-loading throughput: the plain PIL loader vs packed uint8 sets with batched augmentation.

Paths timed (img/s after warm-up, over a fixed number of images):
  pil             FileImageDataset (PIL decode + RandomResizedCrop bicubic + flip) in a DataLoader
  packed-cpu      PackedLoader(device='cpu'), resident in RAM and streamed from the memmap
  packed-gpu      PackedLoader(device='cuda'), resident on the GPU and streamed, when a GPU is present
plus the one-off pack build itself. No Ray needed.

    python benchmarks/data_throughput.py                      # synthetic 640x480-ish JPEGs in a temp dir
    python benchmarks/data_throughput.py --images /data/coco/train2017 --max-files 8192 --workers 16
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from mixsweep.data.augment import AugmentConfig
from mixsweep.data.imread import is_image_file
from mixsweep.data.loader import PackedLoader
from mixsweep.data.packed import PackItem, pack_key
from mixsweep.data.pack_build import build_pack
from pil_loader import FileImageDataset  # this folder: the reference path, not the product

SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (612, 612)]


def draw_photo(rng: np.random.Generator, w: int, h: int, noise: np.ndarray) -> Image.Image:
    """Smooth gradient, a few soft shapes and sensor-like noise: compresses like a photo, not like noise."""
    y, x = np.ogrid[0:h, 0:w]
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    t = ((x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / (w + h) + 0.5).astype(np.float32)
    img = Image.fromarray(np.clip(c0 + (c1 - c0) * t[..., None], 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.6 else d.rectangle)([x0, y0, x1, y1], fill=fill)
    img = img.filter(ImageFilter.BoxBlur(int(rng.integers(1, 3))))
    # A shared noise field at a random offset: as costly to compress as fresh noise, much cheaper to make.
    oy, ox = int(rng.integers(0, noise.shape[0] - h + 1)), int(rng.integers(0, noise.shape[1] - w + 1))
    noisy = np.asarray(img, np.int16) + noise[oy:oy + h, ox:ox + w]
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def synth_images(folder: Path, n: int, source: str = "own", seed: int = 0) -> tuple[list[Path], str]:
    """n synthetic JPEGs in `folder`: our own 640x480-ish drawings (COCO's typical size), or the
    COCO-format train images of mixsweep.synth.write_synth (scale 'medium'; ~250 px, smaller than COCO)."""
    if source == "mixsweep":
        try:
            from mixsweep.synth import write_synth  # written separately; optional here
        except ImportError:
            sys.exit("--synth-source mixsweep: mixsweep.synth.write_synth is not available")
        made = write_synth(folder / "synth", scale="medium")
        paths = sorted(p for p in Path(made.coco_train_images).iterdir()
                       if is_image_file(p) and p.suffix.lower() in (".jpg", ".jpeg"))
        return paths[:n], "mixsweep.synth.write_synth(scale='medium') COCO train images"
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 6, (800, 800, 3)).astype(np.int16)
    out = folder / "own"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        w, h = SIZES[k % len(SIZES)]
        p = out / f"{k:06d}.jpg"
        draw_photo(rng, w, h, noise).save(p, quality=90)
        paths.append(p)
    return paths, "own drawing (gradients, shapes, noise), JPEG q90"


def list_images(folder: Path, limit: int) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        sys.exit(f"{folder}: no images found")
    return paths[:limit]


def time_batches(batches: Callable[[], Iterable], batch_size: int, n_images: int, warmup: int,
                 cuda: bool) -> float:
    """img/s over at least n_images, after `warmup` batches; epochs restart as needed."""
    def stream():
        for epoch in itertools.count():
            yield from batches(epoch)

    it = stream()
    for _ in range(warmup):
        next(it)
    if cuda:
        torch.cuda.synchronize()
    seen, t0 = 0, time.perf_counter()
    while seen < n_images:
        b = next(it)
        seen += len(b["index"]) if isinstance(b, dict) else len(b)
    if cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--images", type=Path, help="folder of JPEGs (searched recursively); default: synthetic")
    ap.add_argument("--synth", type=int, default=1024, help="synthetic images to write when no --images (default 1024)")
    ap.add_argument("--synth-source", choices=("own", "mixsweep"), default="own",
                    help="synthetic images: own 640x480-ish drawings (default) or mixsweep.synth's COCO set")
    ap.add_argument("--max-files", type=int, default=8192, help="use at most this many files of --images")
    ap.add_argument("--num-images", type=int, default=4096, help="images timed per path, after warm-up")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up batches per path")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                    help="DataLoader workers for the PIL path and pack-build processes")
    ap.add_argument("--pack-size", type=int, default=256)
    ap.add_argument("--out-size", type=int, default=224)
    ap.add_argument("--cache", type=Path, help="pack cache folder (default: a temp dir, removed at the end)")
    ap.add_argument("--paths", default="pil,packed-cpu,packed-gpu", help="comma list of paths to time")
    args = ap.parse_args(argv)
    todo = set(args.paths.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="data_throughput-"))
    results: list[tuple[str, str, float, str]] = []
    try:
        if args.images:
            paths, source = list_images(args.images, args.max_files), str(args.images)
        else:
            t = time.perf_counter()
            paths, source = synth_images(tmp / "images", args.synth, args.synth_source)
            print(f"wrote {len(paths)} synthetic JPEGs in {time.perf_counter() - t:.1f} s")
        print(f"images: {len(paths)} from {source}; batch {args.batch}; timed {args.num_images} img per path")
        cpu = cpu_model()
        cfg = AugmentConfig(out_size=args.out_size)

        if "pil" in todo:
            ds = FileImageDataset(paths, out_size=args.out_size)
            dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0,
                                             prefetch_factor=4 if args.workers > 0 else None)
            r = time_batches(lambda e: dl, args.batch, args.num_images, args.warmup, cuda=False)
            results.append(("pil (DataLoader)", cpu, r, f"{args.workers} workers, decode+RRC bicubic+flip"))
            del dl  # shuts its persistent workers down, so they stop prefetching while the next path runs
            gc.collect()

        cache = args.cache or tmp / "cache"
        items = [PackItem(str(i), str(p)) for i, p in enumerate(paths)]
        if not todo.isdisjoint({"packed-cpu", "packed-gpu"}):
            reused = (cache / pack_key(items, args.pack_size, "crop") / "meta.json").is_file()
            t = time.perf_counter()
            pack = build_pack(items, cache, size=args.pack_size, fit="crop", workers=args.workers, progress=True)
            dt = time.perf_counter() - t
            note = "reused existing pack" if reused else f"{args.workers} procs, draft+bicubic to {args.pack_size}²"
            results.append(("pack build (once)", cpu, len(items) / dt, f"{note}, {len(pack.valid_indices)} ok"))

        loaders = []
        if "packed-cpu" in todo:
            loaders += [("packed resident", "cpu", True), ("packed streamed", "cpu", False)]
        if "packed-gpu" in todo and torch.cuda.is_available():
            loaders += [("packed resident", "cuda", True), ("packed streamed", "cuda", False)]
        elif "packed-gpu" in todo:
            print("no GPU: packed-gpu skipped")
        for name, device, resident in loaders:
            ld = PackedLoader(pack, args.batch, augment=cfg, device=device, resident=resident)

            def epochs(e: int, ld: PackedLoader = ld) -> Iterable:
                ld.set_epoch(e)
                return ld

            r = time_batches(epochs, args.batch, args.num_images, args.warmup, cuda=device == "cuda")
            dev_name = torch.cuda.get_device_name() if device == "cuda" else cpu
            results.append((name, dev_name, r, f"torch threads {torch.get_num_threads()}" if device == "cpu" else ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"data throughput, batch {args.batch}, out {args.out_size}² (torch {torch.__version__})")
        for col in ("path", "device", "img/s", "notes"):
            table.add_column(col, justify="right" if col == "img/s" else "left")
        for name, dev, r, note in results:
            table.add_row(name, dev, f"{r:,.0f}", note)
        Console().print(table)
    except ImportError:
        for name, dev, r, note in results:
            print(f"{name:22s} {dev:40s} {r:10,.0f} img/s  {note}")


if __name__ == "__main__":
    main()
