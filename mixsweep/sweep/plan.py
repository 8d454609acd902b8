"""From a sweep spec to a stage graph with content keys, statuses and cost estimates.

- pre-training key = hash(exact image-id list of the mixture, preset, recipe, seed, pack size, code version)
- fine-tune key   = hash(parent key | "scratch" | "resnet50", the fine-tune subset and the val/test images,
                         recipe, head, preset, seed, code version)
The same key never runs twice, and extending a grid (another fraction, seed or fine-tune size) adds
exactly the new keys. Two sweeps over the same store share every stage whose key matches.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mixsweep.hashing import content_key
from mixsweep.errors import MixsweepError
from mixsweep.sweep.store import Store
from mixsweep.tables import write_table

# Bump when a change to the training code changes results: every key changes, everything reruns.
# 2: fine-tune recipe.schedule (fixed_steps by default), scratch baseline without layer decay, padded eval.
CODE_VERSION = "2"

# Seconds per image of one train step on one H200 at ViT-B/16 (FACTS.md: reference MAE bf16 eager 3,460 img/s;
# full-token ViT-B step 2,559 img/s; ResNet-50 4,646 img/s). Other presets scale by FLOPs per image.
SECONDS_PER_IMAGE = {"pretrain": 1 / 3460, "mae": 1 / 2559, "supervised_mae": 1 / 2559, "resnet50": 1 / 4646,
                     "resnet18": 1 / (4646 * 2.2)}  # ResNet-18: 1.8 vs 4.1 GFLOP forward at 224 px
PRESET_COST = {"base": 1.0, "small": 0.27, "tiny": 0.0011}  # FLOPs per image relative to base (benchmark)
BASELINE_METHODS = {"supervised_mae": "scratch", "resnet50": "resnet50", "resnet18": "resnet18"}


@dataclass
class Stage:
    key: str
    kind: str  # pretrain | finetune
    method: str  # mae | supervised_mae | resnet50 | resnet18
    seed: int
    animal_fraction: float | None
    finetune_fraction: float | None
    parent: str | None  # pre-training key of an MAE fine-tune
    job: dict  # the job config (PretrainJob / FinetuneJob data) without run settings
    n_images: int
    epochs: int
    status: str = "pending"  # done | failed | pending
    error: str = ""
    epoch_images: int | None = None  # images trained per epoch when not n_images (fixed_steps fine-tunes)

    @property
    def job_type(self) -> str:
        return "pretrain" if self.kind == "pretrain" else "finetune" if self.method == "mae" else "baseline"

    def gpu_hours(self, preset: str) -> float:
        per = SECONDS_PER_IMAGE["pretrain" if self.kind == "pretrain" else self.method]
        scale = 1.0 if self.method.startswith("resnet") else PRESET_COST.get(preset, 1.0)
        return (self.epoch_images or self.n_images) * self.epochs * per * scale / 3600

    def row(self) -> dict:
        """The grid values of this stage, as the result store and W&B config carry them."""
        nan = float("nan")
        return {"key": self.key, "kind": self.kind, "method": self.method, "parent_key": self.parent or "",
                "animal_fraction": nan if self.animal_fraction is None else self.animal_fraction,
                "finetune_fraction": nan if self.finetune_fraction is None else self.finetune_fraction,
                "seed": self.seed, "preset": self.job["preset"], "epochs": self.epochs,
                # What a fine-tune "epoch" meant (FinetuneRecipe.schedule); "" for a pre-training.
                "finetune_schedule": self.job["recipe"]["schedule"] if self.kind == "finetune" else ""}


@dataclass
class Plan:
    spec_name: str
    stages: list[Stage] = field(default_factory=list)
    union: Path | None = None  # the image list of every pre-training mixture together: one pack for the grid
    union_size: int = 0
    mixture_rows: int = 0  # what one pack per mixture would decode

    def by_key(self) -> dict[str, Stage]:
        return {s.key: s for s in self.stages}

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "failed": 0, "pending": 0}
        for s in self.stages:
            out[s.status] += 1
        return out


def _digest(values) -> str:
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()[:16]


def _data_paths(spec, store: Store) -> dict:
    """Resolve the spec's data roots: synthetic data is generated under the store once."""
    d = spec.data
    if d.synth is not None:
        from mixsweep.synth import write_synth

        s = d.synth
        paths = write_synth(store.root / "data" / f"synth-{s.world}-{s.scale}-{s.seed}", scale=s.scale, seed=s.seed,
                            world=s.world)
        return {"coco_annotations": paths.coco_train_annotations, "coco_images": paths.coco_train_images,
                "coco_val_annotations": paths.coco_val_annotations, "coco_val_images": paths.coco_val_images,
                "pets_root": paths.pets_root}
    return {"coco_annotations": d.coco_annotations, "coco_images": d.coco_images,
            "coco_val_annotations": d.coco_val_annotations, "coco_val_images": d.coco_val_images,
            "pets_root": d.pets_root}


def _synth_tag(synth) -> str:
    if synth is None:
        return ""
    from mixsweep.synth import GENERATOR_VERSION

    return f"|synth:{synth.world}:{synth.scale}:{synth.seed}:v{GENERATOR_VERSION}"


def _stat_key(*paths) -> str:
    parts = []
    for p in paths:
        if p is None:
            parts.append("-")
            continue
        st = Path(p).stat()
        parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return content_key(parts)


def _cached_index(store: Store, annotations, images, rule: str):
    from mixsweep.data.coco import build_coco_index, read_index

    path = store.root / "data" / f"coco-index-{_stat_key(annotations)}-{rule}.parquet"
    if not path.is_file():
        table, _ = build_coco_index(annotations, images, rule=rule)
        write_table(table, path)
    return read_index(path)


def _cached_manifest(store: Store, pets_root):
    from mixsweep.data.pets import build_pets_manifest, read_manifest, resolve_root

    root = resolve_root(pets_root)
    path = store.root / "data" / f"pets-{_stat_key(root / 'annotations' / 'list.txt', root / 'images')}.parquet"
    if not path.is_file():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = build_pets_manifest(root, seed=0)
        for w in caught[:5]:
            warnings.warn(str(w.message), stacklevel=2)
        write_table(table, path)
    return read_manifest(path), path


def build_plan(spec, store: Store, write_mixtures: bool = True) -> Plan:
    """Every stage of the spec with its key and status; writes each pre-training's mixture file."""
    from mixsweep.data.pets import finetune_subset

    paths = _data_paths(spec, store)
    index = _cached_index(store, paths["coco_annotations"], paths["coco_images"], spec.mixture.rule)
    val_index = (_cached_index(store, paths["coco_val_annotations"], paths["coco_val_images"], spec.mixture.rule)
                 if paths["coco_val_annotations"] else None)
    manifest, manifest_path = _cached_manifest(store, paths["pets_root"])
    eval_digest = _digest(manifest.filter(pc.is_in(manifest.column("split"), value_set=pa.array(["val", "test"])))
                          .select(["name", "split"]).to_pylist())

    # Synthetic worlds share image ids: their pixels differ, so their stages must not share keys.
    data_tag = _synth_tag(spec.data.synth)
    pre_recipe = spec.pretrain.model_dump(mode="json")
    ft_recipe = spec.finetune.model_dump(mode="json")
    plan = Plan(spec.name)
    train_sets: dict[float, list[frozenset]] = {}
    mixes: list[pa.Table] = []
    n_full = finetune_subset(manifest, 1.0).num_rows
    for seed in spec.grid.seeds:
        subsets = {s: finetune_subset(manifest, s, seed=seed).column("name").to_pylist()
                   for s in spec.grid.finetune_fractions}
        for fraction in spec.grid.animal_fractions:
            mix = grid_mixture(spec, index, val_index, fraction, seed)
            ids = list(zip(mix.column("split").to_pylist(), mix.column("image_id").to_pylist()))
            key = "pt-" + content_key({"kind": "pretrain", "images": _digest(ids), "data": data_tag,
                                       "preset": spec.preset,
                                       "recipe": pre_recipe, "seed": seed, "pack_size": spec.mixture.pack_size,
                                       "code": CODE_VERSION})
            if write_mixtures and not store.mixture_path(key).is_file():
                write_table(mix, store.mixture_path(key))
            mixes.append(mix)
            n_train = sum(1 for s, _ in ids if s == "train")
            train_sets.setdefault(fraction, []).append(frozenset(i for s, i in ids if s == "train"))
            job = {"kind": "pretrain", "preset": spec.preset, "seed": seed, "recipe": pre_recipe,
                   "data": {"mixture": str(store.mixture_path(key)), "images": str(paths["coco_images"]),
                            "val_images": str(paths["coco_val_images"] or paths["coco_images"]),
                            "cache": str(store.root / "cache"), "pack_size": spec.mixture.pack_size}}
            plan.stages.append(Stage(key, "pretrain", "mae", seed, fraction, None, None, job, n_train,
                                     spec.pretrain.epochs))
            for s, names in subsets.items():
                plan.stages.append(_finetune_stage(spec, store, "mae", key, seed, fraction, s, names,
                                                   eval_digest + data_tag, ft_recipe, manifest_path, paths,
                                                   n_full))
        for baseline in spec.baselines if spec.grid.baseline_seeds is None or seed in spec.grid.baseline_seeds else ():
            for s, names in subsets.items():
                plan.stages.append(_finetune_stage(spec, store, baseline, BASELINE_METHODS[baseline], seed, None, s,
                                                   names, eval_digest + data_tag, ft_recipe, manifest_path, paths,
                                                   n_full))
    _warn_unresampled(spec, train_sets)
    if mixes:
        _add_union(plan, store, mixes, write_mixtures)
    for stage in plan.stages:
        if store.is_done(stage.key):
            stage.status = "done"
        elif (failure := store.failure(stage.key)) is not None:
            stage.status, stage.error = "failed", failure.get("error", "")
    return plan


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


def _add_union(plan: Plan, store: Store, mixes: list[pa.Table], write: bool) -> None:
    """Every pre-training packs the whole grid's union: a fraction is then an index list into one pack, and
    a grid extended by a fraction inside the union decodes nothing. Its name follows its content, and it
    holds every stage, done or not, so a resumed sweep keeps one pack."""
    from mixsweep.data.mixture import union_of

    union = union_of(mixes)
    plan.mixture_rows = sum(m.num_rows for m in mixes)
    ids = list(zip(union.column("split").to_pylist(), union.column("image_id").to_pylist()))
    plan.union, plan.union_size = store.root / "data" / f"union-{_digest(ids)}.parquet", union.num_rows
    if write and not plan.union.is_file():
        write_table(union, plan.union)
    for stage in plan.stages:
        if stage.kind == "pretrain":
            stage.job["data"]["union"] = str(plan.union)


def build_grid_pack(plan: Plan, stages: list[Stage] | None = None, progress: bool = False):
    """The grid's pack, built (or found) on the driver before any trial starts: trials started together
    would each decode it. Each of `stages` (default: all) that pre-trains is pointed at it (data.pack).
    A mixture none of whose images is usable fails its own stage later, not the sweep. None when no
    stage pre-trains."""
    from mixsweep.train.config import PretrainData
    from mixsweep.train.pretrain import open_or_build_pack

    pre = [s for s in (plan.stages if stages is None else stages) if s.kind == "pretrain"]
    if not pre:
        return None
    pack = open_or_build_pack(PretrainData.model_validate(pre[0].job["data"]), progress=progress)
    for s in pre:  # one plan, one union: the same pack for all
        s.job["data"]["pack"] = str(pack.path)
    return pack


def _finetune_stage(spec, store, method, parent, seed, fraction, s, names, eval_digest, ft_recipe, manifest_path,
                    paths, n_full: int = 0) -> Stage:
    key = "ft-" + content_key({"kind": "finetune", "parent": parent, "subset": _digest(names), "eval": eval_digest,
                               "preset": spec.preset, "head": spec.head, "recipe": ft_recipe, "seed": seed,
                               "pack_size": spec.mixture.pack_size, "code": CODE_VERSION})
    model = "mae" if method == "mae" else BASELINE_METHODS[method]
    job = {"kind": "finetune", "model": model, "preset": spec.preset, "head": spec.head, "seed": seed,
           "recipe": ft_recipe,
           "data": {"manifest": str(manifest_path), "pets_root": str(paths["pets_root"]),
                    "cache": str(store.root / "cache"), "pack_size": spec.mixture.pack_size,
                    "finetune_fraction": s, "subset_seed": seed}}
    if method == "mae":
        job["init_checkpoint"] = str(store.checkpoint(parent))
    stage = Stage(key, "finetune", method, seed, fraction, s, parent if method == "mae" else None, job, len(names),
                  spec.finetune.epochs)
    if spec.finetune.schedule == "fixed_steps":  # every size trains one full-size epoch's steps per epoch
        batch = spec.finetune.batch_size
        stage.epoch_images = max(1, n_full // batch) * batch
    return stage


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


def plan_rows(plan: Plan) -> list[dict]:
    """The plan as data (for --format json and tables)."""
    preset = plan.stages[0].job["preset"] if plan.stages else ""
    out = []
    for s in plan.stages:
        out.append({**s.row(), "job_type": s.job_type, "status": s.status, "n_images": s.n_images,
                    "gpu_hours": s.gpu_hours(preset), "error": s.error})
    for r in out:
        for k in ("animal_fraction", "finetune_fraction"):
            if isinstance(r[k], float) and math.isnan(r[k]):
                r[k] = None
    return out
