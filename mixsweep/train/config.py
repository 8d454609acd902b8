"""Job configs: one YAML file per training job, validated completely before any worker starts.

A bad config is one line naming the file, the key and the problem, e.g.
`pretrain.yaml: recipe.epochs: Input should be greater than 0`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Optional

from pydantic_core import PydanticCustomError
from pydantic import (AfterValidator, BeforeValidator, Field, Strict, ValidationError, field_validator,
                      model_validator)

from mixsweep.errors import MixsweepError
from mixsweep.yamlio import read_yaml
from mixsweep.train.recipes import FinetuneRecipe, PretrainRecipe, _Strict

# ---------------------------------------------------------------------------------------------------------
# Rules shared by the job configs and the sweep specs

# A seed reaches torch.manual_seed (at most 2**64 - 1), numpy's SeedSequence (no negatives) and the results
# tables (int64 columns): the range all three take.
SEED_MAX = 2**63 - 1

# Strict: YAML `true` is a bool, not seed 1 (lax mode would take it, and the string "1" too).
StrictInt = Annotated[int, Strict()]


def check_seed(seed: int) -> int:
    """The seed, or a custom error naming it when it is out of range."""
    if seed < 0:
        raise PydanticCustomError("seed", f"seed {seed} is negative")
    if seed > SEED_MAX:
        raise PydanticCustomError("seed", f"seed {seed} is too large (at most 2**63 - 1)")
    return seed


Seed = Annotated[StrictInt, AfterValidator(check_seed)]


def _folder_name(name: str) -> str:
    # A name becomes a folder (<storage>/<run name>, <storage>/reports/<spec name>): "." or ".." would be the
    # folder itself or its parent; past 128 characters W&B refuses the group and file systems the name.
    if name in (".", ".."):
        raise PydanticCustomError("name", f"{name!r} is not a name: as a folder it is the folder itself or its "
                                  "parent")
    if len(name) > 128:
        raise PydanticCustomError("name", f"name of {len(name)} characters: at most 128")
    return name


FolderName = Annotated[str, AfterValidator(_folder_name)]


def _usable_path(value: Any) -> Any:
    # Path("") is the current folder, silently; and a path starting with ~user, for a user this machine does
    # not know, stays unexpanded (os.path) or fails mid-run (pathlib's expanduser raises).
    if not isinstance(value, (str, PurePath)):
        return value  # pydantic reports the type
    text = str(value)
    if not text.strip():
        raise PydanticCustomError("path", "empty path")
    if text.startswith("~") and os.path.expanduser(text) == text:
        user = text[1:].split("/", 1)[0]
        raise PydanticCustomError("path", f"{text!r}: no home folder for ~{user} (no such user here)")
    return value


# A local path; and a local path or a URI, kept as text (Ray's storage_path, a mirror).
LocalPath = Annotated[Path, BeforeValidator(_usable_path)]
PathText = Annotated[str, BeforeValidator(_usable_path)]

# ---------------------------------------------------------------------------------------------------------
# Job configs


class ScalingSettings(_Strict):
    """Ray Train's ScalingConfig, as data: workers and what each one gets."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    # Extra custom resources per worker, e.g. {"accelerator_type:A100": 0.001} to pin a GPU type.
    resources: dict[str, float] = {}
    # PACK keeps a run's workers on few nodes (fast all-reduce); SPREAD puts them on different nodes.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory"):
                raise PydanticCustomError("resources", f"{name!r} has its own key (cpus_per_worker, "
                                          "gpus_per_worker); list only custom resources")
            if amount <= 0:
                raise PydanticCustomError("resources", f"{name!r}: amount must be > 0, got {amount}")
        return v

    @model_validator(mode="after")
    def _gpu_consistent(self):
        if self.use_gpu and self.gpus_per_worker == 0:
            object.__setattr__(self, "gpus_per_worker", 1.0)
        if not self.use_gpu and self.gpus_per_worker > 0:
            raise ValueError("gpus_per_worker > 0 needs use_gpu: true")
        return self

    def resources_per_worker(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return {**res, **self.resources}


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
AttentionBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]


class RunSettings(_Strict):
    """Where a job writes, how often it checkpoints, how it survives failures."""

    name: FolderName = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._=-]+$")
    storage: PathText = "runs"  # Ray's storage_path: a local path or a URI (s3://bucket/prefix)
    # Metrics log, pictures and worker placement; a folder every node sees. Default: storage/name when
    # storage is local, else ./runs/name.
    artifacts: Optional[PathText] = None
    # A resumable checkpoint every `checkpoint_every` epochs, or (None) at the first epoch end
    # `checkpoint_minutes` after the last one; the last epoch's holds the weights only. Keep the newest few.
    checkpoint_every: Optional[int] = Field(None, ge=1)
    checkpoint_minutes: float = Field(15.0, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    pictures_every: int = Field(0, ge=0)  # 0: pictures only at the end
    max_failures: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Optional[bool] = None  # torch.compile the model; None: on CUDA (the fast path), not on CPU
    # torch.compile's mode: reduce-overhead adds CUDA graphs (every shape of a stage is static), max-autotune
    # searches kernels (its results land in the compile cache below).
    compile_mode: CompileMode = "default"
    # The attention kernel: auto lets torch choose; flash, efficient, cudnn or math pins one (refused at the
    # start when the device has no such kernel).
    attention: AttentionBackend = "auto"
    # Make each training batch (its augmentation) one step early, on a side CUDA stream: off the training stream.
    augment_ahead: bool = False
    # A folder every node sees where stages share their compiled graphs (mixsweep.train.compile_cache); a sweep
    # sets it to <store>/compile-cache. None: each stage compiles on its own.
    compile_cache: Optional[PathText] = None


class WandbSettings(_Strict):
    """How to reach W&B: the one settings model (a spec's `wandb:`, a stage's run, mixsweep.tracking's Tracker)."""

    project: str = Field("mixsweep", min_length=1)
    entity: Optional[str] = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online if logged in, else offline
    timeout_s: float = Field(30.0, gt=0)  # wandb.init and the server check; finish gets 10x
    flush_s: Optional[float] = Field(None, ge=0)  # offline run file flush interval (None: wandb's, 15 s)


class TrackingSettings(WandbSettings):
    """The stage's W&B run, logged live by rank 0 (mixsweep.train.live): which run, and how to reach W&B."""

    root: PathText  # offline runs land in root/wandb; a folder every node sees
    run_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")  # one id per stage key: a restart resumes it
    name: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: list[str] = []
    config: dict = {}
    flush_s: Optional[float] = Field(2.0, ge=0)  # live runs flush often: readers see progress


class PretrainData(_Strict):
    mixture: LocalPath
    # The image list to pack (a sweep's union of its grid's mixtures, `mixsweep data union`): one pack
    # serves every pre-training of the grid. Default: pack this mixture alone.
    union: Optional[LocalPath] = None
    pack: Optional[LocalPath] = None  # that pack's folder, set by the sweep's driver once it has built it
    images: LocalPath
    val_images: Optional[LocalPath] = None
    cache: LocalPath = Path("cache")
    pack_size: int = Field(256, ge=16)


class FinetuneData(_Strict):
    manifest: LocalPath
    pets_root: Optional[LocalPath] = None
    cache: LocalPath = Path("cache")
    pack_size: int = Field(256, ge=16)
    finetune_fraction: float = Field(1.0, gt=0, le=1)
    subset_seed: Optional[Seed] = None  # default: the job's seed


def _known_preset(v: str) -> str:
    from mixsweep.models.mae import PRESETS

    if v not in PRESETS:  # a custom error: the message as written, no "Value error, " prefix
        raise PydanticCustomError("preset", f"unknown preset {v!r} (choose from {', '.join(PRESETS)})")
    return v


PresetName = Annotated[str, AfterValidator(_known_preset)]  # a model preset of mixsweep.models.mae.PRESETS


class _Job(_Strict):
    """What every job has: a model preset, a seed, resources and run settings."""

    preset: PresetName = "base"
    seed: Seed = 0
    scaling: ScalingSettings = ScalingSettings()
    run: RunSettings
    tracking: Optional[TrackingSettings] = None  # None: no live W&B run


class PretrainJob(_Job):
    kind: Literal["pretrain"] = "pretrain"
    data: PretrainData
    recipe: PretrainRecipe = PretrainRecipe()
    # Continue from an official MAE file: mae_visualize_vit_base.pth (full) or mae_pretrain_vit_base.pth
    # (encoder; the decoder starts fresh). None: random init.
    init_checkpoint: Optional[LocalPath] = None
    mae_init: Literal["full", "encoder"] = "full"


class FinetuneJob(_Job):
    kind: Literal["finetune"] = "finetune"
    model: Literal["mae", "scratch", "resnet50", "resnet18"] = "mae"
    # "probe": the encoder frozen, only a per-patch linear head trained (mixsweep.models.segment.MAESegmenter);
    # with model "scratch" it probes random features (the control). MAE kinds only.
    head: Literal["decoder", "linear", "probe"] = "decoder"
    init_checkpoint: Optional[LocalPath] = None  # a pre-training checkpoint (state.pt) or an official MAE .pth
    mae_init: Literal["full", "encoder"] = "full"
    resnet_weights: Optional[LocalPath] = None
    data: FinetuneData
    recipe: FinetuneRecipe = FinetuneRecipe()

    @model_validator(mode="after")
    def _init_matches_model(self):
        if self.model == "mae" and self.init_checkpoint is None:
            raise ValueError("model 'mae' needs init_checkpoint (use model 'scratch' for random init)")
        if self.model != "mae" and self.init_checkpoint is not None:
            raise ValueError(f"init_checkpoint is only for model 'mae', not {self.model!r}")
        if self.head == "probe" and self.model not in ("mae", "scratch"):
            raise ValueError(f"head 'probe' freezes an MAE encoder: model must be 'mae' or 'scratch', not "
                             f"{self.model!r}")
        return self


JOB_TYPES = {"pretrain": PretrainJob, "finetune": FinetuneJob}


def format_validation_error(source: str, err: ValidationError) -> str:
    """First problem of a pydantic error as one line: `source: key.path: message`."""
    first = err.errors()[0]
    # A check on the whole spec names its own key path (spec._error's `where`).
    loc = ".".join(str(p) for p in first["loc"]) or (first.get("ctx") or {}).get("where") or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def parse_job(data: dict, source: str = "<config>", kind: str | None = None):
    """Validate a job config dict; `kind` (pretrain/finetune) defaults to the dict's own `kind` key."""
    if not isinstance(data, dict):
        raise MixsweepError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    kind = kind or data.get("kind")
    if kind not in JOB_TYPES:
        raise MixsweepError(f"{source}: kind: expected one of {', '.join(JOB_TYPES)}, got {kind!r}")
    if data.get("kind", kind) != kind:
        raise MixsweepError(f"{source}: kind: the file says {data.get('kind')!r}, the command says {kind!r}")
    try:
        return JOB_TYPES[kind].model_validate({**data, "kind": kind})
    except ValidationError as e:
        raise MixsweepError(format_validation_error(source, e)) from None


def load_job(path: Path | str, kind: str | None = None):
    """Read and validate a job YAML file."""
    path = Path(path)
    data = read_yaml(path, "config file")
    return parse_job(data, str(path), kind)
