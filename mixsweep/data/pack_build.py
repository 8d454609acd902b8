"""Building a pack (the format and its keys: packed.py): decode and resize each item once in worker processes,
copy the rows an older pack of the same rule holds, check the disk has room, and rename the finished folder
into place."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import shutil
import socket
import sys
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mixsweep.data.imread import ImageReadError, describe_quirks, read_label_png, read_rgb_image, to_rgb
from mixsweep.data.packed import (FITS, PACK_VERSION, MaskFn, PackedSet, PackItem, mask_fn_identity, pack_key,
                                  pack_rule, rule_key, source_id)
from mixsweep.errors import MixsweepError
from mixsweep.files import process_alive

MAX_FILE_WARNINGS = 5
_CHUNK = 32  # items per worker task: big enough to amortise the task, small enough for a live progress bar
# Room for rows.parquet and meta.json beside the arrays (generous: a COCO-sized pack's rows take ~10 MB).
_META_BYTES_PER_ROW = 512
_META_BYTES_FIXED = 1 << 20
# Names a temporary folder's host, so an orphan sweep never judges another machine's pid (a shared cache).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------------------
# Decoding one item (runs in worker processes)


def _square_box(w: int, h: int, fit: str) -> tuple[float, float, float, float]:
    """The source region that becomes the S×S output: the central square ('crop') or everything ('squash')."""
    if fit == "squash":
        return 0.0, 0.0, float(w), float(h)
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side


def _load_image(path: str, size: int, fit: str) -> tuple[np.ndarray, str, int, int]:
    """(S,S,3) uint8, quirks, original width, original height. Raises ImageReadError."""
    try:
        img = Image.open(path)
        ow, oh = img.size
        quirks = describe_quirks(Path(path), img)
        box = _square_box(ow, oh, fit)
        if img.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) while the box stays >= S pixels:
            # several times faster than a full decode of a 640x480 photo.
            need = (math.ceil(ow * size / (box[2] - box[0])), math.ceil(oh * size / (box[3] - box[1])))
            img.draft("RGB", need)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt JPEG data" is noted by the manifests, not per epoch
            img.load()
        sx, sy = img.size[0] / ow, img.size[1] / oh
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        out = to_rgb(img).resize((size, size), Image.Resampling.BICUBIC, box=box)
        return np.asarray(out, dtype=np.uint8), quirks, ow, oh
    except Exception:
        # Let imread name the failure in its usual words (it raises ImageReadError); if it can read the
        # file after all, the original error stands.
        read_rgb_image(path)
        raise


def _load_mask(path: str, ow: int, oh: int, size: int, fit: str, mask_fn: MaskFn | None) -> np.ndarray | str:
    """(S,S) uint8 labels, or the issue as a string."""
    try:
        raw = read_label_png(path)
    except ImageReadError as e:
        return f"unreadable mask: {e.reason}"
    if raw.shape != (oh, ow):
        return f"mask size {raw.shape[1]}x{raw.shape[0]} != image size {ow}x{oh}"
    # NEAREST only: label values must never be blended. Same box as the image, so the geometry matches.
    m = np.asarray(Image.fromarray(raw).resize((size, size), Image.Resampling.NEAREST, box=_square_box(ow, oh, fit)))
    if mask_fn is not None:
        m = np.asarray(mask_fn(m))
        if m.shape != (size, size):
            return f"mask_fn returned shape {m.shape}, expected {(size, size)}"
        m = m.astype(np.uint8)
    return m


def _pack_chunk(task: tuple) -> list[tuple[int, bool, str, str, int, int]]:
    """Decode a chunk of items straight into the pack's memmaps; returns (index, ok, issue, quirks, w, h) rows."""
    folder, n, size, fit, has_masks, mask_fn, chunk = task
    images = np.memmap(Path(folder) / "images.u8", dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
    masks = (np.memmap(Path(folder) / "masks.u8", dtype=np.uint8, mode="r+", shape=(n, size, size))
             if has_masks else None)
    rows = []
    for i, image_path, mask_path in chunk:
        quirks, ow, oh = "", 0, 0
        try:
            img, quirks, ow, oh = _load_image(image_path, size, fit)
            mask = None
            if has_masks:
                mask = "no mask for this image" if mask_path is None else _load_mask(
                    mask_path, ow, oh, size, fit, mask_fn)
            if isinstance(mask, str):
                rows.append((i, False, mask, quirks, ow, oh))
                continue
            # Written only once image and mask are both good: a bad row stays all zeros.
            images[i] = img
            if masks is not None:
                masks[i] = mask
            rows.append((i, True, "", quirks, ow, oh))
        except ImageReadError as e:
            rows.append((i, False, e.reason, quirks, ow, oh))
        except Exception as e:  # never fail a whole build on one odd file
            rows.append((i, False, f"cannot pack ({type(e).__name__}: {str(e)[:80]})", quirks, ow, oh))
    images.flush()
    if masks is not None:
        masks.flush()
    return rows


# ---------------------------------------------------------------------------------------------------------
# Building and opening


def _clear_orphans(cache_root: Path) -> None:
    """Remove temporary folders of builds on this host whose process is gone (killed, or crashed before this
    code cleaned up after itself), so their space counts as free again. A live process's folder is its
    build in progress and stays."""
    for folder in cache_root.glob(".tmp-*"):
        parts = folder.name.split("-")  # ".tmp", key, pid, host, random
        if len(parts) == 5 and parts[3] == _HOST_TAG:
            pid = parts[2]
        elif len(parts) == 4:
            # Named before names carried a host (".tmp", key, pid, random), by builds that died on a full
            # disk without cleaning up: judged as this host's.
            pid = parts[2]
        else:
            continue
        if pid.isdigit() and not process_alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _human(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def _bytes(nbytes: int) -> str:
    return f"{nbytes} bytes ({_human(nbytes)})"


def _reserve(path: Path, nbytes: int) -> None:
    """A zero-filled file of `nbytes` whose blocks are allocated now. A sparse file would let the disk fill
    while workers write rows through a memmap, and a memmap write to a full disk is a SIGBUS (the process
    dies) instead of an error; allocating up front turns that into ENOSPC here."""
    with open(path, "wb") as f:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                    raise
        # No allocation on this system / file system: sparse, as before (the free-space check still ran).
        f.truncate(nbytes)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _pool_context() -> mp.context.BaseContext:
    # fork: workers start in milliseconds instead of re-importing torch (spawn/forkserver); they only use
    # numpy and PIL, so the parent's threads (torch, CUDA) do not matter to them.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context()


def build_pack(
    items: Sequence[PackItem],
    cache_root: Path | str,
    size: int = 256,
    fit: str = "crop",
    mask_fn: MaskFn | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> PackedSet:
    """Pack `items` at S=`size` into cache_root/<pack_key>/ once; an existing complete pack is reused as is.

    fit='crop': shorter side to S, then the central S×S; fit='squash': the whole image to S×S. Images are
    resized bicubic (antialiased), masks nearest with the same geometry, then `mask_fn` (a picklable,
    module-level function) maps raw mask values to labels. An unreadable image or mask, or a mask whose
    size differs from its image's, gives ok=False with the reason in `issue` and zeros in the arrays,
    plus a warning; the build itself never fails on a bad file.
    """
    items = list(items)
    if fit not in FITS:
        raise MixsweepError(f"pack fit {fit!r}: expected one of {', '.join(FITS)}")
    if not isinstance(size, int) or size < 1:
        raise MixsweepError(f"pack size {size!r}: expected a positive integer")
    if not items:
        raise MixsweepError("nothing to pack: the item list is empty")
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise MixsweepError(f"pack items have duplicate keys, e.g. {dup!r}")
    if mask_fn is not None:
        try:
            pickle.dumps(mask_fn)
        except Exception:
            name = mask_fn_identity(mask_fn)[0]
            raise MixsweepError(f"mask_fn {name} must be a module-level (picklable) function") from None

    cache_root = Path(cache_root)
    rule = pack_rule(size, fit, mask_fn)
    sources = [source_id(it) for it in items]
    key = rule_key(rule, sources)
    final = cache_root / key
    if (final / "meta.json").is_file():
        pack = PackedSet.open(final)  # built once: no source file is opened again
        pack.built = {"decoded": 0, "copied": 0, "reused": True}
        return pack

    n = len(items)
    has_masks = any(it.mask_path is not None for it in items)
    arrays = (("images.u8", n * size * size * 3), ("masks.u8", n * size * size if has_masks else 0))
    need = sum(nbytes for _, nbytes in arrays) + _META_BYTES_FIXED + _META_BYTES_PER_ROW * n
    for path in (cache_root, *cache_root.parents):  # the nearest thing that exists must be a folder
        if path.exists():
            if not path.is_dir():
                under = "" if path == cache_root else f" (so {cache_root} cannot be made)"
                raise MixsweepError(f"{path}: exists and is not a folder{under}; choose a folder for the pack cache")
            break
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        _clear_orphans(cache_root)
        free = shutil.disk_usage(cache_root).free
    except OSError as e:
        raise MixsweepError(f"{e.filename or cache_root}: cannot use as a pack cache folder "
                            f"({_one_line(e.strerror or e)})") from None
    if need > free:
        raise MixsweepError(f"{cache_root}: not enough free space to build pack {key} ({n} images at {size}px): "
                            f"needs {_bytes(need)}, {_bytes(free)} free")
    tmp = cache_root / f".tmp-{key}-{os.getpid()}-{_HOST_TAG}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        try:
            # Zero files, allocated (not sparse): rows are written in place, bad rows stay zero.
            for name, nbytes in arrays:
                if nbytes:
                    _reserve(tmp / name, nbytes)
            rows, donors = _copy_from_donors(sources, cache_root, rule, tmp, n, size, has_masks)
            todo = [i for i in range(n) if rows[i] is None]
            for r in _run_chunks(items, todo, tmp, n, size, fit, has_masks, mask_fn, workers, progress,
                                 n - len(todo)):
                rows[r[0]] = r
            table = pa.table({
                "key": pa.array(keys, pa.string()),
                "ok": pa.array([r[1] for r in rows], pa.bool_()),
                "issue": pa.array([r[2] for r in rows], pa.string()),
                "quirks": pa.array([r[3] for r in rows], pa.string()),
                "orig_width": pa.array([r[4] for r in rows], pa.int32()),
                "orig_height": pa.array([r[5] for r in rows], pa.int32()),
                "source": pa.array(sources, pa.string()),
            })
            pq.write_table(table, tmp / "rows.parquet")
            built = {"decoded": len(todo), "copied": n - len(todo), "reused": False}
            meta = {"version": PACK_VERSION, "n": n, "size": size, "fit": fit, "has_masks": has_masks, "key": key,
                    "rule": rule, "decoded": built["decoded"], "copied": built["copied"], "donors": donors}
            (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n")
            for f in tmp.iterdir():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
            if final.exists() and not (final / "meta.json").is_file():
                shutil.rmtree(final)  # not made by a finished build (those appear whole, by rename)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same pack first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BrokenProcessPool:
        raise MixsweepError(f"{cache_root}: a worker process died while building pack {key} (killed, out of "
                            "memory, or a crash in an image decoder or mask_fn); nothing was kept") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(cache_root).free
            raise MixsweepError(f"{cache_root}: disk full while building pack {key}: it needs {_bytes(need)}, "
                                f"{_bytes(free)} free with its partial files removed; nothing was kept") from None
        raise MixsweepError(f"{e.filename or tmp}: cannot build pack {key} ({_one_line(e.strerror or e)}); "
                            "nothing was kept") from None

    bad = [(it, r[2]) for it, r in zip(items, rows) if not r[1]]
    for it, issue in bad[:MAX_FILE_WARNINGS]:  # a wrong folder would otherwise print one line per image
        warnings.warn(f"pack {key}: {it.image_path}: {issue}; row {it.key!r} marked ok=False", stacklevel=2)
    if bad:
        warnings.warn(f"pack {key}: {len(bad)} of {n} items unusable (ok=False, reasons in "
                      f"{final / 'rows.parquet'})", stacklevel=2)
    pack = PackedSet.open(final)
    pack.built = built
    return pack


def _copy_from_donors(sources: list[str], cache_root: Path, rule: dict, folder: Path, n: int, size: int,
                      has_masks: bool) -> tuple[list, list[str]]:
    """Fill the new pack's rows that complete packs with the same rule already hold (a copy is ~100x
    cheaper than a decode). Returns the rows (None where still to decode) and the donor packs' keys."""
    rows: list = [None] * n
    where = {s: i for i, s in enumerate(sources)}
    used = []
    for meta_path in sorted(cache_root.glob("*/meta.json")):
        if not where:
            break
        try:
            if json.loads(meta_path.read_text()).get("rule") != rule:
                continue
            donor = PackedSet.open(meta_path.parent)
        except (MixsweepError, OSError, ValueError):
            continue  # damaged or foreign: decode those rows instead
        hits = [(where.pop(s), j) for j, s in enumerate(donor.rows.column("source").to_pylist()) if s in where]
        if not hits:
            continue
        used.append(donor.key)
        dst = np.asarray([h[0] for h in hits], dtype=np.int64)
        src = np.asarray([h[1] for h in hits], dtype=np.int64)
        meta = {c: donor.rows.column(c).to_pylist() for c in ("ok", "issue", "quirks", "orig_width", "orig_height")}
        for i, j in hits:
            rows[i] = (i, meta["ok"][j], meta["issue"][j], meta["quirks"][j], meta["orig_width"][j],
                       meta["orig_height"][j])
        images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
        masks = (np.memmap(folder / "masks.u8", dtype=np.uint8, mode="r+", shape=(n, size, size))
                 if has_masks and donor.masks is not None else None)
        order = np.argsort(src)  # the donor read near-sequentially
        for k in range(0, len(order), 512):
            sel = order[k:k + 512]
            images[dst[sel]] = donor.images[src[sel]]
            if masks is not None:
                masks[dst[sel]] = donor.masks[src[sel]]
        images.flush()
        if masks is not None:
            masks.flush()
        del images, masks
    return rows, used


def _run_chunks(items: list[PackItem], todo: list[int], folder: Path, n: int, size: int, fit: str,
                has_masks: bool, mask_fn: MaskFn | None, workers: int | None, progress: bool,
                copied: int = 0) -> list[tuple]:
    """Decode items[i] for i in `todo` into rows i of the pack in `folder`, in worker processes."""
    if not todo:
        return []
    workers = workers or min(8, os.cpu_count() or 1)
    entries = [(i, str(items[i].image_path), None if items[i].mask_path is None else str(items[i].mask_path))
               for i in todo]
    tasks = [(str(folder), n, size, fit, has_masks, mask_fn, entries[s:s + _CHUNK])
             for s in range(0, len(entries), _CHUNK)]
    rows: list[tuple] = []
    # concurrent.futures, not multiprocessing.Pool: a worker that dies (a SIGBUS, the OOM killer, a crash in a
    # decoder or in mask_fn) breaks the pool and every pending result raises BrokenProcessPool, where a
    # Pool quietly replaces the worker and waits forever for the chunk it lost.
    pool = (ProcessPoolExecutor(min(workers, len(tasks)), mp_context=_pool_context())
            if workers > 1 and len(tasks) > 1 else None)
    try:
        # Submitting forks every worker at once (fork context), before the progress bar starts its thread.
        results = _completed(pool, tasks)
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("packing {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn()) as bar:
                task_id = bar.add_task(folder.name.split("-")[1], total=n, completed=copied)
                for chunk_rows in results:
                    rows.extend(chunk_rows)
                    bar.advance(task_id, len(chunk_rows))
        else:
            for chunk_rows in results:
                rows.extend(chunk_rows)
    finally:
        if pool is not None:
            # On a failure, drop the chunks not started yet instead of decoding them for nothing.
            pool.shutdown(wait=True, cancel_futures=True)
    rows.sort(key=lambda r: r[0])
    return rows


def _completed(pool: ProcessPoolExecutor | None, tasks: list[tuple]) -> Iterator[list[tuple]]:
    """Each task's rows as its chunk finishes, in this process when there is no pool. Submits every task
    now (not lazily) so the workers fork before the caller starts any thread."""
    if pool is None:
        return map(_pack_chunk, tasks)
    futures = [pool.submit(_pack_chunk, t) for t in tasks]
    # result() raises the worker's error, or BrokenProcessPool if a worker died.
    return (fut.result() for fut in as_completed(futures))
