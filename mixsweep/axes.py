"""Recipe axes: grid axes over recipe and model fields (`pretrain.epochs: [75, 150]`, `finetune.blr: [5e-4,
1e-3]`, `preset: [tiny, small]`), beside the animal fraction, fine-tune size and seed.

An axis has a level. A pre-training axis (`pretrain.*`, `preset`) multiplies the pre-trainings, and with them
every fine-tune and probe of them. A fine-tune axis (`finetune.*` and `head` for the end-to-end fine-tunes and
their baselines, `probe.*` for the probes) multiplies the fine-tunes of every pre-training, which are reused.
Each stage carries the values of the axes that shape it (a baseline trained from random weights has no
`pretrain.*` value); those values enter its key through the recipe it trains, so a value the spec already ran
(the section's own value) keeps its stages.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from mixsweep.methods import FRACTION_METHODS, PROBE_METHODS

RECIPE_SECTIONS = ("pretrain", "finetune", "probe")
MODEL_AXES = ("preset", "head")  # top-level model fields of a spec


def is_axis_name(name: str) -> bool:
    """A grid key that names a recipe or model field rather than one of the grid's own axes."""
    return "." in name or name in MODEL_AXES


@dataclass(frozen=True)
class Axis:
    name: str  # as the spec writes it: "pretrain.epochs", "preset"
    values: tuple  # validated against the field's schema, in the spec's order

    @property
    def section(self) -> str:
        """pretrain | finetune | probe, or "model" for a top-level field."""
        return self.name.split(".", 1)[0] if "." in self.name else "model"

    @property
    def field(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else self.name

    @property
    def level(self) -> str:
        """pretrain: multiplies the pre-trainings; finetune: multiplies the fine-tunes of each."""
        return "pretrain" if self.section == "pretrain" or self.name == "preset" else "finetune"

    def shapes(self, kind: str, method: str) -> bool:
        """Whether this axis changes what a stage of `kind` and `method` trains (its own recipe, or its
        parent's for a fine-tune of a pre-training)."""
        if self.name == "preset":
            return True
        if self.section == "pretrain":
            return kind == "pretrain" or method in FRACTION_METHODS
        if kind == "pretrain":
            return False
        if self.section == "probe":
            return method in PROBE_METHODS
        return method not in PROBE_METHODS  # finetune.*, head


def points(axes: tuple[Axis, ...], level: str, kind: str, method: str) -> list[dict[str, Any]]:
    """Every combination of the values of the axes of `level` that shape (kind, method), in the spec's order;
    [{}] when none does."""
    mine = [a for a in axes if a.level == level and a.shapes(kind, method)]
    return [dict(zip((a.name for a in mine), combo)) for combo in itertools.product(*(a.values for a in mine))]


def describe(values: dict[str, Any]) -> str:
    """`pretrain.epochs=75 finetune.blr=0.001`: a stage's axis values in names and labels."""
    return " ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_short(x) for x in v)
    return str(v)


def multiplies(axes: tuple[Axis, ...], stages) -> list[str]:
    """One line per axis for `mixsweep plan`: its values, what it multiplies and the stage counts (`stages`
    carry their axis values in `.axes`)."""
    out = []
    total = len(stages)
    for a in axes:
        shaped = sum(1 for s in stages if a.name in s.axes)
        what = ("every stage" if a.name == "preset"
                else "the pre-trainings and their fine-tunes and probes" if a.section == "pretrain"
                else "the probes of each pre-training (and random_probe)" if a.section == "probe"
                else "the fine-tunes of each pre-training (and their baselines)")
        n = len(a.values)
        without = total - shaped + shaped // n
        out.append(f"{a.name} [{', '.join(_short(v) for v in a.values)}]: x{n} on {what}: {shaped} of the "
                   f"{total} stages ({without} without this axis)")
    return out
