"""From a sweep spec to a stage graph with content keys, typed jobs, statuses and cost estimates. A dry run:
`build_plan` reads the data and the store and writes nothing; `mixsweep run` writes the plan's inputs.

- pre-training key = hash(exact image-id list of the mixture, preset, recipe, seed, pack size, code version)
- fine-tune key   = hash(parent key | "scratch" | "resnet50", the fine-tune subset and the val/test images,
                         recipe, head, preset, seed, code version)
The same key never runs twice, and extending a grid (another fraction, seed or fine-tune size) adds
exactly the new keys. Two sweeps over the same store share every stage whose key matches.

`mixsweep run` also records the plan's stage list in the store (plans/<digest>.json), so `report` and
`results` find a spec's stages when the data roots are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from mixsweep import axes as recipe_axes
from mixsweep.errors import MixsweepError
from mixsweep.files import write_text_atomic
from mixsweep.hashing import content_key
from mixsweep.provenance import CODE_VERSION
from mixsweep.sweep.cost import CostModel
from mixsweep.methods import METHODS, PROBE_METHODS
from mixsweep.sweep.stages import Plan, Stage
from mixsweep.sweep.store import Store
from mixsweep.tables import write_table
from mixsweep.train.config import (FinetuneData, FinetuneJob, PretrainData, PretrainJob, RunSettings,
                                   TrackingSettings)


@dataclass(frozen=True)
class DataPaths:
    """The spec's data roots as this machine reads them."""

    coco_annotations: Path
    coco_images: Path
    coco_val_annotations: Path | None
    coco_val_images: Path | None
    pets_root: Path


def synth_root(spec, store: Store) -> Path:
    s = spec.data.synth
    return store.root / "data" / f"synth-{s.world}-{s.scale}-{s.seed}"


def _synth_paths(paths) -> DataPaths:
    return DataPaths(paths.coco_train_annotations, paths.coco_train_images, paths.coco_val_annotations,
                     paths.coco_val_images, paths.pets_root)


def write_spec_data(spec, store: Store) -> None:
    """`run` only: generate the spec's synthetic data under the store, once (copied from a plan's set when this
    process planned that world already)."""
    if spec.data.synth is not None:
        from mixsweep.synth import write_synth

        s = spec.data.synth
        write_synth(synth_root(spec, store), scale=s.scale, seed=s.seed, world=s.world,
                    copy_from=_held_synth(s.scale, s.seed, s.world))


@contextlib.contextmanager
def _readable_data(spec, store: Store) -> Iterator[tuple[DataPaths, DataPaths]]:
    """(the data roots to read now, the data roots jobs name). They differ only for synthetic data the store
    does not hold yet: it is generated in a temporary folder this process keeps until it exits, so a plan writes
    nothing under the store (its keys do not depend on where the data lie)."""
    d = spec.data
    if d.synth is None:
        paths = DataPaths(d.coco_annotations, d.coco_images, d.coco_val_annotations, d.coco_val_images, d.pets_root)
        yield paths, paths
        return
    from mixsweep.synth import SynthPaths, synth_is_written

    s, root = d.synth, synth_root(spec, store)
    final = _synth_paths(SynthPaths.under(root))
    if synth_is_written(root, scale=s.scale, seed=s.seed, world=s.world):
        yield final, final
        return
    yield _synth_paths(_plan_synth(s.scale, s.seed, s.world)), final


# Synthetic sets generated for plans, kept for this process's life: a notebook (or a test session) that plans
# the same world again reads them instead of rendering every image anew. Removed at exit.
_PLAN_SYNTH: dict[tuple, tempfile.TemporaryDirectory] = {}


def _held_synth(scale: str, seed: int, world: str) -> str | None:
    """The folder of a complete set this process rendered for a plan of this world, if it has one."""
    from mixsweep.synth import synth_is_written

    held = _PLAN_SYNTH.get((scale, int(seed), world))
    if held is not None and synth_is_written(held.name, scale=scale, seed=seed, world=world):
        return held.name
    return None


def _plan_synth(scale: str, seed: int, world: str):
    from mixsweep.synth import SynthPaths, write_synth

    held = _held_synth(scale, seed, world)
    if held is not None:
        return SynthPaths.under(Path(held))
    folder = tempfile.TemporaryDirectory(prefix="mixsweep-plan-", ignore_cleanup_errors=True)
    _PLAN_SYNTH[(scale, int(seed), world)] = folder
    return write_synth(folder.name, scale=scale, seed=seed, world=world)


def _digest(values) -> str:
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()[:16]


def _synth_tag(synth) -> str:
    if synth is None:
        return ""
    from mixsweep.synth import GENERATOR_VERSION

    return f"|synth:{synth.world}:{synth.scale}:{synth.seed}:v{GENERATOR_VERSION}"


def spec_digest(spec) -> str:
    """Everything in a spec that decides its stage keys (not its name, resources or W&B settings)."""
    fields = ("grid", "baselines", "data", "preset", "head", "mixture", "pretrain", "finetune", "probe")
    dumped = spec.model_dump(mode="json", include=set(fields))
    if not dumped["grid"]["axes"]:  # a spec without recipe axes keeps the digest it had before they existed
        del dumped["grid"]["axes"]
    return content_key({**dumped, "code": CODE_VERSION, "synth": _synth_tag(spec.data.synth)})


def _stat_key(*paths) -> str:
    parts = []
    for p in paths:
        if p is None:
            parts.append("-")
            continue
        st = Path(p).stat()
        parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return content_key(parts)


def _cached(path: Path, read) -> pa.Table | None:
    """A store file the plan can rebuild (an index, a manifest, a mixture, the union): its table, or None when
    it is absent or unreadable (a torn copy, a full disk), with a warning: `run` writes it again."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except MixsweepError as e:
        warnings.warn(f"{e}; `mixsweep run` writes it again", stacklevel=3)
        return None


def _coco_index(store: Store, inputs: dict, annotations, images, rule: str) -> pa.Table:
    """The COCO index: the store's cached copy, else built in memory (and written by `run`)."""
    from mixsweep.data.coco import build_coco_index, read_index

    path = store.root / "data" / f"coco-index-{_stat_key(annotations)}-{rule}.parquet"
    if (cached := _cached(path, read_index)) is not None:
        return cached
    table, _ = build_coco_index(annotations, images, rule=rule)
    inputs[path] = table
    return table


def _pets_manifest(store: Store, inputs: dict, pets_root, shown_root) -> tuple[pa.Table, Path]:
    """The Pet manifest: the store's cached copy, else built in memory (and written by `run`). Its warnings name
    `shown_root`, where the images will be, not a temporary copy."""
    from mixsweep.data.pets import build_pets_manifest, read_manifest, resolve_root

    root = resolve_root(pets_root)
    path = store.root / "data" / f"pets-{_stat_key(root / 'annotations' / 'list.txt', root / 'images')}.parquet"
    if (cached := _cached(path, read_manifest)) is not None:
        return cached, path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = build_pets_manifest(root, seed=0)
    for w in caught[:5]:
        warnings.warn(str(w.message).replace(str(pets_root), str(shown_root)), stacklevel=3)
    inputs[path] = table
    return table, path


@dataclass(frozen=True)
class _Grid:
    """What every stage of one plan shares: the spec, the store, the data roots and the digests of the data."""

    spec: object
    store: Store
    paths: DataPaths
    manifest_path: Path
    eval_digest: str  # the Pet val/test images, and the synthetic world if any
    data_tag: str
    n_full: int  # images in the full fine-tune split
    n_val: int  # Pet validation images: what a fine-tune evaluates each epoch

    def run_settings(self, key: str) -> RunSettings:
        spec, train = self.spec, self.store.train_dir()
        return RunSettings(name=key, storage=spec.train_storage or str(train), artifacts=str(train / key),
                           checkpoint_every=spec.checkpoint_every, checkpoint_minutes=spec.checkpoint_minutes,
                           pictures_every=spec.pictures_every, compile_cache=str(self.store.root / "compile-cache"),
                           max_failures=spec.max_failures, compile=spec.compile, compile_mode=spec.compile_mode,
                           attention=spec.attention, augment_ahead=spec.augment_ahead)

    def tracking(self, stage: Stage, job) -> TrackingSettings:
        """The stage's live W&B run: id = key, grouped by sweep, its config the grid values and the job."""
        from mixsweep import tracking

        config = {**stage.row(), "stage_key": stage.key, "job": job.model_dump(mode="json"),
                  **stage.wandb_inputs(self.store.mixture_path(stage.key))}
        return TrackingSettings(**self.spec.wandb.model_dump(mode="json", exclude_none=True),
                                root=str(self.store.root), run_id=tracking.run_id(stage.key), name=stage.run_name,
                                group=self.spec.name, job_type=stage.job_type, tags=stage.tags, config=config)

    def finish(self, stage: Stage, job_type, data, spec, **extra) -> Stage:
        """Give `stage` its job: data, recipe, resources, run settings and W&B run, once. `spec`: the spec at the
        stage's recipe axis values."""
        scaling = spec.resources.pretrain if stage.kind == "pretrain" else spec.resources.finetune
        recipe = spec.pretrain if stage.kind == "pretrain" else finetune_recipe(spec, stage.method)
        job = job_type(preset=spec.preset, seed=stage.seed, scaling=scaling, run=self.run_settings(stage.key),
                       data=data, recipe=recipe, **extra)
        stage.job = job.model_copy(update={"tracking": self.tracking(stage, job)})
        return stage


@dataclass(frozen=True)
class FinetunePoint:
    """One fine-tune of the grid: a method on a subset, from a parent pre-training (MAE) or from scratch."""

    method: str  # a name of mixsweep.methods.METHODS
    parent: str | None  # the pre-training key of an MAE fine-tune
    seed: int
    animal_fraction: float | None
    finetune_fraction: float
    names: tuple[str, ...]  # the subset's Pet images
    spec: object  # the spec at this point's recipe axis values
    axes: dict  # those values: the ones that shape this stage


def build_plan(spec, store: Store) -> Plan:
    """Every stage of the spec with its key, job and status. Reads the data and the store; writes nothing."""
    from mixsweep.data.pets import finetune_subset
    from mixsweep.data.mixture import read_mixture, union_of

    plan = Plan(spec.name, spec_digest(spec))
    with _readable_data(spec, store) as (paths, job_paths):
        plan.writable = paths == job_paths
        index = _coco_index(store, plan.inputs, paths.coco_annotations, paths.coco_images, spec.mixture.rule)
        val_index = (_coco_index(store, plan.inputs, paths.coco_val_annotations, paths.coco_val_images,
                                 spec.mixture.rule) if paths.coco_val_annotations else None)
        manifest, manifest_path = _pets_manifest(store, plan.inputs, paths.pets_root, job_paths.pets_root)
        mixes = {(seed, f): grid_mixture(spec, index, val_index, f, seed)
                 for seed in spec.grid.seeds for f in spec.grid.animal_fractions}
        subsets = {(seed, s): tuple(finetune_subset(manifest, s, seed=seed).column("name").to_pylist())
                   for seed in spec.grid.seeds for s in spec.grid.finetune_fractions}
        n_full = finetune_subset(manifest, 1.0).num_rows
    data_tag = _synth_tag(spec.data.synth)
    eval_rows = manifest.filter(pc.is_in(manifest.column("split"), value_set=pa.array(["val", "test"])))
    grid = _Grid(spec, store, job_paths, manifest_path, _digest(eval_rows.select(["name", "split"]).to_pylist()) + data_tag,
                 data_tag, n_full, sum(1 for s in eval_rows.column("split").to_pylist() if s == "val"))
    if mixes:
        union = union_of(list(mixes.values()))
        ids = list(zip(union.column("split").to_pylist(), union.column("image_id").to_pylist()))
        plan.union, plan.union_size = store.root / "data" / f"union-{_digest(ids)}.parquet", union.num_rows
        plan.mixture_rows = sum(m.num_rows for m in mixes.values())
        if _cached(plan.union, read_mixture) is None:
            plan.inputs[plan.union] = union
    train_sets: dict[float, list[frozenset]] = {}
    axes = spec.recipe_axes
    fraction_methods = ["mae"] + (["probe"] if spec.probe is not None else [])
    for seed in spec.grid.seeds:
        for fraction in spec.grid.animal_fractions:
            mix = mixes[(seed, fraction)]
            train_sets.setdefault(fraction, []).append(
                frozenset(i for s, i in zip(mix.column("split").to_pylist(), mix.column("image_id").to_pylist())
                          if s == "train"))
            for pre in recipe_axes.points(axes, "pretrain", "pretrain", "mae"):
                pre_spec = spec.at(pre)
                key = _pretrain_stage(grid, plan, mix, seed, fraction, pre_spec, pre)
                # Fine-tune axes multiply the fine-tunes of this one pre-training: it is trained once.
                for method in (m for m in fraction_methods if m != "mae" or spec.grid.finetuned(seed)):
                    for ft in recipe_axes.points(axes, "finetune", "finetune", method):
                        for s in spec.grid.finetune_fractions:
                            plan.stages.append(_finetune_stage(grid, FinetunePoint(
                                method, key, seed, fraction, s, subsets[(seed, s)], pre_spec.at(ft), {**pre, **ft})))
        if spec.grid.baseline_seeds is None or seed in spec.grid.baseline_seeds:
            for baseline in spec.baselines:
                for pre in recipe_axes.points(axes, "pretrain", "finetune", baseline):
                    for ft in recipe_axes.points(axes, "finetune", "finetune", baseline):
                        for s in spec.grid.finetune_fractions:
                            plan.stages.append(_finetune_stage(grid, FinetunePoint(
                                baseline, None, seed, None, s, subsets[(seed, s)], spec.at({**pre, **ft}),
                                {**pre, **ft})))
    _warn_unresampled(spec, train_sets)
    refresh_statuses(plan, store)
    return plan


def _pretrain_stage(grid: _Grid, plan: Plan, mix: pa.Table, seed: int, fraction: float, spec, axes: dict) -> str:
    """`spec`: the spec at this point's pre-training axis values (`axes`)."""
    store = grid.store
    ids = list(zip(mix.column("split").to_pylist(), mix.column("image_id").to_pylist()))
    key = "pt-" + content_key({"kind": "pretrain", "images": _digest(ids), "data": grid.data_tag,
                               "preset": spec.preset, "recipe": spec.pretrain.model_dump(mode="json"), "seed": seed,
                               "pack_size": spec.mixture.pack_size, "code": CODE_VERSION})
    from mixsweep.data.mixture import read_mixture

    if _cached(store.mixture_path(key), read_mixture) is None:
        plan.inputs[store.mixture_path(key)] = mix
    data = PretrainData(mixture=store.mixture_path(key), union=plan.union, images=grid.paths.coco_images,
                        val_images=grid.paths.coco_val_images or grid.paths.coco_images, cache=store.root / "cache",
                        pack_size=spec.mixture.pack_size)
    stage = Stage(key, "pretrain", "mae", seed, fraction, None, None, spec.preset, spec.pretrain.epochs,
                  n_images=sum(1 for s, _ in ids if s == "train"), eval_images=sum(1 for s, _ in ids if s == "val"),
                  axes=axes)
    plan.stages.append(grid.finish(stage, PretrainJob, data, spec))
    return key


def finetune_recipe(spec, method: str):
    """The recipe of a fine-tune stage: the spec's probe recipe for a probe, else its fine-tune recipe."""
    return spec.probe if method in PROBE_METHODS else spec.finetune


def _finetune_stage(grid: _Grid, point: FinetunePoint) -> Stage:
    spec, store = point.spec, grid.store
    recipe = finetune_recipe(spec, point.method)
    head = "probe" if point.method in PROBE_METHODS else spec.head
    key = "ft-" + content_key({"kind": "finetune", "parent": point.parent or METHODS[point.method].model,
                               "subset": _digest(point.names), "eval": grid.eval_digest, "preset": spec.preset,
                               "head": head, "recipe": recipe.model_dump(mode="json"),
                               "seed": point.seed, "pack_size": spec.mixture.pack_size, "code": CODE_VERSION})
    data = FinetuneData(manifest=grid.manifest_path, pets_root=grid.paths.pets_root, cache=store.root / "cache",
                        pack_size=spec.mixture.pack_size, finetune_fraction=point.finetune_fraction,
                        subset_seed=point.seed)
    pretrained = point.parent is not None
    stage = Stage(key, "finetune", point.method, point.seed, point.animal_fraction, point.finetune_fraction,
                  point.parent, spec.preset, recipe.epochs, n_images=len(point.names), schedule=recipe.schedule,
                  eval_images=grid.n_val, axes=point.axes)
    if recipe.schedule == "fixed_steps":  # every size trains one full-size epoch's steps per epoch
        stage.epoch_images = max(1, grid.n_full // recipe.batch_size) * recipe.batch_size
    extra = {"model": METHODS[point.method].model, "head": head}
    if pretrained:
        extra["init_checkpoint"] = store.checkpoint(point.parent)
    return grid.finish(stage, FinetuneJob, data, spec, **extra)


def refresh_statuses(plan: Plan, store: Store) -> Plan:
    """Each stage's status as the store has it now: done (result.json), failed or diverged (failed.json), or
    pending."""
    for stage in plan.stages:
        stage.status, stage.error = "pending", ""
        if store.is_done(stage.key):
            stage.status = "done"
        elif (failure := store.failure(stage.key)) is not None:
            stage.status = "diverged" if failure.get("status") == "diverged" else "failed"
            stage.error = failure.get("error", "")
    return plan


def write_plan_inputs(plan: Plan, store: Store) -> None:
    """`run` only: write the files the plan's jobs read (mixtures, the union, index caches) and its record."""
    if not plan.writable:
        raise MixsweepError(f"{plan.spec_name}: the plan was computed from a temporary copy of synthetic data; "
                            "write the data first (write_spec_data)")
    for path, table in plan.inputs.items():  # only files absent or unreadable when planned
        write_table(table, path)
    plan.inputs.clear()
    record = {"spec": plan.spec_name, "digest": plan.digest, "code_version": CODE_VERSION,
              "stages": [{**s.row(), "job_type": s.job_type} for s in plan.stages]}
    write_text_atomic(plan_record_path(store, plan.digest), json.dumps(record, indent=1, sort_keys=True) + "\n")


def plan_record_path(store: Store, digest: str) -> Path:
    return store.root / "plans" / f"{digest}.json"


def recorded_rows(spec, store: Store) -> list[dict] | None:
    """The stage rows (key, grid and recipe axis values) `mixsweep run` recorded for this spec (same grid, data
    roots, recipes, code version), or None if it never ran on this store."""
    path = plan_record_path(store, spec_digest(spec))
    if not path.is_file():
        return None
    return json.loads(path.read_text())["stages"]


def grid_mixture(spec, index: pa.Table, val_index: pa.Table | None, fraction: float, seed: int) -> pa.Table:
    """The mixture of one grid point, as the spec's mixture settings draw it."""
    from mixsweep.data.mixture import build_mixture

    try:
        return build_mixture(index, fraction, size=spec.mixture.size, seed=seed, val_index=val_index,
                             val_size=spec.mixture.val_size)
    except MixsweepError as e:  # name the spec's key, not the CLI flag
        msg = str(e).replace("--val-size", "mixture.val_size").replace("--size", "mixture.size")
        if msg.startswith("--"):
            msg = "mixture." + msg.removeprefix("--")
        raise MixsweepError(f"{spec.name}: {msg}") from None


def build_grid_pack(plan: Plan, stages: list[Stage] | None = None, progress: bool = False):
    """The grid's pack (every pre-training mixture together), built (or found) on the driver before any trial
    starts: trials started together would each decode it. A mixture none of whose images is usable fails its
    own stage later, not the sweep. None when no stage of `stages` (default: all) pre-trains. Needs the plan's
    inputs written (write_plan_inputs)."""
    from mixsweep.train.pretrain import open_or_build_pack

    pre = [s for s in (plan.stages if stages is None else stages) if s.kind == "pretrain"]
    if not pre:
        return None
    return open_or_build_pack(pre[0].job.data, progress=progress)


def _warn_unresampled(spec, train_sets: dict[float, list[frozenset]]) -> None:
    """Seeds are the replicates the report's intervals count on. If every seed pre-trains on the very same
    images at a fraction (the mixture takes the whole pool), those intervals leave out which images were
    drawn: two fixed image sets can differ for no reason the label gives, and the report would call that an
    effect. Say so before anything trains."""
    for fraction, sets in sorted(train_sets.items()):
        if len(sets) > 1 and all(x == sets[0] for x in sets[1:]):
            warnings.warn(f"{spec.name}: mixture: every seed pre-trains on the same {len(sets[0])} images at animal "
                          f"fraction {fraction:g}, so intervals over seeds leave out which images were drawn; set "
                          "mixture.size well below the smaller pool (plan shows the counts)", stacklevel=3)


def plan_rows(plan: Plan, costs: CostModel) -> list[dict]:
    """The plan as data (for --format json and tables), each stage with its estimated cost."""
    out = []
    for s in plan.stages:
        c = costs.costs[s.key]
        out.append({**s.row(), "job_type": s.job_type, "status": s.status, "n_images": s.n_images,
                    "step_s": c.step_s, "startup_s": c.startup_s, "compile_s": c.compile_s, "eval_s": c.eval_s,
                    "checkpoint_s": c.checkpoint_s, "gpu_hours": c.total_s / 3600,
                    "checkpoint_bytes": c.checkpoint_bytes, "error": s.error})
    for r in out:
        for k in ("animal_fraction", "finetune_fraction"):
            if isinstance(r[k], float) and math.isnan(r[k]):
                r[k] = None
    return out
