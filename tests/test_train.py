"""Training jobs without Ray: config validation, kill-and-resume, fine-tuning and baselines."""

from __future__ import annotations

import pytest
import torch

from conftest import crash_in_epoch, finetune_config, pretrain_config
from mixsweep.cli import main
from mixsweep.errors import MixsweepError
from mixsweep.train.config import load_job, parse_job
from mixsweep.train.loop import load_state, read_metrics
from mixsweep.train.launch import run_local


def _final_state(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_epoch*"))
    return load_state(ckpts[-1])


def test_kill_and_resume_matches_an_uninterrupted_run(train_inputs, tmp_path):
    straight = run_local(parse_job(pretrain_config(train_inputs, tmp_path, "straight")))
    job = parse_job(pretrain_config(train_inputs, tmp_path, "killed"))
    with crash_in_epoch(2), pytest.raises(RuntimeError, match="injected failure in epoch 2"):
        run_local(job)
    assert [m["epoch"] for m in read_metrics(tmp_path / "killed")] == [0, 1]
    ckpts = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch0000", "checkpoint_epoch0001"]  # keep 2
    with crash_in_epoch(2):  # fires on a first attempt only
        resumed = run_local(job)  # same name and storage: continues at epoch 2
    epochs = [m["epoch"] for m in read_metrics(tmp_path / "killed")]
    assert epochs == [0, 1, 2], "an epoch was repeated or skipped"
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    # Finished: only the final checkpoint is left, and it holds the weights alone.
    assert [p.name for p in ckpts.iterdir()] == ["checkpoint_epoch0002"] and "optimizer" not in b
    # Same process, same ops on a CPU: resumed weights are bit-identical to the uninterrupted run's.
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]
    assert (tmp_path / "killed" / "pictures" / "reconstructions_epoch0002.png").is_file()
    # Rerunning a finished job trains nothing, logs nothing new and gives the same answer.
    again = run_local(job)
    assert again.metrics == resumed.metrics
    assert [m["epoch"] for m in read_metrics(tmp_path / "killed")] == [0, 1, 2]


def test_local_mode_writes_each_checkpoint_once_and_keeps_the_newest(train_inputs, tmp_path, monkeypatch):
    """Written in place and renamed, never copied; keep_checkpoints of them while the job runs."""
    from mixsweep.train import loop

    def no_copy(*args):
        raise AssertionError("a checkpoint was copied: written twice")

    monkeypatch.setattr(loop, "copy_atomic", no_copy)
    job = parse_job(pretrain_config(train_inputs, tmp_path, "once", keep_checkpoints=1))
    with crash_in_epoch(2), pytest.raises(RuntimeError, match="injected failure"):
        run_local(job)
    assert [p.name for p in (tmp_path / "once" / "checkpoints").iterdir()] == ["checkpoint_epoch0001"]
    assert "optimizer" in load_state(tmp_path / "once" / "checkpoints" / "checkpoint_epoch0001")


def test_a_weights_only_checkpoint_cannot_resume_an_unfinished_job(train_inputs, tmp_path):
    short = pretrain_config(train_inputs, tmp_path, "grown")
    short["recipe"]["epochs"] = 1
    run_local(parse_job(short))
    longer = parse_job(pretrain_config(train_inputs, tmp_path, "grown"))  # same run folder, 3 epochs
    with pytest.raises(MixsweepError, match=r"checkpoint_epoch0000: holds the weights of epoch 0 only"):
        run_local(longer)


def test_checkpoint_policy_by_epochs_or_by_time():
    from mixsweep.train.loop import CheckpointPolicy

    by_epochs = CheckpointPolicy(every_epochs=5)
    assert [e for e in range(12) if by_epochs.due(e, 0.0)] == [4, 9] and by_epochs.saves(150, 1.0) == 29
    by_time = CheckpointPolicy(every_epochs=None, every_s=600)
    assert not by_time.due(3, 599.0) and by_time.due(3, 600.0)
    assert by_time.saves(100, 30.0) == 4  # a save every 20 epochs of 30 s, the final one not counted
    assert by_time.saves(100, 5.0) == 0  # a stage shorter than the interval saves only its final weights


def test_resume_drops_epochs_logged_after_the_last_checkpoint(train_inputs, tmp_path):
    job = parse_job(pretrain_config(train_inputs, tmp_path, "sparse", checkpoint_every=2))
    with crash_in_epoch(1), pytest.raises(RuntimeError, match="injected failure"):
        run_local(job)
    assert [m["epoch"] for m in read_metrics(tmp_path / "sparse")] == [0]  # logged, but no checkpoint yet
    run_local(job)  # no checkpoint to resume from: starts over at epoch 0, and logs it once
    assert [m["epoch"] for m in read_metrics(tmp_path / "sparse")] == [0, 1, 2]


@pytest.fixture(scope="module")
def pretrained(train_inputs, tmp_path_factory):
    storage = tmp_path_factory.mktemp("pretrained")
    run_local(parse_job(pretrain_config(train_inputs, storage, "pt")))
    return sorted((storage / "pt" / "checkpoints").glob("checkpoint_epoch*"))[-1] / "state.pt"


@pytest.mark.parametrize("model", ["mae", "scratch", "resnet50"])
def test_finetune_and_baselines_report_test_metrics(train_inputs, pretrained, tmp_path, model):
    cfg = finetune_config(train_inputs, tmp_path, f"ft-{model}", model=model,
                          init=pretrained if model == "mae" else None)
    if model == "resnet50":
        cfg["recipe"]["epochs"] = 1
    out = run_local(parse_job(cfg)).metrics
    for key in ("test_loss", "test_accuracy", "test_iou_binary", "test_miou", "val_miou"):
        assert key in out and out[key] == out[key], key  # present and not NaN
    assert 0.0 <= out["test_miou"] <= 1.0
    assert (tmp_path / f"ft-{model}" / "pictures").glob("segmentations_*.png")


def test_finetune_starts_from_the_pretrained_encoder(train_inputs, pretrained):
    from mixsweep.models.segment import build_segmenter

    seg = build_segmenter("mae", preset="tiny", mae_checkpoint=pretrained)
    state = load_state(pretrained)["model"]
    assert torch.equal(seg.mae.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_gradient_accumulation_halves_the_optimizer_steps(train_inputs, tmp_path):
    steps = {}
    for accum in (1, 2):
        cfg = pretrain_config(train_inputs, tmp_path, f"accum{accum}")
        cfg["recipe"].update(epochs=1, batch_size=16, accum_iter=accum)
        run_local(parse_job(cfg))
        steps[accum] = read_metrics(tmp_path / f"accum{accum}")[0]["step"]
    assert steps == {1: 60 // 16, 2: (60 // 8) // 2}
    cfg = pretrain_config(train_inputs, tmp_path, "odd")
    cfg["recipe"].update(batch_size=15, accum_iter=2)
    with pytest.raises(MixsweepError, match="batch_size 15 is not divisible by workers × accum_iter"):
        run_local(parse_job(cfg))


def test_config_errors_are_one_line_naming_file_and_key(tmp_path, train_inputs):
    cfg = pretrain_config(train_inputs, tmp_path, "x")
    cases = [
        ({**cfg, "recipee": {}}, "recipee: unknown key"),
        ({**cfg, "recipe": {"epochs": 0}}, "recipe.epochs: Input should be greater than 0"),
        ({**cfg, "preset": "huge"}, "preset: unknown preset 'huge' (choose from base, small, tiny)"),
        ({**cfg, "run": {"name": "has space"}}, "run.name: String should match pattern"),
    ]
    for data, message in cases:
        path = tmp_path / "job.yaml"
        import yaml

        path.write_text(yaml.safe_dump(data))
        with pytest.raises(MixsweepError) as e:
            load_job(path)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    ft = finetune_config(train_inputs, tmp_path, "y", model="mae")
    with pytest.raises(MixsweepError, match="model 'mae' needs init_checkpoint"):
        parse_job(ft, "ft.yaml")


def test_pretraining_can_start_from_an_encoder_only_file(train_inputs, pretrained, tmp_path):
    # An official mae_pretrain_vit_base.pth holds the encoder only: write one in that form.
    full = load_state(pretrained)["model"]
    encoder = {k: v for k, v in full.items() if not k.startswith("decoder") and k != "mask_token"}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_tiny.pth")
    cfg = pretrain_config(train_inputs, tmp_path, "cont")
    cfg.update(init_checkpoint=str(tmp_path / "mae_pretrain_tiny.pth"), mae_init="encoder")
    cfg["recipe"]["epochs"] = 1
    from mixsweep.train.loop import local_world
    from mixsweep.train.pretrain import PretrainTask
    from mixsweep.train.launch import prepare_data

    job = parse_job(cfg)
    task = PretrainTask(job, prepare_data(job), local_world(tmp_path / "w"))
    assert torch.equal(task.model.blocks[1].mlp.fc1.weight, full["blocks.1.mlp.fc1.weight"])
    assert not torch.equal(task.model.decoder_pred.weight, full["decoder_pred.weight"])


def test_damaged_checkpoint_is_a_clear_error(tmp_path, pretrained):
    bad = tmp_path / "state.pt"
    bad.write_bytes(pretrained.read_bytes()[:1000])
    with pytest.raises(MixsweepError, match="not a readable checkpoint"):
        load_state(bad)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(MixsweepError, match="text.pt: not a readable checkpoint"):
        load_state(tmp_path / "text.pt")


def test_cli_train_local(train_inputs, tmp_path, capsys):
    import yaml

    cfg = pretrain_config(train_inputs, tmp_path, "cli")
    cfg["recipe"]["epochs"] = 1
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "pretrain", str(path), "--local"]) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out
    assert [m["epoch"] for m in read_metrics(tmp_path / "cli")] == [0]
    path.write_text(yaml.safe_dump({**cfg, "kind": "finetune"}))
    assert main(["train", "pretrain", str(path), "--local"]) == 2
    assert "kind: the file says 'finetune', the command says 'pretrain'" in capsys.readouterr().err
