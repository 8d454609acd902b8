"""Pre-training mixtures: N images of which exactly round(F·N) are animal, nested along the grid.

Each image gets a rank from a keyed hash of (purpose, seed, image_id). Sorting a class by rank gives a
fixed order per seed, and a mixture takes a prefix of the animal order and a prefix of the non-animal
order. So, for one seed:
- at F1 < F2 the animal images chosen at F1 are a subset of those at F2, and the non-animal images at
  F2 a subset of those at F1: moving along the grid only swaps images;
- the order never depends on file order, dict order, Python's hash seed or the NumPy version, and adding
  images to the index does not reshuffle the ones already there.

The validation set is the same construction on a seed-independent order, either over a separate index
(val2017) or over a slice held out of the training index before any training mixture is drawn.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixsweep.errors import MixsweepError
from mixsweep.tables import columns_digest, table_metadata

MIX_COLUMNS = ["image_id", "file_name", "width", "height", "is_animal", "split", "order"]
HOLDOUT_DIVISOR = 25  # default held-out validation: 4% of the smaller class


def hash_rank(purpose: str, seed: int | str, ids) -> np.ndarray:
    """A uint64 rank per id from blake2b(purpose/seed/id): reproducible on any machine."""
    prefix = f"mixsweep/{purpose}/{seed}/".encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def hash_order(purpose: str, seed: int | str, ids: np.ndarray) -> np.ndarray:
    """`ids` sorted by their hash rank (ties, which need a 64-bit collision, broken by id)."""
    ids = np.asarray(ids)
    ranks = hash_rank(purpose, seed, ids.tolist())
    return ids[np.lexsort((ids, ranks))]


def round_half_up(x: float) -> int:
    """Rounding with halves up (Python's round() would round 2.5 to 2); 1e-9 absorbs 0.1*30 = 3.0000000000000004."""
    return int(math.floor(x + 0.5 + 1e-9))


def n_animal_for(fraction: float, size: int) -> int:
    """round(F·N): the number of animal images in a mixture of N at fraction F."""
    return round_half_up(fraction * size)


def check_fraction(fraction: float, name: str = "--animal-fraction") -> float:
    if not isinstance(fraction, (int, float)) or not (0.0 <= float(fraction) <= 1.0) or math.isnan(fraction):
        raise MixsweepError(f"{name}: {fraction} is outside [0, 1]")
    return float(fraction)


@dataclass(frozen=True)
class Pools:
    """Animal and non-animal image ids, each in its draw order."""

    animal: np.ndarray
    non_animal: np.ndarray

    @property
    def max_size(self) -> int:
        """Largest N at which every fraction in [0, 1] is feasible."""
        return int(min(len(self.animal), len(self.non_animal)))

    def draw(self, fraction: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        k = n_animal_for(fraction, size)
        return self.animal[:k], self.non_animal[: size - k]


def class_ids(index: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    ids = index.column("image_id").to_numpy()
    is_animal = index.column("is_animal").to_numpy(zero_copy_only=False)
    is_non = index.column("is_non_animal").to_numpy(zero_copy_only=False)
    if len(np.unique(ids)) != len(ids):
        raise MixsweepError("index: duplicate image_id values (was it concatenated twice?)")
    return np.sort(ids[is_animal]), np.sort(ids[is_non])


@dataclass(frozen=True)
class MixturePlan:
    """Where the training and validation images come from, before choosing a fraction."""

    train: Pools
    val: Pools
    val_size: int
    val_source: str  # "holdout" or "val-index"


def plan_pools(index: pa.Table, seed: int, val_index: pa.Table | None = None, val_size: int | None = None) -> MixturePlan:
    """Split the index into seed-ordered training pools and a seed-independent validation pool."""
    animal, non = class_ids(index)
    given = val_size is not None
    if val_index is not None:
        v_animal, v_non = class_ids(val_index)
        overlap = np.intersect1d(np.concatenate([animal, non]), np.concatenate([v_animal, v_non]))
        if len(overlap):
            raise MixsweepError(f"--val-index shares {len(overlap)} image ids with --index (first: {overlap[0]})")
        v_animal, v_non = hash_order("val", "fixed", v_animal), hash_order("val", "fixed", v_non)
        limit, source = min(len(v_animal), len(v_non)), "val-index"
    else:
        v_animal, v_non = hash_order("holdout", "fixed", animal), hash_order("holdout", "fixed", non)
        limit = min(len(animal), len(non)) // 2
        if val_size is None:
            val_size = max(1, min(len(animal), len(non)) // HOLDOUT_DIVISOR)
        source = "holdout"
    if val_size is None:
        val_size = limit
    if not 0 <= val_size <= limit:
        if source == "holdout":
            pool = (f"half the smaller class may be held out of the training index's {len(animal)} animal and "
                    f"{len(non)} non-animal images")
        else:
            pool = f"the validation index has {len(v_animal)} animal and {len(v_non)} non-animal images"
        what = (f"--val-size {val_size}" if given
                else f"the default --val-size {val_size} (1/{HOLDOUT_DIVISOR} of the smaller class, at least 1)")
        raise MixsweepError(
            f"{what}: validation needs {val_size} animal and {val_size} non-animal images, "
            f"at most {limit} of each are available ({pool})"
        )
    if source == "holdout":
        v_animal, v_non = v_animal[:val_size], v_non[:val_size]
        animal = np.setdiff1d(animal, v_animal, assume_unique=True)
        non = np.setdiff1d(non, v_non, assume_unique=True)
    train = Pools(hash_order("train", seed, animal), hash_order("train", seed, non))
    return MixturePlan(train=train, val=Pools(v_animal, v_non), val_size=val_size, val_source=source)


def build_mixture(
    index: pa.Table,
    fraction: float,
    size: int | None = None,
    seed: int = 0,
    val_index: pa.Table | None = None,
    val_size: int | None = None,
) -> pa.Table:
    """The training and validation images of one grid point, one row each, `split` train/val."""
    fraction = check_fraction(fraction)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MixsweepError(f"--seed: {seed!r} is not a non-negative integer")
    plan = plan_pools(index, seed, val_index, val_size)
    pools = plan.train
    if size is None:
        size = pools.max_size
    if size <= 0:
        raise MixsweepError(f"--size: {size} must be positive")
    k = n_animal_for(fraction, size)
    if k > len(pools.animal) or size - k > len(pools.non_animal):
        held = f" after holding out {plan.val_size}+{plan.val_size} for validation" if plan.val_source == "holdout" else ""
        raise MixsweepError(
            f"--size {size} at animal fraction {fraction:g} needs {k} animal and {size - k} non-animal images; "
            f"the index has {len(pools.animal)} animal and {len(pools.non_animal)} non-animal{held} "
            f"(largest size valid at every fraction: {pools.max_size})"
        )
    train_a, train_n = pools.draw(fraction, size)
    val_a, val_n = plan.val.draw(fraction, plan.val_size)

    parts = [(train_a, train_n, "train", index)]
    parts.append((val_a, val_n, "val", val_index if val_index is not None else index))
    tables = []
    for animal_ids, non_ids, split, source in parts:
        ids = np.concatenate([animal_ids, non_ids]).astype(np.int64)
        # Rows follow the draw order (animals first), so a prefix of a file is a prefix of the grid.
        order = np.concatenate([np.arange(len(animal_ids)), np.arange(len(non_ids))]).astype(np.int64)
        rows = _rows_for(source, ids)
        tables.append(
            pa.table(
                {
                    "image_id": pa.array(ids, pa.int64()),
                    "file_name": rows.column("file_name"),
                    "width": rows.column("width"),
                    "height": rows.column("height"),
                    "is_animal": pa.array(np.arange(len(ids)) < len(animal_ids)),
                    "split": pa.array([split] * len(ids), pa.string()),
                    "order": pa.array(order, pa.int64()),
                }
            )
        )
    table = pa.concat_tables(tables)
    meta = {
        "kind": "mixture",
        "animal_fraction": repr(fraction),
        "size": str(size),
        "n_animal": str(k),
        "seed": str(seed),
        "val_size": str(plan.val_size),
        "val_source": plan.val_source,
        "index_digest": columns_digest(index, ["image_id", "is_animal", "is_non_animal"]),
        "index_rule": table_metadata(index).get("rule", ""),
    }
    return table.replace_schema_metadata({f"mixsweep.{k}": v for k, v in meta.items()})


def _rows_for(source: pa.Table, ids: np.ndarray) -> pa.Table:
    """Rows of `source` for `ids`, in the order of `ids`."""
    pos = pc.index_in(pa.array(ids, pa.int64()), source.column("image_id").cast(pa.int64()))
    return source.select(["file_name", "width", "height"]).take(pos)


def mixture_summary(table: pa.Table) -> dict[str, dict[str, int]]:
    """{split: {animal, non_animal, total}} for printing."""
    out = {}
    for split in ("train", "val"):
        part = table.filter(pc.equal(table.column("split"), split))
        n_a = int(pc.sum(part.column("is_animal")).as_py() or 0)
        out[split] = {"animal": n_a, "non_animal": part.num_rows - n_a, "total": part.num_rows}
    return out



def read_mixture(path) -> pa.Table:
    from mixsweep.tables import read_table

    return read_table(path, ("image_id", "file_name", "is_animal", "split"), "mixture",
                      "make one with `mixsweep data mix`")


def mixture_pack_items(mixtures: list[pa.Table], images_dir, val_images_dir=None) -> list:
    """PackItems for the union of some mixtures (one pack serves every grid point it covers).

    Validation rows drawn from val2017 live in another folder: `val_images_dir` (default `images_dir`,
    right for a held-out slice).
    """
    from pathlib import Path

    from mixsweep.data.imread import name_problem
    from mixsweep.data.packed import PackItem

    folders = {"train": Path(images_dir), "val": Path(val_images_dir or images_dir)}
    for folder in set(folders.values()):
        if not folder.is_dir():
            raise MixsweepError(f"{folder}: COCO image folder not found")
    files: dict[int, Path] = {}
    for table in mixtures:
        for i, name, split in zip(table.column("image_id").to_pylist(), table.column("file_name").to_pylist(),
                                  table.column("split").to_pylist()):
            # Indexed names are checked, but a store may hold an index from before that check.
            if problem := name_problem(name):
                raise MixsweepError(f"mixture: image_id {i}: file_name {name!r} {problem}; rebuild the index "
                                    f"with `mixsweep data coco-index`")
            path = folders[split] / name
            if files.setdefault(i, path) != path:  # one pack row per id: two files for it would be one lost
                raise MixsweepError(f"image_id {i} names two files, {files[i]} and {path}: mixtures from "
                                    "different indexes cannot share a pack")
    return [PackItem(str(i), str(files[i])) for i in sorted(files)]


def union_of(mixtures: list[pa.Table]) -> pa.Table:
    """The images any of `mixtures` uses, once each, by image_id: the list a grid's one pack is built from.
    Its pack is the pack of the mixtures together (same items, same key), so `data pack --mix` on the
    grid's mixtures builds the very pack the sweep reads."""
    cols = ["image_id", "file_name", "is_animal", "split"]
    table = pa.concat_tables([m.select(cols) for m in mixtures])
    ids = table.column("image_id").to_numpy()
    _, first = np.unique(ids, return_index=True)  # sorted by id
    return table.take(pa.array(first))
