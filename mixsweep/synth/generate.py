"""write_synth: the whole synthetic set, COCO-format and Pet-format, under one folder; reused when the
same set is already there."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from mixsweep.errors import MixsweepError
from mixsweep.synth.coco import write_coco
from mixsweep.synth.jobs import open_pool
from mixsweep.synth.output import GENERATOR_NAME, GENERATOR_VERSION, MARKER, SCALES, SynthPaths
from mixsweep.synth.pets import write_pets
from mixsweep.synth.worlds import WORLDS


def _marker(scale: str, seed: int, awkward: bool, world: str) -> str:
    return json.dumps({"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "scale": scale,
                       "seed": int(seed), "awkward": bool(awkward), "world": world}, indent=1) + "\n"


def synth_is_written(out: Path | str, scale: str = "small", seed: int = 0, awkward: bool = True,
                     world: str = "planted") -> bool:
    """Whether `out` holds a complete set written by write_synth with these arguments (read-only check)."""
    marker = Path(out) / MARKER
    return marker.is_file() and marker.read_text() == _marker(scale, seed, awkward, world)


def write_synth(out: Path | str, scale: str = "small", seed: int = 0, awkward: bool = True,
                progress: bool = False, world: str = "planted") -> SynthPaths:
    """Write synthetic COCO 2017 (train/val) and Oxford-IIIT Pet data under `out`; returns the paths.

    `world` (README, "Two worlds with a known answer"): planted, where animal images share the Pets' make-up
    and non-animal images do not, or null, where the label says nothing about the pixels. The Pet images are
    the same in both. Byte-identical for the same (scale, seed, awkward, world). If `out` already holds a complete set made with
    the same arguments it is reused as is; one made with other arguments is replaced. Refuses to touch
    `out/coco` or `out/pets` that write_synth did not make.
    """
    if scale not in SCALES:
        raise MixsweepError(f"unknown synth scale {scale!r}; choose one of: {', '.join(SCALES)}")
    if world not in WORLDS:
        raise MixsweepError(f"unknown synth world {world!r}; choose one of: {', '.join(WORLDS)}")
    spec = SCALES[scale]
    root = Path(out)
    paths = SynthPaths.under(root)
    marker = root / MARKER
    want = _marker(scale, seed, awkward, world)
    if marker.is_file() and marker.read_text() == want:
        return paths
    if marker.is_file():
        marker.unlink()
        for sub in ("coco", "pets"):
            shutil.rmtree(root / sub, ignore_errors=True)
    else:
        for sub in ("coco", "pets"):
            if (root / sub).exists() and any((root / sub).iterdir()):
                raise MixsweepError(f"{root / sub} exists and was not written by write_synth; "
                                    "choose an empty output folder")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_jobs = spec.n_coco_train + spec.n_coco_val + spec.n_pets
    pool = open_pool(n_jobs)
    try:
        write_coco(paths, scale, seed, pool, progress, world)
        write_pets(paths, spec, seed, awkward, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown()
    marker.write_text(want)
    if progress:
        print(f"synth: {scale} {world} world, seed {seed}, written to {root} in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr, flush=True)
    return paths
