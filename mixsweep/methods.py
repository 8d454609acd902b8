"""The methods a sweep compares, in one registry: what each trains, how reports name and draw it, and what its
step costs. Specs, plans, jobs, the cost model and the report read their lists from here.

    mae             end-to-end fine-tune of a pre-training (the paper's endpoint)
    probe           frozen-encoder probe of a pre-training: only a per-patch head trains
    supervised_mae  the same segmenter from random weights (the fine-tunes' scratch)
    random_probe    the probe on a random encoder (the probes' scratch)
    resnet50        the paper's supervised baseline; resnet18 a cheaper one
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Method:
    name: str
    model: str  # the segmenter it builds (FinetuneJob.model): mae (from a pre-training), scratch, resnet50, resnet18
    label: str  # in reports and plots
    pretrained: bool = False  # fine-tunes a pre-training, so it has an animal fraction
    probe: bool = False  # the encoder frozen, only the head trains (FinetuneJob head "probe")
    scratch: str | None = None  # the same model from random weights: what transfer compares it with
    vit: bool = True  # builds the spec's ViT preset, so its step's cost scales with the preset
    # Images per second of one training step in a real stage on one NVIDIA H200, base preset, 224 px, the fast
    # path: fine-tune 2,441 and ResNet-50 5,511 measured; a probe runs the encoder forward only (about 3x a
    # fine-tune step) and ResNet-18 does 2.2x fewer FLOPs than ResNet-50 (estimates).
    step_img_per_s: float = 0.0
    style: dict = field(default_factory=dict)  # a baseline's horizontal line in plots


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("resnet18", "resnet18", "ResNet-18", vit=False, step_img_per_s=5511.0 * 2.2,
           style=dict(color="0.3", linestyle=(0, (3, 2)))),
    Method("resnet50", "resnet50", "ResNet-50", vit=False, step_img_per_s=5511.0,
           style=dict(color="0.15", linestyle=":")),
    Method("supervised_mae", "scratch", "Supervised MAE", step_img_per_s=2441.0,
           style=dict(color="0.55", linestyle=(0, (1, 4)))),
    Method("random_probe", "scratch", "Probe, random encoder", probe=True, step_img_per_s=3 * 2441.0,
           style=dict(color="0.4", linestyle=":")),
    Method("probe", "mae", "Probe", pretrained=True, probe=True, scratch="random_probe", step_img_per_s=3 * 2441.0),
    Method("mae", "mae", "MAE", pretrained=True, scratch="supervised_mae", step_img_per_s=2441.0),
)}  # in report order: baselines first

BASELINES = tuple(n for n, m in METHODS.items() if not m.pretrained)
FRACTION_METHODS = tuple(n for n, m in METHODS.items() if m.pretrained)
PROBE_METHODS = tuple(n for n, m in METHODS.items() if m.probe)
BaselineName = Literal[BASELINES]  # what a spec's `baselines:` and `effect.scratch` accept
FractionMethodName = Literal[FRACTION_METHODS]  # what a spec's `effect.method` accepts
PRETRAIN_IMG_PER_S = 4733.0  # MAE pre-training in a real stage on one H200 (base, batch 256, 224 px)


def label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def order(method: str) -> int:
    """A method's place in report tables (baselines first); unknown methods last."""
    return list(METHODS).index(method) if method in METHODS else len(METHODS)
