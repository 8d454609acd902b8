"""What a sweep's stages cost on one accelerator: the training steps plus the fixed costs around them (start-up,
compile, evaluation, checkpoints), and the bytes their checkpoints write.

The rates come from the store's finished stages of the same method and preset on the kind of device the sweep
asks for, when it holds some (their measured loop, its parts and the overhead around it). Otherwise they are
reference figures measured in real stages on one NVIDIA H200 (bf16, torch.compile, batch 256, 224 px), scaled
by FLOPs per image for the smaller presets; the figures marked "assumed" were not measured.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections import Counter
from dataclasses import dataclass

from mixsweep.methods import METHODS, PRETRAIN_IMG_PER_S
from mixsweep.sweep.stages import Plan, Stage

REFERENCE_DEVICE = "NVIDIA H200"  # where the step rates of mixsweep.methods were measured
PRESET_COST = {"base": 1.0, "small": 0.27, "tiny": 0.0011}  # FLOPs per image relative to base (benchmark)
COMPILE_S = 2 * 55.0  # the training graph (55 s measured in a stage's first epoch) and the eval graph (assumed equal)
# A stage whose shapes an earlier stage compiled finds them in the store's compile cache: 6 % of the first
# compile measured on a CPU (benchmarks/compile_cache.py); 10 % assumed on a GPU.
CACHED_COMPILE = 0.1
STARTUP_S = 30.0  # a stage's process, pack and model set-up (assumed)
EVAL_SPEEDUP = 3.0  # an evaluation forward against a training step (assumed, as for the probe)
WRITE_BYTES_PER_S = 1e9  # checkpoint writes to the store (assumed)


@dataclass(frozen=True)
class StageCost:
    """Seconds of one stage on one accelerator, by part, and the checkpoint bytes it writes."""

    step_s: float
    startup_s: float
    compile_s: float
    eval_s: float
    checkpoint_s: float
    checkpoint_bytes: int

    @property
    def fixed_s(self) -> float:
        return self.startup_s + self.compile_s + self.eval_s + self.checkpoint_s

    @property
    def total_s(self) -> float:
        return self.step_s + self.fixed_s


@dataclass
class CostModel:
    """Each stage's cost, and where the rates came from (one line per source, for the terminal)."""

    costs: dict[str, StageCost]
    sources: list[str]

    def total(self, keys) -> StageCost:
        parts = [self.costs[k] for k in keys]
        return StageCost(*(sum(getattr(c, f.name) for c in parts) for f in dataclasses.fields(StageCost)))


@functools.lru_cache(maxsize=None)
def _parameters(kind: str, model: str, preset: str, head: str) -> tuple[int, int]:
    """(all, trainable) parameters of a stage's model, built on the meta device (no memory, no init cost)."""
    import torch

    from mixsweep.models.mae import build_mae
    from mixsweep.models.segment import build_segmenter

    with torch.device("meta"):
        if kind == "pretrain":
            net = build_mae(preset)
        else:  # an MAE fine-tune has the architecture of its scratch twin
            net = build_segmenter("scratch" if model == "mae" else model, preset=preset, head=head)
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def checkpoint_bytes(stage: Stage) -> tuple[int, int]:
    """(a resumable checkpoint, the weights-only final one) of `stage`: fp32 weights, plus AdamW's two fp32
    moments of every trained parameter in a resumable one."""
    job = stage.job
    model = "mae" if stage.kind == "pretrain" else job.model
    head = "" if stage.kind == "pretrain" else job.head
    total, trained = _parameters(stage.kind, model, job.preset, head)
    return 4 * total + 8 * trained, 4 * total


def _image_epochs(stage: Stage) -> int:
    return (stage.epoch_images or stage.n_images) * stage.epochs


def _rate_key(stage: Stage) -> str:
    return "pretrain" if stage.kind == "pretrain" else stage.method


def reference_cost(stage: Stage) -> StageCost:
    """The stage on the reference card."""
    scale = PRESET_COST.get(stage.preset, 1.0) if METHODS[stage.method].vit else 1.0
    rate = PRETRAIN_IMG_PER_S if stage.kind == "pretrain" else METHODS[stage.method].step_img_per_s
    per_image = scale / rate
    step_s = _image_epochs(stage) * per_image
    eval_s = stage.epochs * stage.eval_images * per_image / EVAL_SPEEDUP
    return _with_checkpoints(stage, step_s, STARTUP_S, COMPILE_S, eval_s, None)


def _with_checkpoints(stage: Stage, step_s: float, startup_s: float, compile_s: float, eval_s: float,
                      seconds_per_byte: float | None) -> StageCost:
    from mixsweep.train.loop import CheckpointPolicy

    full, final = checkpoint_bytes(stage)
    policy = CheckpointPolicy.of(stage.job.run)
    saves = policy.saves(stage.epochs, (step_s + eval_s) / max(stage.epochs, 1))
    written = saves * full + final
    per_byte = seconds_per_byte if seconds_per_byte is not None else 1 / WRITE_BYTES_PER_S
    return StageCost(step_s, startup_s, compile_s, eval_s, written * per_byte, written)


@dataclass(frozen=True)
class _Measured:
    """Medians over finished stages of one method and preset on one device."""

    device: str
    n: int
    step_s_per_image: float
    startup_s: float
    compile_s: float
    eval_s_per_image: float
    seconds_per_byte: float | None


def _number(row: dict, name: str) -> float | None:
    v = row.get(name)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _measured(stages: list[tuple[Stage, dict]]) -> _Measured | None:
    """Rates from finished stages; None when none recorded its loop time."""
    rows = [(s, r) for s, r in stages if _number(r, "loop_s") is not None and _image_epochs(s) > 0]
    if not rows:
        return None
    med = statistics.median
    step, startup, compile_, evals, per_byte = [], [], [], [], []
    for s, r in rows:
        first, ev, ck = (_number(r, k) or 0.0 for k in ("first_step_s", "eval_s", "checkpoint_s"))
        # The first step's time is mostly the compile; one ordinary step of it stays with the steps.
        step.append(max(0.0, r["loop_s"] - first - ev - ck) / _image_epochs(s))
        startup.append(_number(r, "overhead_s") or 0.0)
        compile_.append(first)
        evals.append(ev / max(1, s.epochs * s.eval_images))
        if ck > 0 and s.job is not None:
            from mixsweep.train.loop import CheckpointPolicy

            full, final = checkpoint_bytes(s)
            saves = CheckpointPolicy.of(s.job.run).saves(s.epochs, r["loop_s"] / max(s.epochs, 1))
            per_byte.append(ck / (saves * full + final))
    return _Measured(rows[0][1].get("device") or "?", len(rows), med(step), med(startup), med(compile_),
                     med(evals), med(per_byte) if per_byte else None)


def _wants_gpu(spec, stage: Stage) -> bool:
    scaling = spec.resources.pretrain if stage.kind == "pretrain" else spec.resources.finetune
    return scaling.use_gpu


def estimate(plan: Plan, spec, store) -> CostModel:
    """Every stage's cost: measured rates where the store has finished stages of its method and preset on the
    device kind the spec asks for (the most common such device), reference rates otherwise."""
    groups: dict[tuple[str, str, bool], list[tuple[Stage, dict]]] = {}
    for s in plan.stages:
        row = store.result(s.key) if s.status == "done" else None
        if row and isinstance(row.get("device"), str):
            on_gpu = not row["device"].startswith("cpu")
            groups.setdefault((_rate_key(s), s.preset, on_gpu), []).append((s, row))
    measured: dict[tuple[str, str, bool], _Measured | None] = {}
    for key, rows in groups.items():
        device = Counter(r["device"] for _, r in rows).most_common(1)[0][0]
        measured[key] = _measured([(s, r) for s, r in rows if r["device"] == device])
    costs, used, compiled = {}, Counter(), set()
    for s in plan.stages:
        m = measured.get((_rate_key(s), s.preset, _wants_gpu(spec, s)))
        if m is None:
            cost = reference_cost(s)
            shape = (_rate_key(s), s.preset, s.job.recipe.batch_size)
            if shape in compiled:  # an earlier stage of the plan compiled these graphs into the shared cache
                cost = dataclasses.replace(cost, compile_s=cost.compile_s * CACHED_COMPILE)
            compiled.add(shape)
            costs[s.key] = cost
            gpu = _wants_gpu(spec, s)
            used[f"reference rates ({REFERENCE_DEVICE}, bf16; start-up, eval and write rates assumed)"
                 + ("" if gpu else "; these stages train on CPUs, far slower: a finished stage calibrates them")] += 1
            continue
        costs[s.key] = _with_checkpoints(s, m.step_s_per_image * _image_epochs(s), m.startup_s, m.compile_s,
                                         m.eval_s_per_image * s.epochs * s.eval_images, m.seconds_per_byte)
        used[f"{_rate_key(s)} {s.preset}: measured on {m.n} finished stages ({m.device})"] += 1
    return CostModel(costs, [f"{n} stages: {what}" for what, n in used.items()])


def fmt_seconds(s: float) -> str:
    """`42 s`, `12.5 min`, `3.2 h`."""
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"
