"""A sweep's cost at real-data scale without the data: stage time by part and checkpoint bytes, under the spec's
checkpoint policy and under the old one (a full checkpoint every 5 epochs and at the end; local mode wrote each
twice and never deleted one).

    python benchmarks/checkpoint_budget.py sweeps/degradation.yaml

The spec is planned on a small synthetic twin (same grid, recipes, preset, resources and checkpoint settings;
`data` replaced), then each stage gets the real datasets' sizes (the options below; defaults: a COCO mixture of
about 23,000 training images, Oxford-IIIT Pet's 3,680 trainval images as 3,312 to train on and 368 to
validate). Costs are `mixsweep plan`'s on a store with no finished stage: reference rates, and a compile per
shape shared through the store's compile cache. No GPU, no Ray, no data needed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mixsweep.spec import parse_spec
from mixsweep.sweep.cost import checkpoint_bytes, estimate, fmt_bytes
from mixsweep.sweep.plan import build_plan
from mixsweep.sweep.store import Store
from mixsweep.yamlio import read_yaml

OLD_EVERY = 5  # epochs: the old default of sweeps/*.yaml


def real_scale(stage, args) -> None:
    """Give a stage planned on the synthetic twin the real datasets' sizes."""
    if stage.kind == "pretrain":
        stage.n_images, stage.eval_images = args.pretrain_images, args.pretrain_val
        return
    stage.n_images = max(1, round(args.pet_train * stage.finetune_fraction))
    stage.eval_images = args.pet_val
    if stage.epoch_images is not None:  # fixed_steps: a full split's steps per epoch
        batch = stage.job.recipe.batch_size
        stage.epoch_images = max(1, args.pet_train // batch) * batch


def old_policy(stage) -> tuple[int, int]:
    """(checkpoints, bytes) of the old policy: full ones every OLD_EVERY epochs and at the end."""
    full, _ = checkpoint_bytes(stage)
    saves = stage.epochs // OLD_EVERY + (stage.epochs % OLD_EVERY != 0)
    return saves, saves * full


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", type=Path)
    p.add_argument("--pretrain-images", type=int, default=23_000, help="training images per COCO mixture")
    p.add_argument("--pretrain-val", type=int, default=1_000, help="validation images per mixture")
    p.add_argument("--pet-train", type=int, default=3_312, help="Pet images a full fine-tune trains on")
    p.add_argument("--pet-val", type=int, default=368, help="Pet validation images")
    args = p.parse_args(argv)
    data = read_yaml(args.spec, "spec file")
    with tempfile.TemporaryDirectory(prefix="mixsweep-budget-") as tmp:
        twin = {**data, "data": {"synth": {"scale": "small"}}, "storage": str(Path(tmp) / "store"),
                "mixture": {**(data.get("mixture") or {}), "size": None}}
        spec = parse_spec(twin, f"{args.spec} (synthetic twin)")
        plan = build_plan(spec, Store(spec.storage))
    for s in plan.stages:
        real_scale(s, args)
    costs = estimate(plan, spec, Store(spec.storage))  # an empty store: reference rates, shared compile cache
    rows = [(s, costs.costs[s.key], *old_policy(s)) for s in plan.stages]
    step = sum(c.step_s for _, c, _, _ in rows) / 3600
    fixed = sum(c.fixed_s for _, c, _, _ in rows) / 3600
    parts = {f: sum(getattr(c, f) for _, c, _, _ in rows) / 3600
             for f in ("startup_s", "compile_s", "eval_s", "checkpoint_s")}
    old_n, old_b = sum(r[2] for r in rows), sum(r[3] for r in rows)
    new_b = sum(c.checkpoint_bytes for _, c, _, _ in rows)
    every = (f"every {spec.checkpoint_every} epochs" if spec.checkpoint_every is not None
             else f"every {spec.checkpoint_minutes:g} min")
    print(f"{spec.name}: {len(rows)} stages at real-data scale, reference rates")
    print(f"  GPU-hours: {step + fixed:.1f} = steps {step:.1f} + fixed {fixed:.1f} ("
          + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in parts.items()) + ")")
    print(f"  checkpoints, old policy (full every {OLD_EVERY} epochs and at the end): {old_n} checkpoints, "
          f"{fmt_bytes(old_b)} ({fmt_bytes(2 * old_b)} in local mode, which wrote each twice)")
    print(f"  checkpoints, this spec ({every}, weights-only final): {fmt_bytes(new_b)} "
          f"({old_b / max(new_b, 1):.0f}x fewer bytes)")


if __name__ == "__main__":
    main()
