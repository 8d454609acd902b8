"""The frozen-encoder probe (FinetuneJob head "probe"): the encoder stays bit for bit what it was, only the head
trains and only the head is in the optimizer, the probe reports a fine-tune's metrics, resumes exactly, and
compiles. On the tiny preset and the synthetic Pet set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import crash_in_epoch, finetune_config, pretrain_config
from mixsweep.errors import MixsweepError
from mixsweep.models.segment import build_segmenter
from mixsweep.train.config import FinetuneJob, parse_job
from mixsweep.train.finetune import FinetuneTask, prepare_finetune_data
from mixsweep.train.launch import run_local
from mixsweep.train.loop import load_state, local_world
from mixsweep.train.recipes import FinetuneRecipe, build_optimizer, param_groups

HEAD_PARAMS = {"head.weight", "head.bias"}


@pytest.fixture(scope="module")
def pretrained(train_inputs, tmp_path_factory):
    storage = tmp_path_factory.mktemp("probe-pretrained")
    run_local(parse_job(pretrain_config(train_inputs, storage, "pt")))
    return sorted((storage / "pt" / "checkpoints").glob("checkpoint_epoch*"))[-1] / "state.pt"


def probe_config(inputs, storage, name: str, model: str = "scratch", init=None, **recipe) -> dict:
    cfg = finetune_config(inputs, storage, name, model=model, init=init)
    cfg["head"] = "probe"
    cfg["recipe"].update(recipe)
    return cfg


def _final_state(run_dir) -> dict:
    return load_state(sorted((run_dir / "checkpoints").glob("checkpoint_epoch*"))[-1])


def _initial_segmenter(job: FinetuneJob) -> torch.nn.Module:
    """The model a job starts from: run_finetune seeds torch with the job's seed, then builds it first."""
    torch.manual_seed(job.seed)
    return build_segmenter(job.model, preset=job.preset, head=job.head, mae_checkpoint=job.init_checkpoint,
                           mae_init=job.mae_init)


# ---------------------------------------------------------------------------------------------------------
# A probe job end to end


@pytest.mark.parametrize("model", ["mae", "scratch"])
def test_probe_trains_the_head_only_and_keeps_the_encoder_bit_for_bit(train_inputs, pretrained, tmp_path, model):
    job = parse_job(probe_config(train_inputs, tmp_path, f"probe-{model}", model=model,
                                 init=pretrained if model == "mae" else None, blr=0.1))
    out = run_local(job).metrics
    final = _final_state(tmp_path / f"probe-{model}")
    start = _initial_segmenter(job).state_dict()
    assert final["model"].keys() == start.keys()
    encoder = [k for k in start if k.startswith("mae.")]
    assert encoder and not any(k.startswith("mae.decoder") for k in encoder)  # the decoder is gone
    for k in encoder:
        assert torch.equal(final["model"][k], start[k]), k
    if model == "mae":  # ... and it is the pre-trained encoder, exactly
        pre = load_state(pretrained)["model"]
        for k in encoder:
            assert torch.equal(final["model"][k], pre[k.removeprefix("mae.")]), k
    for k in HEAD_PARAMS | {"feature_norm.running_mean", "feature_norm.running_var"}:
        assert not torch.equal(final["model"][k], start[k]), k
    assert "optimizer" not in final  # a finished job keeps its weights only
    # Reported like any fine-tune.
    for key in ("test_loss", "test_accuracy", "test_iou_binary", "test_miou", "val_miou"):
        assert key in out and out[key] == out[key], key  # present and not NaN
    assert 0.0 <= out["test_iou_binary"] <= 1.0
    assert any((tmp_path / f"probe-{model}" / "pictures").glob("segmentations_*.png"))


def test_probe_resumes_exactly(train_inputs, tmp_path):
    straight = run_local(parse_job(probe_config(train_inputs, tmp_path, "straight", blr=0.1)))
    job = parse_job(probe_config(train_inputs, tmp_path, "killed", blr=0.1))
    with crash_in_epoch(1), pytest.raises(RuntimeError, match="injected failure in epoch 1"):
        run_local(job)
    # The optimizer's state is the head's: two tensors' moments, no AdamW state for the encoder.
    opt = _final_state(tmp_path / "killed")["optimizer"]
    assert {n for g in opt["param_groups"] for n in g["param_names"]} == HEAD_PARAMS
    assert len(opt["state"]) == len(HEAD_PARAMS)
    resumed = run_local(job)
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert a["step"] == b["step"]
    for k in a["model"]:  # the head and the norm's running statistics too
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed.metrics["test_miou"] == straight.metrics["test_miou"]


# ---------------------------------------------------------------------------------------------------------
# The optimizer


def test_probe_optimizer_holds_only_the_head(train_inputs, tmp_path):
    # layer_decay < 1 in the recipe: a probe ignores it (only the head trains, at full lr).
    job = parse_job(probe_config(train_inputs, tmp_path, "t", layer_decay=0.5, baseline_layer_decay=0.5))
    task = FinetuneTask(job, prepare_finetune_data(job), local_world(tmp_path / "w"))
    opt, _ = task.build_optimizer(task.model, local_world(tmp_path / "opt"))
    head = {id(p) for p in task.model.head.parameters()}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == head
    assert {n for g in opt.param_groups for n in g["param_names"]} == HEAD_PARAMS
    assert {g["lr_scale"] for g in opt.param_groups} == {1.0}
    assert {n for n, p in task.model.named_parameters() if p.requires_grad} == HEAD_PARAMS


def test_layer_decay_groups_work_when_only_the_head_trains():
    """The layer-decay path (vit_group_matcher over a model whose encoder is frozen) groups the head alone, as
    the last layer, at full lr; the weight decay rule is unchanged."""
    model = build_segmenter("scratch", preset="tiny", head="probe")
    groups = param_groups(model, weight_decay=0.05, base_lr=1.0, layer_decay=0.65)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert set(by_name) == HEAD_PARAMS
    assert by_name["head.weight"]["weight_decay"] == 0.05 and by_name["head.bias"]["weight_decay"] == 0.0
    assert {g["lr_scale"] for g in groups} == {1.0}
    opt = build_optimizer(model, FinetuneRecipe(layer_decay=0.5), world_batch=256, device="cpu")
    assert {n for g in opt.param_groups for n in g["param_names"]} == HEAD_PARAMS


def test_probe_gets_no_layer_decay_for_any_model():
    recipe = FinetuneRecipe(layer_decay=0.5, baseline_layer_decay=0.6)
    assert recipe.layer_decay_for("mae", head="probe") == recipe.layer_decay_for("scratch", head="probe") == 1.0
    assert recipe.layer_decay_for("mae") == 0.5 and recipe.layer_decay_for("scratch", head="linear") == 0.6


# ---------------------------------------------------------------------------------------------------------
# The model


def test_frozen_encoder_runs_in_eval_mode_without_autograd():
    model = build_segmenter("scratch", preset="tiny", head="probe").train()
    assert not model.mae.training and not any(m.training for m in model.mae.modules())
    assert model.training and model.feature_norm.training and model.head.training
    seen = []
    model.mae.blocks[-1].register_forward_hook(
        lambda mod, args, out: seen.append((torch.is_grad_enabled(), out.requires_grad)))
    out = model(torch.randn(2, 3, 64, 64))
    assert seen == [(False, False)]  # no graph through the encoder: no activations kept for backward
    out.square().mean().backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == HEAD_PARAMS
    model.eval()
    assert not model.mae.training and not model.feature_norm.training


def test_compiled_probe_step_matches_eager():
    """torch.compile (dynamo + AOT autograd; aot_eager keeps this cheap on a CPU) takes the no_grad encoder and
    the running statistics' update, and gives the eager step's loss, gradients and statistics."""
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(4, 3, 64, 64, generator=g), torch.randint(0, 3, (4, 64, 64), generator=g)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_segmenter("scratch", preset="tiny", head="probe").train()
        run = torch.compile(model, backend="aot_eager") if compiled else model
        loss = F.cross_entropy(run(x), labels)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                        model.feature_norm.running_var.clone()))
    (l0, g0, v0), (l1, g1, v1) = results
    assert torch.allclose(l0, l1, rtol=1e-5) and g0.keys() == g1.keys() == HEAD_PARAMS
    for k in g0:
        assert torch.allclose(g0[k], g1[k], rtol=1e-4, atol=1e-6), k
    assert torch.allclose(v0, v1, rtol=1e-5)


def test_other_heads_are_unchanged():
    """No normalisation module and nothing frozen for the end-to-end heads: their state dicts (and old
    checkpoints) are as before."""
    for head in ("decoder", "linear"):
        model = build_segmenter("scratch", preset="tiny", head=head)
        assert not any(k.startswith("feature_norm") for k in model.state_dict())
        assert all(p.requires_grad for n, p in model.named_parameters() if "pos_embed" not in n)


# ---------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("model", ["resnet50", "resnet18"])
def test_probe_of_a_resnet_is_one_line_error(train_inputs, tmp_path, model):
    with pytest.raises(MixsweepError) as err:
        parse_job(probe_config(train_inputs, tmp_path, "bad", model=model), source="probe.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("probe.yaml: ") and "head 'probe'" in msg and model in msg
    with pytest.raises(MixsweepError, match="freezes an MAE encoder"):
        build_segmenter(model, head="probe")


def test_probe_job_round_trips_and_default_jobs_dump_as_before(train_inputs, tmp_path):
    job = parse_job(probe_config(train_inputs, tmp_path, "p"))
    assert job.head == "probe" and parse_job(job.model_dump(mode="json")) == job
    plain = parse_job(finetune_config(train_inputs, tmp_path, "f", model="scratch")).model_dump(mode="json")
    assert plain["head"] == "decoder" and "probe" not in plain


# --- the probe in a sweep ----------------------------------------------------------------------------

def test_a_spec_with_a_probe_plans_one_per_pretraining_and_size_and_adds_no_other_key(tmp_path, capsys):
    """probe: adds a frozen-encoder probe per pre-training and fine-tune size (and random_probe per seed), with
    keys of their own: the fine-tunes' keys are the same with or without it, so adding it runs only probes."""
    import yaml

    from mixsweep.cli import main
    from mixsweep.spec import load_spec
    from mixsweep.sweep.plan import build_plan, write_plan_inputs, write_spec_data
    from mixsweep.sweep.store import Store
    from mixsweep.train.launch import run_local
    from test_sweep import write_spec

    plain = load_spec(write_spec(tmp_path / "a.yaml", tmp_path / "store", finetune=(0.5, 1.0)))
    path = write_spec(tmp_path / "b.yaml", tmp_path / "store", finetune=(0.5, 1.0), baselines=["random_probe"],
                      probe={"epochs": 1, "batch_size": 16, "warmup_epochs": 0, "blr": 0.3, "weight_decay": 0.0},
                      effect={"method": "probe", "direction": "increase"})
    spec = load_spec(path)
    store = Store(spec.storage)
    write_spec_data(spec, store)
    before = {(s.kind, s.method, s.animal_fraction, s.finetune_fraction): s.key for s in build_plan(plain, store).stages}
    plan = build_plan(spec, store)
    after = {(s.kind, s.method, s.animal_fraction, s.finetune_fraction): s for s in plan.stages}
    assert {k: after[k].key for k in before} == before  # nothing that ran before runs again
    probes = [s for s in plan.stages if s.method == "probe"]
    pre = {s.key for s in plan.stages if s.kind == "pretrain"}
    assert len(probes) == 2 * 2 and {s.parent for s in probes} == pre  # 2 fractions x 2 sizes
    assert all(s.job.head == "probe" and s.job.recipe.epochs == 1 and s.job_type == "probe" for s in probes)
    assert all(s.job.init_checkpoint == store.checkpoint(s.parent) for s in probes)
    (rand,) = [s for s in plan.stages if s.method == "random_probe" and s.finetune_fraction == 1.0]
    assert rand.parent is None and rand.job.model == "scratch" and rand.job.head == "probe"
    assert rand.run_name == "base random_probe n1.00 s0" and probes[0].run_name.startswith("probe f")
    assert len({s.key for s in plan.stages}) == len(plan.stages)
    assert spec.effect.design().scratch == "random_probe"
    # The planned job runs as it is (random features: no parent needed).
    write_plan_inputs(plan, store)
    result = run_local(rand.job.model_copy(update={"tracking": None}))
    assert 0.0 <= result.metrics["test_iou_binary"] <= 1.0
    # A probe baseline or endpoint without a probe recipe is one line.
    bad = yaml.safe_load(path.read_text())
    del bad["probe"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    assert main(["plan", str(tmp_path / "c.yaml")]) == 2
    assert "baselines: random_probe needs a probe: section" in capsys.readouterr().err


def test_the_effect_of_a_probe_endpoint_reads_the_probes():
    import pandas as pd

    from mixsweep.report.analyze import paper_table
    from mixsweep.report.effect import EffectDesign, effect

    rows = []
    for seed in range(4):
        for f in (0.0, 1.0):
            rows.append({"kind": "finetune", "method": "probe", "status": "done", "seed": seed, "animal_fraction": f,
                         "finetune_fraction": 1.0, "test_iou_binary": 0.4 + 0.1 * f + 0.01 * seed})
            rows.append({"kind": "finetune", "method": "mae", "status": "done", "seed": seed, "animal_fraction": f,
                         "finetune_fraction": 1.0, "test_iou_binary": 0.6 - 0.01 * f * seed})
        rows.append({"kind": "finetune", "method": "random_probe", "status": "done", "seed": seed,
                     "animal_fraction": float("nan"), "finetune_fraction": 1.0, "test_iou_binary": 0.35})
    results = pd.DataFrame(rows)
    entries = effect(results, EffectDesign(method="probe", direction="increase", scratch="random_probe"))
    primary, transfer = entries[0], entries[-1]
    assert primary["method"] == "probe" and primary["diff"] == pytest.approx(0.1) and primary["effect"] == "detected"
    assert transfer["role"] == "transfer" and transfer["compared"] == "random_probe"
    assert transfer["diff"] == pytest.approx(0.5 + 0.015 - 0.35)
    (mae,) = [e for e in effect(results, EffectDesign(direction="increase")) if e["role"] == "primary"]
    assert mae["method"] == "mae" and mae["diff"] == pytest.approx(-0.015)
    labels = list(paper_table(results)["method"])
    assert labels.index("Probe, random encoder") < labels.index("Probe F=0.00") < labels.index("Finetuned F=0.00")
