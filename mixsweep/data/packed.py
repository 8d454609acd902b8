"""Packed image sets: pre-resized uint8 images (and masks) on disk, built once (loader.py batches them).

A CPU PIL loader decodes ~2,200 COCO JPEGs/s with 16 workers while MAE pre-training on one H200 eats
~7,000 img/s (measured on the project's machines). So every image is decoded and resized once, into a fixed-size uint8 array on
disk (pack_build.py), and an epoch only gathers rows and augments them in batches on the device (augment.py).

Layout of one pack, `cache_root/<pack_key>/`:
    images.u8     raw uint8 (N, S, S, 3), row i = item i
    masks.u8      raw uint8 (N, S, S), only when the items have masks
    rows.parquet  key, ok, issue, quirks, orig_width, orig_height, source (the item's identity) per row
    meta.json     version, n, size, fit, has_masks, key, rule, decoded, copied, donors
A pack is built in a temporary folder and renamed into place at the end, so a folder named by its key is
always complete. The temporary folder, `.tmp-<key>-<pid>-<host>-<random>`, is removed on any failure; one
left by a killed process is removed by the next build on the same host once that process is gone. The
build checks the free space first and allocates the arrays' blocks before writing them, so a full disk is
an error message, not a SIGBUS in a worker. The key covers the rule that makes the bytes (pack_rule: size,
fit, resize rule, Pillow version, the mask function's body) and every input file's size and mtime, so a
changed file makes a new pack. A sweep packs the union of its grid's mixtures once; a pre-training reads
its mixture as row indices into it. A new pack copies the rows that an older pack of the same rule holds
and decodes only the rest, so a grid that grows decodes each image once.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import PIL
import torch

from mixsweep.errors import MixsweepError
from mixsweep.hashing import content_key

PACK_VERSION = 2  # 2: rows.parquet gains `source`, so later packs can copy rows instead of decoding
RESIZE_RULE = "pil-draft-bicubic-box/nearest-masks"  # pack_build's _load_image / _load_mask: change it with them
FITS = ("crop", "squash")

MaskFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PackItem:
    """One image (and optional mask) to pack; `key` is the manifest's id for it."""

    key: str
    image_path: str
    mask_path: str | None = None


def _stat(path: str | None) -> tuple[int | None, int | None]:
    if path is None:
        return None, None
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def _code_digest(code: types.CodeType) -> list:
    """A code object's bytecode, constants and names, nested code included (repr(code) holds an address)."""
    consts = [_code_digest(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return [code.co_code.hex(), consts, list(code.co_names)]


def mask_fn_identity(fn: MaskFn | None) -> list | None:
    """What a mask function contributes to the bytes: its name, its body and the module constants it reads
    (e.g. a lookup table), so editing any of them makes a new pack without a version bump."""
    if fn is None:
        return None
    code = getattr(fn, "__code__", None)
    if code is None:
        return [f"{fn.__module__}.{fn.__qualname__}"]
    read = {}
    for name in code.co_names:
        value = getattr(fn, "__globals__", {}).get(name)
        if isinstance(value, np.ndarray):
            read[name] = [str(value.dtype), list(value.shape), hashlib.sha256(value.tobytes()).hexdigest()]
        elif isinstance(value, (int, float, str, bytes, tuple)):
            read[name] = repr(value)
    return [f"{fn.__module__}.{fn.__qualname__}", _code_digest(code), read]


def pack_rule(size: int, fit: str, mask_fn: MaskFn | None = None) -> dict:
    """Everything besides the source files that decides a row's bytes. Two packs with equal rules hold
    byte-equal rows for the same file, so a new pack copies rows from an old one instead of decoding."""
    return {"version": PACK_VERSION, "size": size, "fit": fit, "resize": RESIZE_RULE,
            "pillow": ".".join(PIL.__version__.split(".")[:2]), "mask_fn": mask_fn_identity(mask_fn)}


def _source(it: PackItem) -> list:
    mask = None if it.mask_path is None else str(it.mask_path)
    return [it.key, str(it.image_path), *_stat(str(it.image_path)), mask, *_stat(mask)]


def source_id(it: PackItem) -> str:
    """One item's identity: key, paths and each file's size and mtime; a changed file is a new item."""
    return content_key(_source(it))


def pack_key(items: Sequence[PackItem], size: int, fit: str, mask_fn: MaskFn | None = None) -> str:
    """Content key of a pack: its rule (pack_rule) and every item's key, paths, sizes and mtimes, in order.

    Items sorted by key (as mixture_pack_items gives them) make the key a function of the image set alone:
    the union of a grid's mixtures, built by the sweep or by `data pack --mix`, is one pack.
    """
    return rule_key(pack_rule(size, fit, mask_fn), [source_id(it) for it in items])


def rule_key(rule: dict, sources: list[str]) -> str:
    return content_key([rule, sources])


class PackedSet:
    """An opened pack: read-only memmaps of images (N,S,S,3) and masks (N,S,S), plus per-row metadata."""

    def __init__(self, path: Path, images: np.memmap, masks: np.memmap | None, rows: pa.Table, meta: dict):
        self.path = path
        self.images = images
        self.masks = masks
        self.rows = rows
        self.meta = meta
        self._ok = np.asarray(rows.column("ok").to_numpy(zero_copy_only=False), dtype=bool)
        self._resident: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.built: dict | None = None  # set by build_pack: rows decoded / copied in that call, or reused

    @classmethod
    def open(cls, path: Path | str) -> PackedSet:
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise MixsweepError(f"{path}: not a complete pack ({type(e).__name__}: meta.json)") from None
        if meta.get("version") != PACK_VERSION:
            raise MixsweepError(f"{path}: pack version {meta.get('version')}, this code reads {PACK_VERSION}")
        n, s = int(meta["n"]), int(meta["size"])
        shapes = {"images.u8": (n, s, s, 3)}
        if meta["has_masks"]:
            shapes["masks.u8"] = (n, s, s)
        for name, shape in shapes.items():
            f = path / name
            want = int(np.prod(shape))
            if not f.is_file() or f.stat().st_size != want:
                raise MixsweepError(f"{f}: missing or truncated (expected {want} bytes); delete {path} to rebuild")
        images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=shapes["images.u8"])
        masks = (np.memmap(path / "masks.u8", dtype=np.uint8, mode="r", shape=shapes["masks.u8"])
                 if meta["has_masks"] else None)
        rows = pq.read_table(path / "rows.parquet")
        if rows.num_rows != n:
            raise MixsweepError(f"{path}: rows.parquet has {rows.num_rows} rows, meta.json says {n}")
        return cls(path, images, masks, rows, meta)

    def __reduce__(self):
        # Pickled (e.g. to a Ray or DataLoader worker) by path: the receiver maps the files itself instead
        # of receiving gigabytes of array data.
        return (PackedSet.open, (str(self.path),))

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def valid_indices(self) -> np.ndarray:
        """Row indices of the usable (ok) items, ascending int64."""
        return np.flatnonzero(self._ok).astype(np.int64)

    def require_usable(self, indices: np.ndarray, what: str) -> None:
        """Refuse (before any training) a split none of whose rows could be read, naming the first reason."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and not self._ok[indices].any():
            issue = self.rows.column("issue")[int(indices[0])].as_py()
            raise MixsweepError(f"{what}: none of its {len(indices)} images is usable (first: "
                                f"{self.rows.column('key')[int(indices[0])].as_py()!r}: {issue})")

    def indices_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row indices of the given item keys (e.g. a fine-tune subset); an unknown key is an error."""
        where = {k: i for i, k in enumerate(self.rows.column("key").to_pylist())}
        missing = [k for k in keys if k not in where]
        if missing:
            raise MixsweepError(f"{self.path}: {len(missing)} keys not in pack, e.g. {missing[0]!r}")
        return np.asarray([where[k] for k in keys], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.meta["n"])
