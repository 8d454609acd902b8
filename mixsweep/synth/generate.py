"""write_synth: the whole synthetic set, COCO-format and Pet-format, under one folder; reused when the
same set is already there."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mixsweep.errors import MixsweepError
from mixsweep.files import process_alive, write_text_atomic
from mixsweep.synth.coco import write_coco
from mixsweep.synth.jobs import open_pool
from mixsweep.synth.output import GENERATOR_NAME, GENERATOR_VERSION, MARKER, SCALES, WRITING, SynthPaths
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


def _writer(root: Path) -> dict | None:
    """The claim of an unfinished write_synth in `root` (pid, host, arguments), or None if there is none or
    the file there is not one of ours."""
    try:
        claim = json.loads((root / WRITING).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(claim, dict) or claim.get("generator") != GENERATOR_NAME:
        return None
    return claim


def _check_ownership(root: Path) -> None:
    """Refuse unless everything write_synth would replace under `root` is its own: a complete set (the stamp),
    a write that was killed (the claim, its process gone), or nothing at all. Never deletes user data."""
    for path in (root, *root.parents):  # the nearest thing that exists must be a folder
        if path.exists():
            if not path.is_dir():
                under = "" if path == root else f" (so {root} cannot be made)"
                raise MixsweepError(f"{path}: exists and is not a folder{under}; choose a folder for the "
                                    "synthetic data")
            break
    claim = _writer(root)
    if claim is not None:
        pid, host = claim.get("pid"), claim.get("host")
        if host != socket.gethostname():
            raise MixsweepError(f"{root}: synthetic data is being written there from host {host} (process {pid}), "
                                f"or that write was interrupted; wait for it, or delete {root} and run again")
        # This process's own claim is a write of its own that failed (write_synth does not run in threads).
        if isinstance(pid, int) and pid != os.getpid() and process_alive(pid):
            raise MixsweepError(f"{root}: synthetic data is being written there by process {pid}; "
                                "wait for it to finish")
        return  # killed mid-write: its files are redone
    if (root / MARKER).is_file():
        return  # a complete set of other arguments: replaced
    for sub in ("coco", "pets"):
        path = root / sub
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise MixsweepError(f"{path} exists and was not written by write_synth; choose an empty output folder")


def write_synth(out: Path | str, scale: str = "small", seed: int = 0, awkward: bool = True,
                progress: bool = False, world: str = "planted", copy_from: Path | str | None = None) -> SynthPaths:
    """Write synthetic COCO 2017 (train/val) and Oxford-IIIT Pet data under `out`; returns the paths.

    `world` (README, "Two worlds with a known answer"): planted, where animal images share the Pets' make-up
    and non-animal images do not, or null, where the label says nothing about the pixels. The Pet images are
    the same in both. Byte-identical for the same (scale, seed, awkward, world). If `out` already holds a
    complete set made with the same arguments it is reused as is; one made with other arguments, or a write
    that was killed before it finished (synth.writing.json, its process gone), is replaced. Refuses to touch
    `out/coco` or `out/pets` that write_synth did not make, and a write still running in another process.
    `copy_from`: a complete set written elsewhere with the same arguments, copied instead of rendered again.
    """
    if scale not in SCALES:
        raise MixsweepError(f"unknown synth scale {scale!r}; choose one of: {', '.join(SCALES)}")
    if world not in WORLDS:
        raise MixsweepError(f"unknown synth world {world!r}; choose one of: {', '.join(WORLDS)}")
    spec = SCALES[scale]
    root = Path(out)
    paths = SynthPaths.under(root)
    want = _marker(scale, seed, awkward, world)
    try:
        if synth_is_written(root, scale, seed, awkward, world):
            return paths
        _check_ownership(root)
        root.mkdir(parents=True, exist_ok=True)
        # The claim goes first, the stamp last: whatever a kill leaves in between is recognisably ours.
        claim = {"generator": GENERATOR_NAME, "pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": json.loads(want)}
        write_text_atomic(root / WRITING, json.dumps(claim, indent=1) + "\n")
        (root / MARKER).unlink(missing_ok=True)
        for sub in ("coco", "pets"):
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
        t0 = time.perf_counter()
        if copy_from is not None and synth_is_written(copy_from, scale, seed, awkward, world):
            for sub in ("coco", "pets"):  # the same bytes the render would write
                shutil.copytree(Path(copy_from) / sub, root / sub)
        else:
            n_jobs = spec.n_coco_train + spec.n_coco_val + spec.n_pets
            pool = open_pool(n_jobs)
            try:
                write_coco(paths, scale, seed, pool, progress, world)
                write_pets(paths, spec, seed, awkward, pool, progress)
            finally:
                if pool is not None:
                    pool.shutdown()
        write_text_atomic(root / MARKER, want)
        (root / WRITING).unlink()
    except BrokenProcessPool:
        raise MixsweepError(f"{root}: a worker process died while writing synthetic data (killed, or out of "
                            "memory); run again, the unfinished set is redone") from None
    except OSError as e:
        # The claim stays (when it was written): the next call redoes this folder.
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(root).free if root.is_dir() else 0
            raise MixsweepError(f"{root}: disk full while writing synthetic data ({free} bytes free); make room "
                                "and run again, the unfinished set is redone") from None
        raise MixsweepError(f"{e.filename or root}: cannot write synthetic data "
                            f"({' '.join(str(e.strerror or e).split())})") from None
    if progress:
        print(f"synth: {scale} {world} world, seed {seed}, written to {root} in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr, flush=True)
    return paths
