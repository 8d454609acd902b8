"""Training recipes: validated hyper-parameters, AdamW parameter groups with layer decay, per-iteration
warm-up + cosine schedules.

The defaults follow the paper and the reference MAE code (facebookresearch/mae: its pre-training and
fine-tuning scripts' arguments, the paper's 150 + 100 epochs). A recipe is
frozen and rejects unknown keys, so a typo in a sweep file fails at load time instead of silently
training with a default; `model_dump(mode="json")` is what content keys hash.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn


class _Strict(BaseModel):
    """The base of every config model (recipes, job configs, sweep specs): unknown keys are refused, a validated
    model is frozen, and no float takes inf or NaN (`.inf` / `.nan` in YAML): no field has a use for them, inf
    passes every lower bound, and NaN passes any check written as a refusal (`x <= 0` is False). Defined here
    because mixsweep.train.config imports the recipes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Recipe(_Strict):
    """Fields and checks shared by both recipes."""

    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="effective batch over all workers and accumulation steps")
    blr: float = Field(gt=0, description="base lr; the actual lr is blr * effective batch / 256")
    min_lr: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    weight_decay: float = Field(ge=0)
    betas: tuple[float, float]
    crop_scale: tuple[float, float]
    hflip: float = Field(ge=0, le=1)
    vflip: float = Field(ge=0, le=1)
    accum_iter: int = Field(default=1, gt=0)
    clip_grad: float | None = Field(default=None, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _scale_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> _Recipe:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self

    def lr(self, world_batch: int | None = None) -> float:
        """Peak lr = blr * world_batch / 256, where world_batch = batch per worker * workers * accum_iter
        (the batch actually run; `batch_size` when None)."""
        b = self.batch_size if world_batch is None else world_batch
        if b <= 0:
            raise ValueError(f"world_batch must be positive, got {b}")
        return self.blr * b / 256


class PretrainRecipe(_Recipe):
    """MAE pre-training. warmup_epochs: the reference uses 40 of 800 epochs; the paper's 150-epoch runs use
    a proportionally shorter warm-up (10 here); override it per sweep if needed."""

    epochs: int = Field(default=150, gt=0)
    batch_size: int = Field(default=256, gt=0)
    blr: float = Field(default=1.5e-4, gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_epochs: float = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = Field(default=0.75, ge=0, lt=1)
    norm_pix_loss: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: float = Field(default=0.5, ge=0, le=1)
    vflip: float = Field(default=0.0, ge=0, le=1)


class FinetuneRecipe(_Recipe):
    """Segmentation fine-tuning (the paper's: batch 512, blr 1e-3, layer decay 0.75, 5 + 100 epochs).

    schedule: what an "epoch" means across fine-tune sizes.
      - fixed_steps: an epoch of every size is as many optimizer steps as one epoch over the full train
        split (floor(n_full / batch_size), at least 1), so warm-up and total steps do not shrink with the
        subset; a subset is cycled through, a fresh permutation per pass. Size then varies the data only.
      - fixed_epochs: one pass over the subset per epoch; a small subset also gets fewer updates.
    layer_decay is for a pre-trained encoder (model mae); baseline_layer_decay for the randomly initialised
    MAE (model scratch): shrinking a random patch embedding's lr only slows it down. ResNet-50 has none.
    """

    epochs: int = Field(default=100, gt=0)
    batch_size: int = Field(default=512, gt=0)
    blr: float = Field(default=1e-3, gt=0)
    min_lr: float = Field(default=1e-6, ge=0)
    warmup_epochs: float = Field(default=5, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = Field(default=0.75, ge=0, le=1)
    baseline_layer_decay: float = Field(default=1.0, ge=0, le=1)
    schedule: Literal["fixed_steps", "fixed_epochs"] = "fixed_steps"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = Field(default=0.5, ge=0, le=1)
    vflip: float = Field(default=0.5, ge=0, le=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)

    def layer_decay_for(self, model: str, head: str = "decoder") -> float:
        """The layer decay a fine-tune of `model` (FinetuneJob.model) gets: mae layer_decay, scratch
        baseline_layer_decay, anything else (resnet50: no ViT blocks) 1. A probe (head "probe") gets 1 for
        any model: only its head trains, and the head is the last layer, at full lr either way."""
        if head == "probe":
            return 1.0
        return {"mae": self.layer_decay, "scratch": self.baseline_layer_decay}.get(model, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Parameter groups and the optimizer


def param_groups(
    model: nn.Module, weight_decay: float, base_lr: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """timm's AdamW groups: no weight decay for 1-D params (norms, biases) and the model's `no_weight_decay()`
    names; frozen params left out.

    With `layer_decay`, timm's layer-wise decay over the layers the model's `group_matcher()` names (for the
    MAE: the embeddings, then each encoder block; the rest, e.g. the head, is the last layer): lr_scale =
    layer_decay ** (last layer - layer), so the embeddings get the smallest lr and the head the full lr.
    Each group also carries lr = base_lr * lr_scale, its layer_id and param_names.
    """
    # imported here: timm's import is heavy, and a sweep spec loads the recipes
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    no_wd = sorted(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else []
    if layer_decay is None:
        groups, layer_of = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_wd), {}
    else:
        if not hasattr(model, "group_matcher"):  # timm would fall back to grouping params by count
            raise ValueError(f"layer_decay needs a model with group_matcher(), not {type(model).__name__}")
        groups = param_groups_layer_decay(model, weight_decay, no_wd, layer_decay=layer_decay)
        layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        g["param_names"] = [names[id(p)] for p in g["params"]]
        g["layer_id"] = layer_of.get(g["param_names"][0], 0)
        g.setdefault("lr_scale", 1.0)
        g["lr"] = base_lr * g["lr_scale"]
    # By layer, decayed first: the order earlier checkpoints saved their optimizer state in (matched by position).
    return sorted(groups, key=lambda g: (g["layer_id"], g["weight_decay"] == 0))


def adamw_kwargs(device: torch.device | str, fused: bool | None = None) -> dict[str, bool]:
    """Implementation flags: the fused kernel on CUDA (one launch for all params), foreach elsewhere;
    `fused` True/False overrides the choice (torch also has a fused CPU AdamW)."""
    if fused is None:
        fused = torch.device(device).type == "cuda"
    return {"fused": True} if fused else {"foreach": True}


def build_optimizer(
    model: nn.Module,
    recipe: PretrainRecipe | FinetuneRecipe,
    world_batch: int,
    device: torch.device | str,
    *,
    fused: bool | None = None,
    layer_decay: float | None = None,
) -> torch.optim.AdamW:
    """AdamW over `param_groups` at lr = recipe.lr(world_batch) * each group's lr_scale.

    Layer decay applies for a decay < 1 (`layer_decay`, default a FinetuneRecipe's `layer_decay`; see
    FinetuneRecipe.layer_decay_for) on a model with layers to decay (a `group_matcher()`: the MAE and its
    segmenter; ResNet-50 has none). `fused` None picks by device (adamw_kwargs).
    """
    lr = recipe.lr(world_batch)
    if layer_decay is None:
        layer_decay = getattr(recipe, "layer_decay", None)
    if layer_decay is not None and (layer_decay >= 1 or not hasattr(model, "group_matcher")):
        layer_decay = None
    groups = param_groups(model, recipe.weight_decay, lr, layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay,
                             **adamw_kwargs(device, fused))


# ---------------------------------------------------------------------------------------------------------
# Schedule


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear from 0 over `warmup_steps`, then a half
    cosine from 1 down to `min_ratio` at `total_steps` (held there after)."""
    if step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """lr_factor as a picklable callable, so LambdaLR's state_dict stores its settings with it."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float):
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.min_ratio)


class IterLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR whose load_state_dict also sets each group's lr for the restored step.

    Plain LambdaLR restores only its counter, leaving whatever lr the freshly built scheduler set (step 0:
    zero) until the next step(); resuming would then run one step at the wrong lr unless the optimizer's
    state happened to be loaded after the scheduler was built. This makes the resume order-independent.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        lrs = [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    recipe: PretrainRecipe | FinetuneRecipe,
    steps_per_epoch: int,
    world_batch: int,
) -> IterLambdaLR:
    """Per-iteration warm-up + cosine; call `.step()` after every optimizer step.

    `steps_per_epoch` counts optimizer steps (batches / accum_iter). Each group's peak is its own lr, i.e.
    lr * lr_scale, and so is its floor: min_lr is scaled like the reference MAE code scales it.

    Not timm's CosineLRScheduler(warmup_prefix=True): same schedule, but its lrs differ from this formula by
    up to ~1e-13 relative (another order of operations), it is stepped with the step count, not `.step()`,
    and it refuses warmup_epochs == epochs (tests/test_recipes.py measures the difference).
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    min_ratio = min(1.0, recipe.min_lr / recipe.lr(world_batch))
    return IterLambdaLR(optimizer, WarmupCosine(total, warmup, min_ratio))
