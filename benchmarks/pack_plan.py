"""Pre-training packs, one per mixture (before) vs one per grid (after): images decoded and bytes written.

Two parts, one run (no Ray, no GPU):
  counts  a spec's grid (default sweeps/degradation.yaml) drawn on a synthetic COCO index of the real sizes,
          counted from the same mixtures the plan draws (grid_mixture, union_of): before, every pre-training
          packs its own mixture; after, the grid packs their union once. Also: the grid grown by one seed.
  timing  the demo grid (15 pre-trainings) on the demo's synthetic world: the 15 per-mixture packs, each
          into an empty cache as the old code built them, then the one union pack, timed.

    python benchmarks/pack_plan.py                     # both parts
    python benchmarks/pack_plan.py --skip-timing       # counts only (about a minute: 45 mixtures of 117k ids)
    python benchmarks/pack_plan.py --index coco_index.parquet --val-index coco_val_index.parquet  # real counts

The synthetic index has the real COCO 2017 sizes: 117,266 annotated train2017 images and
4,952 annotated val2017 images. How many of them count as animal depends on the rule and is printed by
`mixsweep data coco-index` on the real JSON; the defaults (23,000 train, 1,090 val) follow the spec's
"~23k images per mixture" and the paper's 1,090 validation animals. Pass the real indexes for exact figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixsweep.data.mixture import union_of
from mixsweep.spec import load_spec
from mixsweep.sweep.plan import grid_mixture
from mixsweep.tables import read_table

ROOT = Path(__file__).resolve().parents[1]


def synthetic_index(n: int, n_animal: int, first_id: int) -> pa.Table:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    animal = np.zeros(n, dtype=bool)
    animal[np.random.default_rng(first_id).choice(n, n_animal, replace=False)] = True
    return pa.table({"image_id": ids, "file_name": [f"{i:012d}.jpg" for i in ids],
                     "width": np.full(n, 640, np.int32), "height": np.full(n, 480, np.int32),
                     "is_animal": animal, "is_non_animal": ~animal})


def grid_counts(spec, index: pa.Table, val_index: pa.Table | None, seeds) -> tuple[int, int, int]:
    """(pre-trainings, images the per-mixture packs decode, images in the grid's union pack)."""
    mixes = [grid_mixture(spec, index, val_index, f, s) for s in seeds for f in spec.grid.animal_fractions]
    return len(mixes), sum(m.num_rows for m in mixes), union_of(mixes).num_rows


def counts(args) -> list[str]:
    spec = load_spec(args.spec, check_paths=False)
    if args.index:
        index = read_table(args.index, ("image_id", "file_name", "is_animal", "is_non_animal"), "COCO index")
        val_index = read_table(args.val_index, ("image_id",), "COCO index") if args.val_index else None
    else:
        index = synthetic_index(args.train_images, args.train_animal, 1)
        val_index = synthetic_index(args.val_images, args.val_animal, 10_000_000)
    row = spec.mixture.pack_size ** 2 * 3
    seeds = list(spec.grid.seeds)
    n, before, after = grid_counts(spec, index, val_index, seeds)
    _, _, grown = grid_counts(spec, index, val_index, seeds + [max(seeds) + 1])
    gb = lambda k: f"{k * row / 1e9:,.1f} GB"  # noqa: E731
    return [
        f"{spec.name}: {n} pre-trainings, index {index.num_rows:,} train + "
        f"{0 if val_index is None else val_index.num_rows:,} val images, pack side {spec.mixture.pack_size}",
        "| | images decoded | bytes written |",
        "|---|---|---|",
        f"| before: one pack per mixture | {before:,} | {gb(before)} |",
        f"| after: one pack for the grid's union | {after:,} | {gb(after)} |",
        f"| ratio | {before / after:.1f}x fewer | {before / after:.1f}x less |",
        f"| grid + seed {max(seeds) + 1}: new union pack | {grown - after:,} (rest copied) | {gb(grown)} |",
    ]


def timing(args) -> list[str]:
    import warnings

    from mixsweep.data.mixture import mixture_pack_items, read_mixture
    from mixsweep.data.pack_build import build_pack
    from mixsweep.demo import demo_spec
    from mixsweep.sweep.plan import build_grid_pack, build_plan, write_plan_inputs, write_spec_data
    from mixsweep.sweep.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        spec = demo_spec()[0].model_copy(update={"storage": Path(tmp) / "store"})
        store = Store(spec.storage)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the world's awkward Pet files
            write_spec_data(spec, store)  # what `mixsweep run` writes before it builds the grid's pack
            plan = build_plan(spec, store)
            write_plan_inputs(plan, store)
        data = [s.job.data for s in plan.stages if s.kind == "pretrain"]
        t0 = time.perf_counter()
        decoded = 0
        for k, d in enumerate(data):  # the old path: each pre-training packs its mixture, nothing to copy from
            items = mixture_pack_items([read_mixture(d.mixture)], d.images, d.val_images)
            decoded += build_pack(items, Path(tmp) / f"before-{k}", size=d.pack_size, workers=args.workers).built[
                "decoded"]
        t_before = time.perf_counter() - t0
        t0 = time.perf_counter()
        pack = build_grid_pack(plan)
        t_after = time.perf_counter() - t0
        # The grid grown by a seed: the new union copies the old pack's rows and decodes the rest.
        grid = spec.grid.model_copy(update={"seeds": [*spec.grid.seeds, max(spec.grid.seeds) + 1]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grown_plan = build_plan(spec.model_copy(update={"grid": grid}), store)
            write_plan_inputs(grown_plan, store)
        t0 = time.perf_counter()
        grown = build_grid_pack(grown_plan)
        t_grown = time.perf_counter() - t0
    per_decode = t_after / pack.built["decoded"]
    per_copy = max(0.0, t_grown - grown.built["decoded"] * per_decode) / max(1, grown.built["copied"])
    return [
        f"demo grid ({len(data)} pre-trainings, {args.workers} decode workers, {spec.mixture.pack_size}² packs): "
        f"before {decoded:,} images decoded in {t_before:.1f} s; after {pack.built['decoded']:,} decoded in "
        f"{t_after:.1f} s ({t_before / t_after:.1f}x faster)",
        f"demo grid + 1 seed: {grown.built['decoded']:,} decoded + {grown.built['copied']:,} copied in "
        f"{t_grown:.1f} s (a copied row ~{100 * per_copy / per_decode:.0f}% of a decode, here)",
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=ROOT / "sweeps" / "degradation.yaml")
    p.add_argument("--index", type=Path, help="a real COCO index from `mixsweep data coco-index`")
    p.add_argument("--val-index", type=Path)
    p.add_argument("--train-images", type=int, default=117_266)
    p.add_argument("--train-animal", type=int, default=23_000)
    p.add_argument("--val-images", type=int, default=4_952)
    p.add_argument("--val-animal", type=int, default=1_090)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-timing", action="store_true")
    args = p.parse_args(argv)
    lines = counts(args)
    if not args.skip_timing:
        lines += [""] + timing(args)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
