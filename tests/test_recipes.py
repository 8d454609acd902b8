"""Recipes: validation, parameter groups, layer decay, the lr schedule and its resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from mixsweep.train import recipes
from mixsweep.train.recipes import (
    FinetuneRecipe,
    PretrainRecipe,
    build_optimizer,
    build_scheduler,
    lr_factor,
    param_groups,
)


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)


class TinyViT(nn.Module):
    """ViT-shaped names: cls_token, pos_embed, patch_embed.proj, blocks.N, norm, head."""

    def __init__(self, d: int = 4, depth: int = 2):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 2, 2)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^(?:cls_token|pos_embed|patch_embed\.)", "blocks": r"^blocks\.(\d+)\."}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).mean(-1)
        for b in self.blocks:
            x = b.fc(b.norm1(x))
        return self.head(self.norm(x + self.cls_token[:, 0] + self.pos_embed[:, 0]))


def mae_layer_id(name: str, num_layers: int) -> int:
    """The reference MAE fine-tuning rule: embeddings 0, encoder block i -> i + 1, the rest num_layers + 1."""
    name = name.removeprefix("mae.")
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def by_name(groups: list[dict]) -> dict[str, dict]:
    return {n: g for g in groups for n in g["param_names"]}


# ---------------------------------------------------------------------------------------------------------
# Validation


def test_defaults_follow_the_paper():
    p, f = PretrainRecipe(), FinetuneRecipe()
    assert (p.epochs, p.batch_size, p.blr, p.betas, p.mask_ratio, p.warmup_epochs) == (150, 256, 1.5e-4,
                                                                                       (0.9, 0.95), 0.75, 10)
    assert (f.epochs, f.batch_size, f.blr, f.layer_decay, f.warmup_epochs, f.weight_decay) == (100, 512, 1e-3,
                                                                                               0.75, 5, 0.05)
    assert f.lr() == pytest.approx(2e-3)
    assert f.lr(world_batch=128) == pytest.approx(5e-4)
    # Not the paper's: every fine-tune size gets the same steps; the random-init baseline no layer decay.
    assert (f.schedule, f.baseline_layer_decay) == ("fixed_steps", 1.0)


def test_layer_decay_per_finetune_model():
    f = FinetuneRecipe()
    assert (f.layer_decay_for("mae"), f.layer_decay_for("scratch"), f.layer_decay_for("resnet50")) == (0.75, 1.0, 1.0)
    g = FinetuneRecipe(layer_decay=0.6, baseline_layer_decay=0.9)
    assert (g.layer_decay_for("mae"), g.layer_decay_for("scratch"), g.layer_decay_for("resnet50")) == (0.6, 0.9, 1.0)


@pytest.mark.parametrize("cls,field,value", [
    (PretrainRecipe, "epochs", 0),
    (PretrainRecipe, "batch_size", -1),
    (PretrainRecipe, "blr", 0.0),
    (PretrainRecipe, "mask_ratio", 1.0),
    (PretrainRecipe, "crop_scale", (0.0, 1.0)),
    (PretrainRecipe, "crop_scale", (0.5, 1.5)),
    (PretrainRecipe, "crop_scale", (0.9, 0.5)),
    (PretrainRecipe, "betas", (0.9, 1.0)),
    (PretrainRecipe, "accum_iter", 0),
    (PretrainRecipe, "clip_grad", 0.0),
    (FinetuneRecipe, "layer_decay", 1.5),
    (FinetuneRecipe, "layer_decay", -0.1),
    (FinetuneRecipe, "baseline_layer_decay", 1.5),
    (FinetuneRecipe, "schedule", "fixed_images"),
    (FinetuneRecipe, "hflip", 2.0),
    (FinetuneRecipe, "label_smoothing", 1.0),
    (FinetuneRecipe, "warmup_epochs", -1),
])
def test_bad_values_name_the_field(cls, field, value):
    with pytest.raises(ValidationError) as e:
        cls(**{field: value})
    assert field in str(e.value)


def test_warmup_longer_than_training_rejected():
    with pytest.raises(ValidationError, match="warmup_epochs"):
        FinetuneRecipe(epochs=3, warmup_epochs=5)


def test_unknown_key_rejected_and_frozen():
    with pytest.raises(ValidationError, match="layerdecay"):
        FinetuneRecipe(layerdecay=0.5)
    with pytest.raises(ValidationError):
        FinetuneRecipe().epochs = 3


# ---------------------------------------------------------------------------------------------------------
# Groups


def test_param_groups_weight_decay():
    m = TinyViT()
    groups = param_groups(m, 0.05, 1e-3)
    g = by_name(groups)
    assert "frozen" not in g
    for name in ("cls_token", "pos_embed", "patch_embed.proj.bias", "blocks.0.norm1.weight", "blocks.1.fc.bias",
                 "norm.weight", "norm.bias", "head.bias"):
        assert g[name]["weight_decay"] == 0.0, name
    for name in ("patch_embed.proj.weight", "blocks.0.fc.weight", "blocks.1.fc.weight", "head.weight"):
        assert g[name]["weight_decay"] == 0.05, name
    assert all(gr["lr_scale"] == 1.0 and gr["lr"] == 1e-3 for gr in groups)
    assert len(groups) == 2


def test_layer_decay_scales():
    m = TinyViT(depth=2)
    groups = param_groups(m, 0.05, 1.0, layer_decay=0.5)
    g = by_name(groups)
    # scale = 0.5 ** (last layer - layer): embeddings 1/8, block 0 1/4, block 1 1/2, the rest (norm, head) 1
    expect = {"cls_token": 0.125, "pos_embed": 0.125, "patch_embed.proj.weight": 0.125,
              "blocks.0.fc.weight": 0.25, "blocks.0.norm1.bias": 0.25, "blocks.1.fc.weight": 0.5,
              "norm.weight": 1.0, "head.weight": 1.0}
    for name, scale in expect.items():
        assert g[name]["lr_scale"] == pytest.approx(scale), name
        assert g[name]["lr"] == pytest.approx(scale), name
    # one group per (layer, decay?), each layer's decayed and undecayed params apart
    keys = [(gr["layer_id"], gr["weight_decay"] > 0) for gr in groups]
    assert len(keys) == len(set(keys))
    assert sum(len(gr["params"]) for gr in groups) == sum(p.requires_grad for p in m.parameters())


def test_layer_decay_needs_a_group_matcher():
    with pytest.raises(ValueError, match="group_matcher"):
        param_groups(nn.Sequential(nn.Linear(2, 2)), 0.05, 1e-3, layer_decay=0.75)


def test_build_optimizer_finetune_cpu():
    m = TinyViT(depth=2)
    opt = build_optimizer(m, FinetuneRecipe(), world_batch=256, device="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    assert opt.defaults["betas"] == (0.9, 0.999)
    g = by_name(opt.param_groups)
    assert g["head.weight"]["lr"] == pytest.approx(1e-3)
    assert g["blocks.0.fc.weight"]["lr"] == pytest.approx(1e-3 * 0.75 ** 2)
    assert g["cls_token"]["weight_decay"] == 0.0


def test_build_optimizer_layer_decay_argument_overrides_the_recipe():
    m = TinyViT(depth=2)
    none = build_optimizer(m, FinetuneRecipe(), world_batch=256, device="cpu", layer_decay=1.0)
    assert {gr["lr_scale"] for gr in none.param_groups} == {1.0}
    half = build_optimizer(m, FinetuneRecipe(), world_batch=256, device="cpu", layer_decay=0.5)
    assert by_name(half.param_groups)["blocks.0.fc.weight"]["lr_scale"] == pytest.approx(0.5 ** 2)


def test_build_optimizer_pretrain_has_no_layer_decay():
    opt = build_optimizer(TinyViT(), PretrainRecipe(), world_batch=512, device="cpu")
    assert {gr["lr_scale"] for gr in opt.param_groups} == {1.0}
    assert all(gr["lr"] == pytest.approx(3e-4) for gr in opt.param_groups)


def test_fused_only_on_cuda(monkeypatch):
    assert recipes.adamw_kwargs("cuda") == {"fused": True}
    assert recipes.adamw_kwargs(torch.device("cuda", 1)) == {"fused": True}
    assert recipes.adamw_kwargs("cpu") == {"foreach": True}
    assert recipes.adamw_kwargs("cpu", fused=True) == {"fused": True}
    assert recipes.adamw_kwargs("cuda", fused=False) == {"foreach": True}
    seen = {}

    class Spy(torch.optim.AdamW):
        def __init__(self, params, **kw):
            seen.update(kw)
            kw.pop("fused", None)  # no CUDA here: record the request, build a CPU optimizer
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    build_optimizer(TinyViT(), PretrainRecipe(), 256, device="cuda")
    assert seen.get("fused") is True and "foreach" not in seen
    seen.clear()
    build_optimizer(TinyViT(), PretrainRecipe(), 256, device="cpu")
    assert "fused" not in seen and seen.get("foreach") is True


# ---------------------------------------------------------------------------------------------------------
# Schedule


def test_lr_factor_values():
    total, warm, lo = 100, 10, 0.01
    assert lr_factor(0, total, warm, lo) == 0.0
    assert lr_factor(5, total, warm, lo) == pytest.approx(0.5)
    assert lr_factor(10, total, warm, lo) == pytest.approx(1.0)
    assert lr_factor(55, total, warm, lo) == pytest.approx(lo + (1 - lo) * 0.5)  # half-way through the cosine
    assert lr_factor(100, total, warm, lo) == pytest.approx(lo)
    assert lr_factor(150, total, warm, lo) == pytest.approx(lo)
    assert lr_factor(0, total, 0, 0.0) == pytest.approx(1.0)


def test_schedule_matches_timm_cosine_only_to_rounding():
    """timm's CosineLRScheduler (warm-up prefix, per step, lr_min scaled by lr_scale) is the same schedule, but
    it computes each lr in another order: equal to ~1e-13 relative, not bit for bit, so ours stays."""
    from timm.scheduler import CosineLRScheduler

    rec = FinetuneRecipe(epochs=100, warmup_epochs=5, min_lr=1e-6)
    spe, total, warm = 7, 700, 35
    ours = build_optimizer(TinyViT(), rec, 512, "cpu")
    sched = build_scheduler(ours, rec, steps_per_epoch=spe, world_batch=512)
    theirs = build_optimizer(TinyViT(), rec, 512, "cpu")
    for gr in theirs.param_groups:
        gr["lr"] = rec.lr(512)  # timm applies lr_scale itself
    timm_sched = CosineLRScheduler(theirs, t_initial=total - warm, lr_min=rec.min_lr, warmup_t=warm,
                                   warmup_prefix=True, t_in_epochs=False)
    exact = worst = 0
    for step in range(total + 5):
        for a, b in zip((gr["lr"] for gr in ours.param_groups), (gr["lr"] for gr in theirs.param_groups)):
            exact += a == b
            worst = max(worst, abs(a - b) / max(a, 1e-300))
        ours.step()  # no gradients: only keeps the scheduler's step-order check quiet
        sched.step()
        timm_sched.step_update(step + 1)
    n = (total + 5) * len(ours.param_groups)
    print(f"timm vs ours: {n - exact} of {n} lrs differ, by at most {worst:.1e} relative")
    assert worst < 1e-12
    assert exact < n, "timm now matches bit for bit: recipes.build_scheduler could use it"


def test_scheduler_respects_lr_scale():
    m = TinyViT(depth=2)
    rec = FinetuneRecipe(epochs=10, warmup_epochs=1, min_lr=0.0)
    opt = build_optimizer(m, rec, world_batch=256, device="cpu")
    sched = build_scheduler(opt, rec, steps_per_epoch=10, world_batch=256)
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    for _ in range(10):
        opt.step()
        sched.step()
    for g in opt.param_groups:  # end of warm-up: each group at its own peak
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
    for _ in range(90):
        opt.step()
        sched.step()
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in opt.param_groups)


def _train(model, opt, sched, steps: int, seed: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    lrs = []
    for _ in range(steps):
        x = torch.randn(4, 3, 4, 4, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        lrs.append([gr["lr"] for gr in opt.param_groups])
    return lrs


@pytest.mark.parametrize("order", ["optimizer-first", "scheduler-first"])
def test_scheduler_resume_continues_identically(order):
    rec = FinetuneRecipe(epochs=4, warmup_epochs=1, min_lr=1e-5)
    torch.manual_seed(0)
    ref = TinyViT()
    start = copy.deepcopy(ref.state_dict())
    opt = build_optimizer(ref, rec, 64, "cpu")
    sched = build_scheduler(opt, rec, steps_per_epoch=5, world_batch=64)
    _train(ref, opt, sched, 7, seed=1)
    saved = copy.deepcopy({"model": ref.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    tail_ref = _train(ref, opt, sched, 10, seed=2)

    m = TinyViT()
    m.load_state_dict(start)
    m.load_state_dict(saved["model"])
    opt2 = build_optimizer(m, rec, 64, "cpu")
    if order == "optimizer-first":
        opt2.load_state_dict(saved["opt"])
        sched2 = build_scheduler(opt2, rec, steps_per_epoch=5, world_batch=64)
    else:
        sched2 = build_scheduler(opt2, rec, steps_per_epoch=5, world_batch=64)
        opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in saved["opt"]["param_groups"]]
    tail = _train(m, opt2, sched2, 10, seed=2)
    assert tail == tail_ref
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k
    assert not math.isnan(tail[-1][0])


def test_real_segmenter_layer_decay():
    segment = pytest.importorskip("mixsweep.models.segment")
    model = segment.build_segmenter("scratch", preset="tiny")
    depth = model.mae.preset.depth
    opt = build_optimizer(model, FinetuneRecipe(layer_decay=0.5), world_batch=256, device="cpu")
    g = by_name(opt.param_groups)
    assert g["mae.cls_token"]["weight_decay"] == 0.0
    assert g["mae.patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.5 ** (depth + 1))
    assert g["mae.blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.5 ** depth)
    assert g["head.weight"]["lr_scale"] == 1.0
    assert "mae.pos_embed" not in g  # frozen sin-cos table


@pytest.mark.parametrize("head", ["decoder", "linear"])
def test_timm_groups_follow_the_reference_mae_rule(head):
    """timm's layer-decay groups over the segmenter's group_matcher give every parameter the lr scale and weight
    decay of the reference MAE fine-tuning code (mae_layer_id; no decay for 1-D params and no_weight_decay)."""
    segment = pytest.importorskip("mixsweep.models.segment")
    model = segment.build_segmenter("scratch", preset="small", head=head)
    depth, skip = model.mae.preset.depth, model.no_weight_decay()
    g = by_name(param_groups(model, 0.05, 1.0, layer_decay=0.65))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(g) == set(trainable)
    for name, p in trainable.items():
        assert g[name]["lr_scale"] == 0.65 ** (depth + 1 - mae_layer_id(name, depth)), name
        assert g[name]["weight_decay"] == (0.0 if p.ndim <= 1 or name in skip else 0.05), name


def test_resnet_gets_no_layer_decay():
    segment = pytest.importorskip("mixsweep.models.segment")
    model = segment.build_segmenter("resnet50")
    opt = build_optimizer(model, FinetuneRecipe(), world_batch=256, device="cpu")
    assert {gr["lr_scale"] for gr in opt.param_groups} == {1.0}
