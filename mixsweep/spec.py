"""Sweep specs: one YAML file under `sweeps/` → a validated, frozen `SweepSpec`.

A spec names the grid (animal fraction × fine-tune fraction × seed, plus baselines), where the data lives,
and the model, recipes and resources every stage uses. Everything is checked before anything runs: a bad
spec is one line, `<file>: <key.path>: <problem>`, e.g. `paper.yaml: pretrain.epoch: unknown key`.

Paths under `data:` resolve against the spec file's folder. `storage` does not: like Ray's `storage_path`
it is a URI or a local path taken relative to the directory the command runs in, so `runs/store` is the
same store whichever spec names it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mixsweep.axes import MODEL_AXES, RECIPE_SECTIONS, Axis, is_axis_name
from mixsweep.errors import MixsweepError
from mixsweep.yamlio import read_yaml
from mixsweep.methods import BaselineName, FractionMethodName
from mixsweep.train.config import (AttentionBackend, CompileMode, FolderName, LocalPath, PathText, PresetName,
                                   ScalingSettings, Seed, StrictInt, WandbSettings, _Strict, check_seed,
                                   format_validation_error)
from mixsweep.train.recipes import FinetuneRecipe, PretrainRecipe

# Fractions are rounded so that ranges and hand-written lists give the same values (and content keys):
# 0.1 * 3 is 0.30000000000000004, which would otherwise be a different grid point from 0.3.
DECIMALS = 10
_EPS = 1e-9
_MAX_POINTS = 10_001  # a range that expands past this is a typo (step 1e-6), not a sweep


def _error(kind: str, message: str, where: str | None = None) -> PydanticCustomError:
    """A custom error keeps the message as written (a ValueError would gain a "Value error, " prefix). `where`:
    the key path to name when the check runs on the whole spec (format_validation_error reads it)."""
    return PydanticCustomError(kind, message, {"where": where} if where else None)


class FractionRange(_Strict):
    """`{start, stop, step}`: start, start + step, ... up to and including stop (within 1e-9)."""

    start: float
    stop: float
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FractionRange:
        if self.stop < self.start:
            raise _error("fraction_range", f"stop ({self.stop:g}) is below start ({self.start:g})")
        if (self.stop - self.start) / self.step + 1 > _MAX_POINTS:
            raise _error("fraction_range", f"step {self.step:g} gives more than {_MAX_POINTS} points")
        return self

    def values(self) -> list[float]:
        n = math.floor((self.stop - self.start) / self.step + _EPS) + 1
        return [round(self.start + i * self.step, DECIMALS) for i in range(n)]


def _expand(v: Any) -> Any:
    """A range mapping → its list of values; anything else is left for the list[float] check."""
    if isinstance(v, FractionRange):
        return v.values()
    if not isinstance(v, dict):
        return v
    try:
        return FractionRange.model_validate(v).values()
    except ValidationError as e:
        # A misspelt key also makes its real key "missing"; the misspelling is the useful report.
        errors = e.errors()
        first = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        where = f"range key {key}" if key else "range"
        raise _error("fraction_range", f"{where}: {msg} (a range is {{start, stop, step}})") from None


def _msg(error: dict) -> str:
    return error["msg"].removeprefix("Value error, ")


def _normalise_fractions(values: list[float], low_open: bool) -> list[float]:
    if not values:
        raise _error("empty_grid", "empty grid: give at least one fraction")
    out = set()
    for f in values:
        ok = (0 < f <= 1) if low_open else (0 <= f <= 1)  # NaN fails both
        if not ok:
            raise _error("fraction_range", f"fraction {f:g} is outside {'(0, 1]' if low_open else '[0, 1]'}")
        out.add(round(f, DECIMALS) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return sorted(out)


class Grid(_Strict):
    """The sweep's axes. Each fraction axis is a list or a `{start, stop, step}` range; after validation
    both are sorted, de-duplicated lists of floats rounded to 10 decimals.

    Any other key naming a recipe or model field is a recipe axis (mixsweep.axes): `pretrain.epochs: [75, 150]`,
    `finetune.blr: [5.0e-4, 1.0e-3]`, `preset: [tiny, small]`. They are gathered under `axes` and checked
    against the recipe's own schema by the spec."""

    animal_fractions: list[float]
    finetune_fractions: list[float] = [1.0]
    # Each seed's range is checked on the whole list (check_seed), so the error names the axis.
    seeds: list[StrictInt]
    # The baselines' seeds, a subset of `seeds` (None: all of them). A baseline has no animal-fraction axis and
    # enters only the transfer interval, so a CPU study can afford fewer of its costly runs.
    baseline_seeds: Optional[list[StrictInt]] = None
    # The seeds whose pre-trainings are also fine-tuned end to end (None: all of them). With a probe: section
    # every pre-training is probed, and a study whose verdict is the probe can thin the costly fine-tunes.
    finetune_seeds: Optional[list[StrictInt]] = None
    axes: dict[str, Any] = {}  # name -> list of values, checked by the spec (SweepSpec._axes_fit_their_fields)

    @model_validator(mode="before")
    @classmethod
    def _gather_axes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        named = {k: v for k, v in data.items() if isinstance(k, str) and is_axis_name(k)}
        if not named:
            return data
        axes = dict(data.get("axes") or {})
        for k, v in named.items():
            if k in axes:
                raise _error("recipe_axis", f"grid.{k}: given twice (as grid.{k} and under grid.axes)")
            axes[k] = v
        return {**{k: v for k, v in data.items() if k not in named}, "axes": axes}

    @field_validator("animal_fractions", "finetune_fractions", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> Any:
        return _expand(v)

    @field_validator("animal_fractions")
    @classmethod
    def _animal(cls, v: list[float]) -> list[float]:
        return _normalise_fractions(v, low_open=False)

    @field_validator("finetune_fractions")
    @classmethod
    def _finetune(cls, v: list[float]) -> list[float]:
        # A fine-tune on 0 % of the data is not a run.
        return _normalise_fractions(v, low_open=True)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise _error("empty_grid", "empty grid: give at least one seed")
        v = sorted(set(v))
        for seed in v:
            check_seed(seed)
        return v

    @model_validator(mode="after")
    def _seed_subsets(self):
        for name in ("baseline_seeds", "finetune_seeds"):
            subset = getattr(self, name)
            if subset is None:
                continue
            extra = sorted(set(subset) - set(self.seeds))
            if not subset or extra:
                raise ValueError(f"{name} must be a non-empty subset of seeds {self.seeds}"
                                 + (f"; {extra} is not in it" if extra else ""))
            object.__setattr__(self, name, sorted(set(subset)))
        return self

    def finetuned(self, seed: int) -> bool:
        """Whether this seed's pre-trainings get the end-to-end fine-tune."""
        return self.finetune_seeds is None or seed in self.finetune_seeds


class SynthData(_Strict):
    """Synthetic look-alike data, written by `mixsweep.synth.write_synth` under
    `<storage>/data/synth-<world>-<scale>-<seed>` on first use."""

    scale: Literal["small", "demo", "medium"] = "small"
    seed: Seed = 0
    world: Literal["planted", "null"] = "planted"  # README, "Two worlds with a known answer"


_REAL_REQUIRED = ("coco_annotations", "coco_images", "pets_root")
_REAL_KEYS = _REAL_REQUIRED + ("coco_val_annotations", "coco_val_images")


class DataRoots(_Strict):
    """Either `synth`, or the real datasets' roots. Relative paths resolve against the spec's folder; with
    `check_paths` (the default) every given root must exist when the spec is loaded."""

    synth: Optional[SynthData] = None
    coco_annotations: Optional[LocalPath] = None  # instances_train2017.json
    coco_images: Optional[LocalPath] = None  # train2017/
    coco_val_annotations: Optional[LocalPath] = None  # instances_val2017.json; without it, val is held out of train
    coco_val_images: Optional[LocalPath] = None
    pets_root: Optional[LocalPath] = None  # official or torchvision layout

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic reports the type
        real = [k for k in _REAL_KEYS if data.get(k) is not None]
        if data.get("synth") is not None and real:
            raise _error("data_source", f"give either synth or the real data roots, not both (got synth and "
                                        f"{', '.join(real)})")
        if data.get("synth") is None:
            missing = [k for k in _REAL_REQUIRED if data.get(k) is None]
            if missing:
                raise _error("data_root", f"missing data root: {', '.join(missing)} (or use synth: {{}})")
            val = [data.get("coco_val_annotations") is None, data.get("coco_val_images") is None]
            if val[0] != val[1]:
                raise _error("data_root", "coco_val_annotations and coco_val_images go together")
        return data

    @field_validator(*_REAL_KEYS)
    @classmethod
    def _resolve(cls, v: Optional[Path], info: ValidationInfo) -> Optional[Path]:
        if v is None:
            return None
        ctx = info.context or {}
        v = v.expanduser()
        if not v.is_absolute():
            v = Path(ctx.get("base_dir", Path.cwd())) / v
        if ctx.get("check_paths", True) and not v.exists():
            raise _error("data_root", f"missing data root: {v} does not exist")
        return v


class MixtureSettings(_Strict):
    """How each pre-training mixture is drawn (`mixsweep.data.mixture.build_mixture`) and packed."""

    size: Optional[int] = Field(None, gt=0)  # None: the largest size valid at every fraction
    rule: Literal["any", "paper"] = "any"  # which COCO images count as animal (README, "COCO index")
    val_size: Optional[int] = Field(None, gt=0)  # held-out validation size when there is no val index
    pack_size: int = Field(256, ge=16)  # side of the pre-resized uint8 pack


class Resources(_Strict):
    """Per stage kind, Ray Train's workers and what each gets; plus the Tune trial's own driver CPU."""

    pretrain: ScalingSettings = ScalingSettings()
    finetune: ScalingSettings = ScalingSettings()
    # The trial process only waits on its TorchTrainer; reserving a CPU for it would idle one per stage.
    trial_cpus: float = Field(0.0, ge=0)
    # Custom resources a trial asks for: {"mixsweep_head": 1} keeps the drivers on a cluster's head node.
    trial_resources: dict[str, float] = {}

    @field_validator("trial_resources")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if x <= 0 or k in ("CPU", "GPU")]
        if bad:
            raise _error("resources", f"{bad[0]!r}: list custom resources with amounts > 0 (CPU is trial_cpus)")
        return v


class EffectSettings(_Strict):
    """The effect test, declared before the results are looked at: the primary endpoint (`metric` of the MAE
    fine-tunes at fine-tune size `finetune_fraction`), the `direction` expected as the animal fraction goes
    from `fractions[0]` to `fractions[1]` (`increase`, `decrease` or `two-sided`), and `alpha`. Only this test
    gives the verdict; every other metric and fine-tune size is reported as secondary (two-sided,
    Holm-adjusted). `scratch`: the baseline the pre-trained model is compared with (transfer)."""

    metric: Literal["test_iou_binary", "test_miou", "test_accuracy", "test_loss"] = "test_iou_binary"
    method: FractionMethodName = "mae"  # the end-to-end fine-tunes, or the frozen-encoder probes
    finetune_fraction: Optional[float] = None  # None: the largest of the grid
    direction: Literal["increase", "decrease", "two-sided"] = "two-sided"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    fractions: Optional[tuple[float, float]] = None  # None: the lowest and the highest animal fraction
    scratch: Optional[BaselineName] = None  # None: the
    # same model from random weights (supervised_mae for the fine-tunes, random_probe for the probes)

    def design(self):
        from mixsweep.report.effect import EffectDesign

        values = self.model_dump()
        values["scratch"] = self.scratch or ("random_probe" if self.method == "probe" else "supervised_mae")
        return EffectDesign(**values)


class SweepSpec(_Strict):
    """One sweep: grid × data × model × recipes × resources. Recipe sections override the recipe defaults
    field by field (`pretrain: {epochs: 3}` keeps every other default)."""

    name: FolderName = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    grid: Grid
    baselines: list[BaselineName] = []
    data: DataRoots
    preset: PresetName = "base"
    head: Literal["decoder", "linear"] = "decoder"
    mixture: MixtureSettings = MixtureSettings()
    pretrain: PretrainRecipe = PretrainRecipe()
    finetune: FinetuneRecipe = FinetuneRecipe()
    # The frozen-encoder probe's recipe: when set, every pre-training also gets a probe per fine-tune size (its
    # encoder frozen, a per-patch linear head trained), and the baseline random_probe probes random weights.
    probe: Optional[FinetuneRecipe] = None
    resources: Resources = Resources()
    # The store: results, mixtures, W&B offline runs, finished checkpoints. A local path (relative to the
    # current directory); on a cluster, a shared mount every node sees (e.g. EFS at /mnt/mixsweep).
    storage: PathText = "runs/store"
    # Ray Train's storage_path for in-flight stage checkpoints: a URI (s3://bucket/prefix, gs://...) or a
    # path. None: <storage>/train.
    train_storage: Optional[PathText] = None
    # A copy of every finished stage, W&B offline run and results.parquet, pushed as stages finish; a store
    # that lost its disk pulls finished stages back from it. A URI (s3://bucket/prefix, gs://...) or a path.
    mirror: Optional[PathText] = None
    wandb: WandbSettings = WandbSettings()
    effect: EffectSettings = EffectSettings()  # read by the report only: not part of any stage key
    # How often a stage saves a resumable checkpoint: every `checkpoint_every` epochs, or (None) every
    # `checkpoint_minutes` of training (a lost node costs at most that much of one stage); a finished stage
    # keeps its weights only.
    checkpoint_every: Optional[int] = Field(None, ge=1)
    checkpoint_minutes: float = Field(15.0, gt=0)
    pictures_every: int = Field(0, ge=0)  # 0: pictures only at the end
    max_failures: int = Field(1, ge=0)
    # How a stage's step runs (RunSettings: compile, compile_mode, attention); none enters a stage key.
    compile: Optional[bool] = None
    compile_mode: CompileMode = "default"
    attention: AttentionBackend = "auto"
    augment_ahead: bool = False

    @field_validator("storage")
    @classmethod
    def _local_store(cls, v: str) -> str:
        if "://" in v:
            raise _error("storage", f"{v!r} is a URI; the store must be a path every node sees (a shared mount). "
                         "Put Ray Train checkpoints on object storage with train_storage")
        return v

    @field_validator("train_storage", "mirror")
    @classmethod
    def _known_scheme(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is not None and "://" in v and v.split("://")[0] not in ("s3", "gs", "gcs", "file", "abfs", "hdfs"):
            raise _error(info.field_name, f"{v!r}: unsupported scheme (use s3://, gs://, file:// or a path)")
        return v

    @field_validator("baselines")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _effect_on_the_grid(self):
        e, grid = self.effect, self.grid
        if self.probe is None and ("random_probe" in self.baselines or e.method == "probe"):
            what = "baselines: random_probe" if "random_probe" in self.baselines else "effect.method: probe"
            where, value = what.split(": ")
            raise _error("probe", f"{value} needs a probe: section (the probe's recipe)", where=where)
        if self.probe is None and grid.finetune_seeds is not None and grid.finetune_seeds != grid.seeds:
            raise _error("probe", "without a probe: section the pre-trainings of seeds "
                         f"{sorted(set(grid.seeds) - set(grid.finetune_seeds))} would feed nothing",
                         where="grid.finetune_seeds")
        if e.finetune_fraction is not None and not any(abs(e.finetune_fraction - f) < _EPS
                                                       for f in grid.finetune_fractions):
            raise _error("effect", f"{e.finetune_fraction:g} is not in "
                         f"grid.finetune_fractions {grid.finetune_fractions}", where="effect.finetune_fraction")
        for f in e.fractions or ():
            if not any(abs(f - a) < _EPS for a in grid.animal_fractions):
                raise _error("effect", f"{f:g} is not in grid.animal_fractions {grid.animal_fractions}",
                             where="effect.fractions")
        if e.fractions is not None and e.fractions[0] >= e.fractions[1]:
            raise _error("effect", f"{list(e.fractions)}: the low fraction comes first", where="effect.fractions")
        return self

    @model_validator(mode="after")
    def _axes_fit_their_fields(self):
        """Each recipe axis checked against its field's schema, value by value and (within one recipe) every
        combination; the values are stored as that schema reads them."""
        checked: dict[str, list] = {}
        for name, values in self.grid.axes.items():
            where = f"grid.{name}"
            if not isinstance(values, list) or not values:
                raise _error("recipe_axis", f"an axis is a non-empty list of values, got {values!r}", where=where)
            section, _, field = name.partition(".") if "." in name else (None, "", name)
            if section is None:
                if name not in MODEL_AXES:
                    raise _error("recipe_axis", f"unknown field; an axis is a recipe field (pretrain.*, finetune.*, "
                                 f"probe.*) or one of {', '.join(MODEL_AXES)}", where=where)
                info = type(self).model_fields[name]
                adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
                read = lambda v, adapter=adapter: adapter.validate_python(v)  # noqa: E731
            else:
                if section not in RECIPE_SECTIONS:
                    raise _error("recipe_axis", f"unknown section {section!r}; axes name a field of "
                                 f"{', '.join(RECIPE_SECTIONS)} (pretrain.epochs) or {', '.join(MODEL_AXES)}",
                                 where=where)
                base = getattr(self, section)
                if base is None:
                    raise _error("recipe_axis", f"the spec has no {section}: section to vary", where=where)
                if field not in type(base).model_fields:
                    raise _error("recipe_axis", f"unknown field of the {section} recipe (its fields: "
                                 f"{', '.join(type(base).model_fields)})", where=where)
                read = lambda v, base=base, field=field: getattr(  # noqa: E731
                    type(base).model_validate({**base.model_dump(), field: v}), field)
            out = []
            for v in values:
                try:
                    v = read(v)
                except ValidationError as err:
                    first = err.errors()[0]
                    raise _error("recipe_axis", f"value {v!r}: {_msg(first)}", where=where) from None
                if v not in out:
                    out.append(v)
            checked[name] = out
        object.__setattr__(self.grid, "axes", checked)
        for section in RECIPE_SECTIONS:  # values that are fine alone may clash together (warm-up past epochs)
            mine = [a for a in self.recipe_axes if a.section == section]
            if len(mine) < 2:
                continue
            for combo in itertools.product(*(a.values for a in mine)):
                values = {a.field: v for a, v in zip(mine, combo)}
                try:
                    type(getattr(self, section)).model_validate({**getattr(self, section).model_dump(), **values})
                except ValidationError as err:
                    shown = " with ".join(f"{section}.{k}={v!r}" for k, v in values.items())
                    raise _error("recipe_axis", f"{shown}: {_msg(err.errors()[0])}", where="grid") from None
        return self

    @property
    def recipe_axes(self) -> tuple[Axis, ...]:
        return tuple(Axis(name, tuple(values)) for name, values in self.grid.axes.items())

    def at(self, values: dict[str, Any]) -> SweepSpec:
        """This spec with some axes fixed at a value each (`{"pretrain.epochs": 75}`): the spec one grid point
        trains. Values come from `recipe_axes`, which were checked at load time."""
        update: dict[str, Any] = {}
        for name, v in values.items():
            if "." not in name:
                update[name] = v
                continue
            section, field = name.split(".", 1)
            current = update.get(section, getattr(self, section))
            update[section] = current.model_copy(update={field: v})
        return self.model_copy(update=update)


def parse_spec(data: Any, source: str = "<spec>", base_dir: Path | str | None = None,
               check_paths: bool = True) -> SweepSpec:
    """Validate a spec mapping; relative data paths resolve against `base_dir` (default: the current dir)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise MixsweepError(f"{source}: (top level): expected a mapping of keys, got {got}")
    ctx = {"base_dir": Path(base_dir) if base_dir is not None else Path.cwd(), "check_paths": check_paths}
    try:
        return SweepSpec.model_validate(data, context=ctx)
    except ValidationError as e:
        raise MixsweepError(format_validation_error(source, e)) from None


def load_spec(path: Path | str, check_paths: bool = True) -> SweepSpec:
    """Read and validate a sweep spec YAML file. `check_paths=False` skips the data roots' existence check
    (to inspect a spec written for another machine)."""
    path = Path(path)
    data = read_yaml(path, "spec file")
    return parse_spec(data, str(path), base_dir=path.resolve().parent, check_paths=check_paths)


def spec_to_yaml_snippet(animal_fractions: list[float]) -> str:
    """A `grid:` snippet with these animal fractions (sorted, de-duplicated), to paste over a spec's own."""
    try:
        values = _normalise_fractions([float(f) for f in animal_fractions], low_open=False)
    except PydanticCustomError as e:
        raise MixsweepError(f"animal_fractions: {e.message()}") from None
    return ("grid:\n"
            "  # finetune_fractions and seeds: keep the spec's own\n"
            f"  animal_fractions: [{', '.join(repr(f) for f in values)}]\n")
