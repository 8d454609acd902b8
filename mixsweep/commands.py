"""What each `mixsweep` subcommand does, given its parsed arguments (mixsweep/cli.py builds the parser).
Each is a thin shell over a function in the package; heavy imports happen inside, so `--help` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from mixsweep.console import console, err_console, print_index_summary
from mixsweep.errors import MixsweepError


# --- data coco-index ---------------------------------------------------------------------------------

def cmd_coco_index(args: argparse.Namespace) -> None:
    from mixsweep.data.coco import build_coco_index
    from mixsweep.tables import write_table

    table, summary = build_coco_index(args.annotations, args.images, rule=args.rule,
                                      unlabelled_as_non_animal=args.unlabelled_as_non_animal,
                                      allow_missing=args.allow_missing)
    write_table(table, args.out)
    print_index_summary(summary)
    console.print(f"wrote {args.out} ({table.num_rows} rows)")


# --- data mix ----------------------------------------------------------------------------------------

def cmd_mix(args: argparse.Namespace) -> None:
    from mixsweep.data.coco import read_index
    from mixsweep.data.mixture import build_mixture, mixture_summary
    from mixsweep.tables import write_table

    index = read_index(args.index)
    val_index = read_index(args.val_index) if args.val_index else None
    table = build_mixture(index, args.animal_fraction, size=args.size, seed=args.seed,
                          val_index=val_index, val_size=args.val_size)
    write_table(table, args.out)
    t = Table(title=f"mixture: animal fraction {args.animal_fraction:g}, seed {args.seed}")
    for col in ("split", "animal", "non-animal", "total"):
        t.add_column(col, justify="right" if col != "split" else "left")
    for split, c in mixture_summary(table).items():
        t.add_row(split, str(c["animal"]), str(c["non_animal"]), str(c["total"]))
    console.print(t)
    console.print(f"wrote {args.out}")


# --- data pets ---------------------------------------------------------------------------------------

def cmd_pets(args: argparse.Namespace) -> None:
    from mixsweep.data.pets import build_pets_manifest, manifest_summary
    from mixsweep.tables import write_table

    table = build_pets_manifest(args.root, seed=args.seed, scheme=args.split, allow_missing=args.allow_missing,
                                workers=args.workers)
    write_table(table, args.out)
    counts = manifest_summary(table)
    t = Table(title="Oxford-IIIT Pet manifest")
    t.add_column("split")
    t.add_column("images", justify="right")
    for k, v in counts.items():
        t.add_row(k, str(v))
    console.print(t)
    quirky = [(n, q) for n, q in zip(table.column("name").to_pylist(), table.column("quirks").to_pylist()) if q]
    if quirky:
        console.print(f"{len(quirky)} images normalised at indexing: " + ", ".join(f"{n} ({q})" for n, q in quirky[:8])
                      + (" ..." if len(quirky) > 8 else ""))
    console.print(f"wrote {args.out}")


# --- data synth --------------------------------------------------------------------------------------

def cmd_synth(args: argparse.Namespace) -> None:
    from mixsweep.synth import write_synth

    paths = write_synth(args.out, scale=args.scale, seed=args.seed, awkward=not args.no_awkward, progress=True)
    console.print(f"COCO-format: {paths.coco_train_annotations} + {paths.coco_train_images}")
    console.print(f"             {paths.coco_val_annotations} + {paths.coco_val_images}")
    console.print(f"Pet-format:  {paths.pets_root}")


# --- data pack ---------------------------------------------------------------------------------------

def cmd_pack(args: argparse.Namespace) -> None:
    from mixsweep.data.pack_build import build_pack

    if bool(args.mix) == bool(args.pets):
        raise MixsweepError("data pack: give exactly one of --mix (with --images) or --pets")
    if args.mix:
        from mixsweep.data.mixture import mixture_pack_items, read_mixture

        if not args.images:
            raise MixsweepError("data pack --mix: --images (the COCO image folder) is required")
        items = mixture_pack_items([read_mixture(p) for p in args.mix], args.images, args.val_images)
        packed = build_pack(items, args.cache, size=args.size, fit="crop", workers=args.workers, progress=True)
    else:
        from mixsweep.data.pets import PACK_FIT, pets_pack_items, read_manifest, trimap_to_labels

        items = pets_pack_items(read_manifest(args.pets), args.pets_root)
        packed = build_pack(items, args.cache, size=args.size, fit=PACK_FIT, mask_fn=trimap_to_labels,
                            workers=args.workers, progress=True)
    n_bad = len(packed) - len(packed.valid_indices)
    b = packed.built
    how = "found, nothing decoded" if b["reused"] else f"{b['decoded']} decoded, {b['copied']} copied from earlier packs"
    console.print(f"pack {packed.key}: {len(packed)} images ({n_bad} unreadable) at {packed.path} ({how})")


# --- train -----------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> None:
    from mixsweep.train.config import load_job

    job = load_job(args.config, kind=args.kind)
    if args.local:
        from mixsweep.train.launch import run_local

        out = run_local(job)
    else:
        from mixsweep.train.launch import run_with_ray

        out = run_with_ray(job, source=str(args.config), address=args.address)
    t = Table(title=f"{job.kind} {job.run.name}: last epoch")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in sorted(out.metrics.items()):
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)
    console.print(f"run folder: {out.run_dir}")


# --- sweeps ----------------------------------------------------------------------------------------

def cmd_plan(args: argparse.Namespace) -> None:
    import json

    from mixsweep import axes as recipe_axes
    from mixsweep.spec import load_spec
    from mixsweep.sweep.cost import estimate, fmt_bytes, fmt_seconds
    from mixsweep.sweep.plan import build_plan, plan_rows
    from mixsweep.sweep.store import Store

    spec = load_spec(args.spec)
    store = Store(spec.storage)
    plan = build_plan(spec, store)  # a dry run: writes nothing
    costs = estimate(plan, spec, store)
    rows = plan_rows(plan, costs)
    todo = costs.total(s.key for s in plan.stages if s.status != "done")
    every = costs.total(s.key for s in plan.stages)
    totals = {**plan.counts(), "stages": len(rows), "pack_images": plan.union_size,
              "mixture_rows": plan.mixture_rows, "gpu_hours_pending": todo.total_s / 3600,
              "gpu_hours_total": every.total_s / 3600, "checkpoint_bytes_pending": todo.checkpoint_bytes,
              "checkpoint_bytes_total": every.checkpoint_bytes, "cost_sources": costs.sources}
    if args.format == "json":
        print(json.dumps({"spec": spec.name, "axes": spec.grid.axes, "stages": rows, "totals": totals}, indent=1))
        return
    t = Table(title=f"{spec.name}: stage graph ({spec.storage})")
    right = ("F", "ft", "seed", "images", "steps", "fixed", "ckpt", "GPU-h")
    axes = spec.recipe_axes
    for col in ("kind", "method", "F", "ft", "seed") + (("axes",) if axes else ()) + ("key", "parent", "status") + right[3:]:
        t.add_column(col, justify="right" if col in right else "left")
    for r, s in zip(rows, plan.stages):
        fixed = r["startup_s"] + r["compile_s"] + r["eval_s"] + r["checkpoint_s"]
        t.add_row(r["job_type"], r["method"], "-" if r["animal_fraction"] is None else f"{r['animal_fraction']:g}",
                  "-" if r["finetune_fraction"] is None else f"{r['finetune_fraction']:g}", str(r["seed"]),
                  *((recipe_axes.describe(s.axes) or "-",) if axes else ()), r["key"],
                  r["parent_key"] or "-", r["status"], str(r["n_images"]), fmt_seconds(r["step_s"]),
                  fmt_seconds(fixed), fmt_bytes(r["checkpoint_bytes"]), f"{r['gpu_hours']:.3g}")
    console.print(t)
    for line in recipe_axes.multiplies(axes, plan.stages):
        console.print(f"axis {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{totals['stages']} stages: {totals['done']} done, {totals['pending']} pending, "
                  f"{totals['failed']} failed, {totals['diverged']} diverged; estimated "
                  f"{totals['gpu_hours_pending']:.3g} of {totals['gpu_hours_total']:.3g} GPU-hours still to run")
    console.print(f"still to run: steps {fmt_seconds(todo.step_s)} + start-up {fmt_seconds(todo.startup_s)} + compile "
                  f"{fmt_seconds(todo.compile_s)} + eval {fmt_seconds(todo.eval_s)} + checkpoints "
                  f"{fmt_seconds(todo.checkpoint_s)}, writing {fmt_bytes(todo.checkpoint_bytes)} of checkpoints "
                  f"({_checkpoint_rule(spec)})")
    for line in costs.sources:
        console.print(f"rates: {line}")
    if plan.union is not None:
        console.print(f"pre-training pack: the {plan.union_size} images of the grid's mixtures together, decoded "
                      f"once ({plan.mixture_rows} rows over the mixtures; `mixsweep run` lists them in "
                      f"{plan.union})")


def _checkpoint_rule(spec) -> str:
    every = (f"every {spec.checkpoint_every} epochs" if spec.checkpoint_every is not None
             else f"every {spec.checkpoint_minutes:g} min of training")
    return f"a resumable one {every}, a weights-only one at the end"


def cmd_run(args: argparse.Namespace) -> None:
    from mixsweep.spec import load_spec
    from mixsweep.sweep.run import run_sweep

    spec = load_spec(args.spec)
    run_sweep(spec, str(args.spec), address=args.address, retry_failed=args.retry_failed,
              cluster_config=args.cluster_config, wait=args.wait)


def cmd_report(args: argparse.Namespace) -> None:
    from mixsweep.spec import load_spec
    from mixsweep.sweep.results import make_report

    paths = make_report(load_spec(args.spec, check_paths=False), out=args.out)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def cmd_results(args: argparse.Namespace) -> None:
    from mixsweep.spec import load_spec
    from mixsweep.sweep.results import results_table

    frame, pending = results_table(load_spec(args.spec, check_paths=False))
    if args.out is not None:
        import pyarrow as pa

        from mixsweep.tables import write_table

        write_table(pa.Table.from_pandas(frame, preserve_index=False), args.out)
        console.print(f"wrote {args.out} ({len(frame)} rows)")
        return
    if args.format == "json":
        print(frame.to_json(orient="records", indent=1))
        return
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
        return
    axes = [c for c in frame.columns if "." in c]  # recipe axes: pretrain.epochs, ...
    cols = [c for c in ("kind", "method", "animal_fraction", "finetune_fraction", "seed", *axes, "status",
                        "val_loss", "test_iou_binary", "test_miou", "device", "key") if c in frame]
    t = Table(title=f"results ({len(frame)} stages, {pending} not finished)")
    for c in cols:
        t.add_column(c, justify="left" if c in ("kind", "method", "status", "device", "key") else "right")
    for row in frame[cols].itertuples(index=False):
        t.add_row(*("-" if v is None or v != v else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(t)


def cmd_sync(args: argparse.Namespace) -> int:
    from mixsweep.spec import load_spec
    from mixsweep.sweep.store import Store
    from mixsweep.sweep.sync import sync_store

    spec = load_spec(args.spec, check_paths=False)
    return sync_store(Store(spec.storage, spec.mirror), spec.wandb.model_dump(mode="json"),
                      timeout_s=args.timeout, dry_run=args.dry_run,
                      say=lambda line: console.print(line, markup=False, soft_wrap=True),
                      shout=lambda line: err_console.print(line, markup=False, soft_wrap=True))


def cmd_suggest(args: argparse.Namespace) -> None:
    from mixsweep.spec import load_spec
    from mixsweep.sweep.results import suggest_snippet

    console.print(suggest_snippet(load_spec(args.spec, check_paths=False), k=args.k), markup=False)


# --- demo --------------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> None:
    from mixsweep.demo import run_demo, run_sweep_demo

    if args.tour:
        run_demo(Path(args.out), scale=args.scale)
    else:
        run_sweep_demo(args.spec, world=args.world, world_seed=args.world_seed)
