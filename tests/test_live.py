"""The live W&B run of a training job, without Ray: logged by epoch as it trains, failed runs marked failed, a
resumed job continuing the same run with each epoch once. Offline runs are read back with wandb's own reader."""

from __future__ import annotations

import pytest

from conftest import crash_in_epoch, pretrain_config
from mixsweep import tracking
from mixsweep.train.config import parse_job
from mixsweep.train.launch import run_local


def live(root, run_id: str = "pt-live0") -> dict:
    return {"mode": "offline", "root": str(root), "run_id": run_id, "name": "pre f0.50 s0", "group": "g",
            "job_type": "pretrain", "tags": ["pretrain", "f0.50", "s0"], "flush_s": 1.0,
            "config": {"animal_fraction": 0.5, "seed": 0}}


def test_a_failed_then_resumed_job_is_one_run_with_each_epoch_once(train_inputs, tmp_path):
    cfg = pretrain_config(train_inputs, tmp_path / "runs", "live")
    cfg["tracking"] = live(tmp_path)
    with crash_in_epoch(2), pytest.raises(RuntimeError, match="injected failure in epoch 2"):
        run_local(parse_job(cfg))
    first = tracking.run_folders(tmp_path, "pt-live0")
    assert len(first) == 1
    failed = tracking.read_offline_run(first[0])
    assert failed["exit_code"] == 1 and "injected failure in epoch 2" in failed["summary"]["error"]
    assert [r["_step"] for r in failed["history"]] == [0, 1]

    out = run_local(parse_job(cfg))  # resumes from epoch 1's checkpoint: trains epoch 2 only
    folders = tracking.run_folders(tmp_path, "pt-live0")
    assert len(folders) == 2
    runs = [tracking.read_offline_run(f) for f in folders]
    assert {r["run_id"] for r in runs} == {"pt-live0"}
    steps = [r["_step"] for run in runs for r in run["history"]]
    assert sorted(steps) == [0, 1, 2], steps  # each epoch once over both attempts, none missing
    done = runs[-1]
    assert done["exit_code"] == 0 and done["name"] == "pre f0.50 s0" and done["group"] == "g"
    assert done["config"]["animal_fraction"] == 0.5
    # the summary carries the last epoch's metrics, and the final pictures came with it
    assert done["summary"]["val_loss"] == pytest.approx(out.metrics["val_loss"])
    assert any(k.startswith("pictures/") for k in done["history"][-1])


def test_an_unwritable_wandb_root_is_one_warning_and_training_goes_on(train_inputs, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the wandb folder would go")
    cfg = pretrain_config(train_inputs, tmp_path / "runs", "nowandb")
    cfg["recipe"]["epochs"] = 1
    cfg["tracking"] = live(blocked, "pt-live1")
    with pytest.warns(tracking.TrackingWarning, match="W&B: stage pt-live1 not logged live"):
        out = run_local(parse_job(cfg))
    assert out.metrics["epoch"] == 0


def test_a_folder_killed_before_its_log_existed_reads_as_empty(tmp_path):
    folder = tmp_path / "wandb" / "offline-run-20260101_000000-pt-x"
    (folder / "files").mkdir(parents=True)
    run = tracking.read_offline_run(folder)
    assert run["run_id"] is None and run["history"] == [] and run["exit_code"] is None
    assert tracking.run_folders(tmp_path, "pt-x") == [folder]


def test_a_wandb_service_started_by_another_process_is_not_joined(monkeypatch):
    import os

    monkeypatch.setenv("WANDB_SERVICE", "3-1-unix-/tmp/some-other-process.sock")  # pid 1 started it
    tracking._drop_inherited_service()
    assert "WANDB_SERVICE" not in os.environ
    own = f"3-{os.getpid()}-unix-/tmp/ours.sock"
    monkeypatch.setenv("WANDB_SERVICE", own)
    tracking._drop_inherited_service()
    assert os.environ["WANDB_SERVICE"] == own
