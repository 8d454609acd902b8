"""Fine-tuning recipes that compare fairly: the schedule across fine-tune sizes, layer decay per model, and
evaluation in full (padded) batches, on the synthetic Pet set (tens of train images, about a dozen val/test)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import crash_in_epoch, finetune_config, pretrain_config
from mixsweep.data.pets import IGNORE_LABEL
from mixsweep.models.mae import get_preset
from mixsweep.train.config import parse_job
from mixsweep.train.finetune import FinetuneTask, prepare_finetune_data
from mixsweep.train.loop import load_state, local_world, read_metrics
from mixsweep.train.metrics import SegMetrics
from mixsweep.train.launch import run_local

BATCH = 8


@pytest.fixture(scope="module")
def random_mae(tmp_path_factory):
    """A random tiny MAE in the official file format: enough for model 'mae' where the weights do not matter."""
    from mixsweep.models.mae import build_mae

    path = tmp_path_factory.mktemp("mae") / "mae_tiny.pth"
    torch.save({"model": build_mae("tiny").state_dict()}, path)
    return path


def _task(train_inputs, tmp_path, model="scratch", init=None, fraction=1.0, **recipe) -> FinetuneTask:
    cfg = finetune_config(train_inputs, tmp_path, "t", model=model, init=init)
    cfg["data"]["finetune_fraction"] = fraction
    cfg["recipe"].update(recipe)
    job = parse_job(cfg)
    return FinetuneTask(job, prepare_finetune_data(job), local_world(tmp_path / f"w-{model}-{fraction}"))


def _schedule(task: FinetuneTask, tmp_path) -> dict:
    opt, sched = task.build_optimizer(task.model, local_world(tmp_path / "opt"))
    fn = sched.lr_lambdas[0]
    batches = list(task.train_loader)
    assert all(len(b["index"]) == task.train_loader.batch_size for b in batches)  # full batches only
    return {"per_epoch": len(task.train_loader), "yielded": len(batches), "total": fn.total_steps,
            "warmup": fn.warmup_steps}


def _per_epoch(n: int) -> dict:
    """One pass over n images at batch BATCH, 3 epochs, 1 warm-up epoch (the tests' recipe)."""
    return {"per_epoch": n // BATCH, "yielded": n // BATCH, "total": 3 * (n // BATCH), "warmup": n // BATCH}


# ---------------------------------------------------------------------------------------------------------
# Schedule


def test_fixed_steps_gives_every_finetune_size_the_same_steps(train_inputs, tmp_path):
    got, n = {}, {}
    for s in ("fixed_steps", "fixed_epochs"):
        for f in (0.25, 1.0):
            task = _task(train_inputs, tmp_path, fraction=f, schedule=s, epochs=3, warmup_epochs=1)
            got[s, f], n[f] = _schedule(task, tmp_path), len(task.train_loader.rows)
    assert n[0.25] // BATCH < n[1.0] // BATCH  # the sizes differ in steps per pass
    assert got["fixed_steps", 0.25] == got["fixed_steps", 1.0] == _per_epoch(n[1.0])
    assert got["fixed_epochs", 0.25] == _per_epoch(n[0.25])  # fewer steps, a shorter warm-up
    assert got["fixed_epochs", 1.0] == _per_epoch(n[1.0])  # at the full size the two schedules agree


def test_fixed_steps_is_the_default_and_cycles_a_subset(train_inputs, tmp_path):
    full = len(_task(train_inputs, tmp_path).train_loader.rows)
    task = _task(train_inputs, tmp_path, fraction=0.25)
    assert task.recipe.schedule == "fixed_steps" and len(task.train_loader.rows) < full // 2
    rows = torch.cat([b["index"] for b in task.train_loader])
    assert len(rows) == (full // BATCH) * BATCH and set(rows.tolist()) == set(task.train_loader.rows.tolist())


def test_fixed_steps_run_records_its_schedule_and_resumes_exactly(train_inputs, tmp_path):
    def cfg(name):
        c = finetune_config(train_inputs, tmp_path, name, model="scratch")
        c["data"]["finetune_fraction"] = 0.25
        c["recipe"].update(epochs=2)
        return parse_job(c)

    straight = run_local(cfg("straight"))
    job = cfg("killed")
    with crash_in_epoch(1), pytest.raises(RuntimeError, match="injected failure in epoch 1"):
        run_local(job)
    run_local(job)
    per_epoch = len(_task(train_inputs, tmp_path).train_loader)  # the full split's
    steps = [m["step"] for m in read_metrics(tmp_path / "killed")]
    assert steps == [m["step"] for m in read_metrics(tmp_path / "straight")] == [per_epoch, 2 * per_epoch]
    ckpts = [sorted((tmp_path / n / "checkpoints").glob("checkpoint_epoch*"))[-1] for n in ("straight", "killed")]
    a, b = (load_state(c)["model"] for c in ckpts)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = json.loads((ckpts[0] / "meta.json").read_text())
    assert meta["finetune_schedule"] == "fixed_steps" and meta["steps_per_epoch"] == per_epoch
    assert meta["total_steps"] == meta["step"] == straight.metrics["step"] == 2 * per_epoch


# ---------------------------------------------------------------------------------------------------------
# Layer decay: for the pre-trained encoder, not for the random-init baseline


def _scales(task: FinetuneTask, tmp_path) -> dict[str, float]:
    opt, _ = task.build_optimizer(task.model, local_world(tmp_path / "opt"))
    return {n: g["lr_scale"] for g in opt.param_groups for n in g["param_names"]}


def test_scratch_baseline_gets_no_layer_decay_by_default(train_inputs, random_mae, tmp_path):
    scratch = _scales(_task(train_inputs, tmp_path, "scratch"), tmp_path)
    assert set(scratch.values()) == {1.0}
    mae = _scales(_task(train_inputs, tmp_path, "mae", init=random_mae), tmp_path)
    depth = get_preset("tiny").depth
    assert mae["mae.patch_embed.proj.weight"] == pytest.approx(0.75 ** (depth + 1))
    assert mae["head.weight"] == 1.0


def test_baseline_layer_decay_override_takes_effect(train_inputs, random_mae, tmp_path):
    scratch = _scales(_task(train_inputs, tmp_path, "scratch", baseline_layer_decay=0.5), tmp_path)
    mae = _scales(_task(train_inputs, tmp_path, "mae", init=random_mae, baseline_layer_decay=0.5), tmp_path)
    assert scratch["mae.patch_embed.proj.weight"] < 1.0 and scratch["head.weight"] == 1.0
    assert scratch["mae.patch_embed.proj.weight"] == pytest.approx(
        0.5 * scratch["mae.blocks.0.attn.qkv.weight"])
    assert mae["mae.patch_embed.proj.weight"] == pytest.approx(
        0.75 * mae["mae.blocks.0.attn.qkv.weight"])  # the MAE keeps its own layer_decay


@pytest.mark.filterwarnings("ignore:.*unreadable image")
def test_spec_finetune_recipe_reaches_every_finetune_job(tmp_path):
    import yaml

    from mixsweep.spec import load_spec
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    spec = {"name": "ld", "grid": {"animal_fractions": [0.5], "finetune_fractions": [0.5, 1.0], "seeds": [0]},
            "baselines": ["supervised_mae"], "data": {"synth": {"scale": "small"}}, "preset": "tiny",
            "mixture": {"pack_size": 64}, "storage": str(tmp_path / "store"), "wandb": {"mode": "offline"},
            "finetune": {"baseline_layer_decay": 0.6, "schedule": "fixed_epochs"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    plan = build_plan(load_spec(path), Store(tmp_path / "store"))
    ft = [s for s in plan.stages if s.kind == "finetune"]
    assert len(ft) == 4
    for s in ft:
        job = s.job
        assert job.recipe.baseline_layer_decay == 0.6 and job.recipe.layer_decay == 0.75
        assert s.row()["finetune_schedule"] == "fixed_epochs"
    assert {s.row()["finetune_schedule"] for s in plan.stages if s.kind == "pretrain"} == {""}


# ---------------------------------------------------------------------------------------------------------
# Evaluation in full batches


class PixelModel(nn.Module):
    """Per-pixel logits from the pixel's own channels: exactly batch-independent, unlike a conv or matmul,
    so padded and unpadded runs can be compared bit for bit."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.7, 0.1, 0.9]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[None, :, :, None, None] * x[:, None]).sum(2)  # (N, K, H, W)


def test_padded_eval_gives_the_unpadded_metrics(train_inputs, tmp_path):
    from mixsweep.data.loader import PackedLoader

    task = _task(train_inputs, tmp_path)
    world = local_world(tmp_path / "eval")
    model = PixelModel()

    def totals(loader) -> tuple[SegMetrics, list[int]]:
        m, sizes = SegMetrics(), []
        for batch in loader:
            sizes.append(batch["images"].shape[0])
            if len(batch["index"]):
                logits = model(batch["images"])
                m.update(logits, batch["masks"], F.cross_entropy(logits, batch["masks"], ignore_index=IGNORE_LABEL,
                                                                 reduction="sum"))
        return m, sizes

    out = task.evaluate(model, world, final=True)
    for split in ("val", "test"):
        padded = task.eval_loaders[split]
        plain = PackedLoader(padded.pack, padded.batch_size, train=False, augment=padded.augment,
                             indices=padded.rows)
        n = len(padded.rows)
        m_p, sizes_p = totals(padded)
        m_u, sizes_u = totals(plain)
        assert n % BATCH and sizes_u[-1] == n % BATCH  # the unpadded last batch is smaller ...
        assert sizes_p == [BATCH] * len(sizes_u)  # ... the padded one is not
        assert torch.equal(m_p.cm, m_u.cm) and torch.equal(m_p.loss_sum, m_u.loss_sum)
        assert m_p.cm.sum() == n * 64 * 64  # the padding counted nowhere
        # The task's own evaluation (padded loaders) reports the unpadded figures.
        assert out == {**out, **{f"{split}_{k}": v for k, v in m_u.compute().items()}}


def test_pretrain_validation_in_padded_batches_keeps_its_loss(train_inputs, tmp_path):
    from mixsweep.data.loader import PackedLoader
    from mixsweep.train.pretrain import PretrainTask, prepare_pretrain_data

    job = parse_job(pretrain_config(train_inputs, tmp_path, "pt"))
    world = local_world(tmp_path / "pt")
    task = PretrainTask(job, prepare_pretrain_data(job), world)
    padded = task.val_loader
    sizes = [b["images"].shape[0] for b in padded]
    n_val = len(padded.rows)
    assert n_val % BATCH and sizes == [BATCH] * len(sizes)  # a last, partial batch, padded
    task.model.eval()
    with torch.no_grad():
        loss_padded = task.evaluate(task.model, world, final=False)["val_loss"]
        task.val_loader = PackedLoader(padded.pack, BATCH, train=False, augment=padded.augment, indices=padded.rows)
        loss_plain = task.evaluate(task.model, world, final=False)["val_loss"]
    # Same rows, same masks; only the batch size of a matmul differs, so the floats agree to rounding.
    assert loss_padded == pytest.approx(loss_plain, rel=1e-6)
