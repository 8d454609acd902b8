"""Job configs: one YAML file per training job, validated completely before any worker starts.

A bad config is one line naming the file, the key and the problem, e.g.
`pretrain.yaml: recipe.epochs: Input should be greater than 0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic_core import PydanticCustomError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixsweep.errors import MixsweepError
from mixsweep.yamlio import read_yaml
from mixsweep.train.recipes import FinetuneRecipe, PretrainRecipe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class RunSettings(_Strict):
    """Where a job writes, how often it checkpoints, how it survives failures."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._=-]+$")
    storage: str = "runs"  # Ray's storage_path: a local path or a URI (s3://bucket/prefix)
    # Metrics log, pictures and worker placement; a folder every node sees. Default: storage/name when
    # storage is local, else ./runs/name.
    artifacts: Optional[str] = None
    checkpoint_every: int = Field(1, ge=1)
    pictures_every: int = Field(0, ge=0)  # 0: pictures only at the end
    max_failures: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Optional[bool] = None  # torch.compile the model; None: on CUDA (the fast path), not on CPU


class TrackingSettings(_Strict):
    """The stage's W&B run, logged live by rank 0 (mixsweep.train.live): which run, and how to reach W&B."""

    project: str = Field("mixsweep", min_length=1)
    entity: Optional[str] = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    root: str  # offline runs land in root/wandb; a folder every node sees
    run_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")  # one id per stage key: a restart resumes it
    name: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: list[str] = []
    config: dict = {}
    timeout_s: float = Field(30.0, gt=0)  # wandb.init and the server check; finish gets 10x
    flush_s: float = Field(2.0, ge=0)  # how often the offline run file is flushed (readers see progress)


class PretrainData(_Strict):
    mixture: Path
    # The image list to pack (a sweep's union of its grid's mixtures, `mixsweep data union`): one pack
    # serves every pre-training of the grid. Default: pack this mixture alone.
    union: Optional[Path] = None
    pack: Optional[Path] = None  # that pack's folder, set by the sweep's driver once it has built it
    images: Path
    val_images: Optional[Path] = None
    cache: Path = Path("cache")
    pack_size: int = Field(256, ge=16)
    eval_batches: int = Field(0, ge=0)  # 0: the whole validation split


class FinetuneData(_Strict):
    manifest: Path
    pets_root: Optional[Path] = None
    cache: Path = Path("cache")
    pack_size: int = Field(256, ge=16)
    finetune_fraction: float = Field(1.0, gt=0, le=1)
    subset_seed: Optional[int] = None  # default: the job's seed


class _Job(_Strict):
    """What every job has: a model preset, a seed, resources and run settings."""

    preset: str = "base"
    seed: int = Field(0, ge=0)
    scaling: ScalingSettings = ScalingSettings()
    run: RunSettings
    tracking: Optional[TrackingSettings] = None  # None: no live W&B run

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from mixsweep.models.mae import PRESETS

        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (choose from {', '.join(PRESETS)})")
        return v


class PretrainJob(_Job):
    kind: Literal["pretrain"] = "pretrain"
    data: PretrainData
    recipe: PretrainRecipe = PretrainRecipe()
    # Continue from an official MAE file: mae_visualize_vit_base.pth (full) or mae_pretrain_vit_base.pth
    # (encoder; the decoder starts fresh). None: random init.
    init_checkpoint: Optional[Path] = None
    mae_init: Literal["full", "encoder"] = "full"


class FinetuneJob(_Job):
    kind: Literal["finetune"] = "finetune"
    model: Literal["mae", "scratch", "resnet50", "resnet18"] = "mae"
    head: Literal["decoder", "linear"] = "decoder"
    init_checkpoint: Optional[Path] = None  # a pre-training checkpoint (state.pt) or an official MAE .pth
    mae_init: Literal["full", "encoder"] = "full"
    resnet_weights: Optional[Path] = None
    data: FinetuneData
    recipe: FinetuneRecipe = FinetuneRecipe()

    @model_validator(mode="after")
    def _init_matches_model(self):
        if self.model == "mae" and self.init_checkpoint is None:
            raise ValueError("model 'mae' needs init_checkpoint (use model 'scratch' for random init)")
        if self.model != "mae" and self.init_checkpoint is not None:
            raise ValueError(f"init_checkpoint is only for model 'mae', not {self.model!r}")
        return self


JOB_TYPES = {"pretrain": PretrainJob, "finetune": FinetuneJob}


def format_validation_error(source: str, err: ValidationError) -> str:
    """First problem of a pydantic error as one line: `source: key.path: message`."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
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
