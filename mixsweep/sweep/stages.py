"""A sweep's stages: one pre-training or fine-tune each, with its content key, its typed job, its grid values
and its names on the terminal and in W&B. `mixsweep.sweep.plan` makes them; `mixsweep.sweep.run` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mixsweep import axes as recipe_axes
from mixsweep.methods import FRACTION_METHODS, PROBE_METHODS
from mixsweep.train.config import FinetuneJob, PretrainJob
# What a finished stage must have finite: a NaN or an infinity there means its weights went non-finite.
ENDPOINTS = {"pretrain": ("train_loss",), "finetune": ("train_loss", "test_loss", "test_iou_binary")}


def divergence(kind: str, metrics: dict) -> str:
    """'' when the stage's endpoint metrics are finite, else the one line saying which are not."""
    bad = [f"{name} is {metrics[name]}" for name in ENDPOINTS[kind]
           if isinstance(metrics.get(name), (int, float)) and not math.isfinite(metrics[name])]
    return f"{', '.join(bad)} after the last epoch: the stage diverged" if bad else ""


@dataclass
class Stage:
    key: str
    kind: str  # pretrain | finetune
    method: str  # a name of mixsweep.methods.METHODS
    seed: int
    animal_fraction: float | None
    finetune_fraction: float | None
    parent: str | None  # pre-training key of an MAE fine-tune
    preset: str
    epochs: int
    n_images: int
    job: PretrainJob | FinetuneJob | None = field(default=None, repr=False)  # set once, by the plan
    epoch_images: int | None = None  # images trained per epoch when not n_images (fixed_steps fine-tunes)
    eval_images: int = 0  # images evaluated per epoch (validation)
    schedule: str = ""  # a fine-tune's recipe.schedule: what one of its "epochs" means
    status: str = "pending"  # done | failed | diverged | pending
    error: str = ""
    # The values of the spec's recipe axes that shape this stage ({"pretrain.epochs": 75}); a column each.
    axes: dict = field(default_factory=dict)

    @property
    def job_type(self) -> str:
        if self.kind == "pretrain":
            return "pretrain"
        return "finetune" if self.method == "mae" else "probe" if self.method in PROBE_METHODS else "baseline"

    def row(self) -> dict:
        """The grid values of this stage, as the result store and W&B config carry them."""
        nan = float("nan")
        return {"key": self.key, "kind": self.kind, "method": self.method, "parent_key": self.parent or "",
                "animal_fraction": nan if self.animal_fraction is None else self.animal_fraction,
                "finetune_fraction": nan if self.finetune_fraction is None else self.finetune_fraction,
                "seed": self.seed, "preset": self.preset, "epochs": self.epochs, "finetune_schedule": self.schedule,
                **self.axes}

    def job_with_pack(self, pack: Path) -> PretrainJob | FinetuneJob:
        """The job pointed at the grid's pre-training pack, which the driver built (a copy: the stage's job and
        key stay as planned)."""
        if self.kind != "pretrain":
            return self.job
        return self.job.model_copy(update={"data": self.job.data.model_copy(update={"pack": Path(pack)})})

    @property
    def _axes_suffix(self) -> str:
        return f" {recipe_axes.describe(self.axes)}" if self.axes else ""

    @property
    def run_name(self) -> str:
        """The W&B run name: `pre f0.50 s0`, `ft f0.50 n0.25 s0`, `base resnet18 n1.00 s0`, then any recipe axes'
        values (`pretrain.epochs=75`)."""
        if self.kind == "pretrain":
            return f"pre f{self.animal_fraction:.2f} s{self.seed}" + self._axes_suffix
        if self.method in FRACTION_METHODS:
            what = "ft" if self.method == "mae" else "probe"
            return f"{what} f{self.animal_fraction:.2f} n{self.finetune_fraction:.2f} s{self.seed}" + self._axes_suffix
        return f"base {self.method} n{self.finetune_fraction:.2f} s{self.seed}" + self._axes_suffix

    @property
    def tags(self) -> list[str]:
        """Tags to filter on in W&B (its group-by and average-over-seeds read the config's grid values)."""
        tags = [self.job_type, self.method, f"s{self.seed}"]
        if self.animal_fraction is not None:
            tags.append(f"f{self.animal_fraction:.2f}")
        if self.finetune_fraction is not None:
            tags.append(f"n{self.finetune_fraction:.2f}")
        return tags + recipe_axes.describe(self.axes).split()

    @property
    def label(self) -> str:
        """The stage on the terminal: `pretrain F=0.50 seed 0`, `finetune F=0.50 s=0.25 seed 0`."""
        if self.kind == "pretrain":
            return f"pretrain F={self.animal_fraction:.2f} seed {self.seed}" + self._axes_suffix
        what = f"F={self.animal_fraction:.2f}" if self.method in FRACTION_METHODS else self.method
        verb = "probe" if self.method == "probe" else "finetune"
        return f"{verb} {what} s={self.finetune_fraction:.2f} seed {self.seed}" + self._axes_suffix

    def wandb_inputs(self, mixture: Path) -> dict:
        """The W&B artifacts a stage reads: a pre-training its mixture's image list (a dataset artifact by
        reference); an MAE fine-tune its parent's model artifact. Online runs declare them at start, offline
        ones at `mixsweep sync`."""
        if self.kind == "pretrain":
            return {"inputs": [{"name": f"mixture-{self.key}", "type": "dataset", "reference": mixture.as_uri()}]}
        if self.parent is not None:
            return {"parent_artifact": f"{self.parent}:latest", "inputs": [{"name": f"{self.parent}:latest"}]}
        return {"inputs": []}


@dataclass
class Plan:
    spec_name: str
    digest: str  # what decides this spec's stage keys (spec_digest); names its record in the store
    stages: list[Stage] = field(default_factory=list)
    union: Path | None = None  # the image list of every pre-training mixture together: one pack for the grid
    union_size: int = 0
    mixture_rows: int = 0  # what one pack per mixture would decode
    # Files `mixsweep run` writes before training (mixtures, the union, index and manifest caches); a plan
    # itself writes nothing.
    inputs: dict[Path, object] = field(default_factory=dict, repr=False)
    # False when synthetic data the store lacks was generated in a temporary folder to compute the keys: the
    # jobs' data paths then name where `run` will write it, and the inputs are not to be written.
    writable: bool = True

    def by_key(self) -> dict[str, Stage]:
        return {s.key: s for s in self.stages}

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "failed": 0, "diverged": 0, "pending": 0}
        for s in self.stages:
            out[s.status] += 1
        return out
