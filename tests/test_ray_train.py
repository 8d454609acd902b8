"""Ray Train V2 jobs on the session's 3-node Ray cluster: 2-worker CPU DDP spread over two nodes and packed on
one with a worker SIGKILLed mid-epoch, fine-tuning, refusals.

Ray start-up and trainer start cost tens of seconds here, so these are few and each checks a lot.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from conftest import finetune_config, node_ids, pretrain_config
from mixsweep import tracking
from mixsweep.errors import MixsweepError
from mixsweep.train.config import ScalingSettings, parse_job
from mixsweep.train.loop import load_state, read_metrics
from mixsweep.train.cluster import check_resources
from mixsweep.train.launch import run_with_ray
from mixsweep.train.placement import read_placement


def two_workers(strategy: str = "PACK") -> dict:
    return {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": strategy}


def kill_a_worker_mid_epoch(run_dir, seen: dict, timeout: float = 180) -> None:
    """SIGKILL rank 1 as soon as epoch 0 is logged and checkpointed, i.e. while epoch 1 (or, on a busy
    machine, epoch 2) runs; record what was logged then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        placement = {w["rank"]: w["pid"] for w in read_placement(run_dir)}
        logged = [m["epoch"] for m in read_metrics(run_dir)] if (run_dir / "metrics.jsonl").is_file() else []
        if len(logged) >= 3:
            seen.update(too_late=logged)
            return
        if logged and 1 in placement and list(run_dir.glob("checkpoint_*/state.pt")):
            os.kill(placement[1], signal.SIGKILL)
            seen.update(pid=placement[1], logged=logged)
            return
        time.sleep(0.05)  # the polls share the 2 cores with the run they watch


def watch_live_run(root, run_id: str, seen: dict, timeout: float = 180) -> None:
    """Read the stage's offline W&B run (wandb's own reader) until it holds an epoch while the run is still open
    (no exit record yet); record what was read then."""
    deadline = time.time() + timeout
    while time.time() < deadline and "live" not in seen:
        for folder in tracking.run_folders(root, run_id):
            try:
                run = tracking.read_offline_run(folder)
            except Exception:  # the file is being created
                continue
            if run["history"] and run["exit_code"] is None:
                seen["live"] = [r["_step"] for r in run["history"]]
                return
        time.sleep(0.5)  # each read starts wandb-core (~60 ms of CPU)


@pytest.fixture(scope="module")
def ddp_runs(ray_local, train_inputs, tmp_path_factory):
    """The same 2-worker pre-training twice: spread over two nodes, and packed on one node, with its storage
    given as a URI, with rank 1 SIGKILLed after epoch 0's checkpoint. Both log live to W&B (offline) from rank 0.
    (One run both packed and killed: each 2-worker run costs tens of seconds here, and the one comparison of
    weights then shows both that placement and a resume leave the result alone.)"""
    storage = tmp_path_factory.mktemp("ray-runs")
    out = {}
    for name, strategy, run in (("spread", "STRICT_SPREAD", {}), ("killed", "PACK", {"max_failures": 1})):
        cfg = pretrain_config(train_inputs, storage, name, **run)
        cfg["scaling"] = two_workers(strategy)
        cfg["tracking"] = {"mode": "offline", "root": str(storage), "run_id": f"pt-{name}", "flush_s": 0.1}
        seen: dict = {}
        if name == "killed":  # storage as a URI, the way train_storage: s3://... reaches Ray on a cluster
            cfg["run"].update(storage=f"file://{storage}", artifacts=str(storage / name))
            watcher = threading.Thread(target=kill_a_worker_mid_epoch, args=(storage / name, seen), daemon=True)
        else:
            watcher = threading.Thread(target=watch_live_run, args=(storage, "pt-spread", seen), daemon=True)
        watcher.start()
        out[name] = {**vars(run_with_ray(parse_job(cfg))), "seen": seen, "wandb": storage}
        watcher.join(timeout=5)
    return out


def test_the_w_and_b_run_shows_epochs_while_the_stage_trains(ddp_runs):
    spread = ddp_runs["spread"]
    assert spread["seen"].get("live"), "no epoch was in the offline run while the stage still ran"
    assert spread["seen"]["live"][0] == 0
    folders = tracking.run_folders(spread["wandb"], "pt-spread")
    assert len(folders) == 1  # rank 0 alone logs: one run, not one per worker or node
    run = tracking.read_offline_run(folders[0])
    assert [r["_step"] for r in run["history"]] == [0, 1, 2] and run["exit_code"] == 0
    assert run["history"][0]["train_loss"] == pytest.approx(read_metrics(spread["run_dir"])[0]["train_loss"])


def _same_weights(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=0, atol=1e-7), k


def test_spread_over_two_nodes_matches_one_node(ray_local, ddp_runs):
    nodes = node_ids(ray_local)
    packed = {w["node_id"] for w in read_placement(ddp_runs["killed"]["run_dir"])}
    spread = {w["node_id"] for w in read_placement(ddp_runs["spread"]["run_dir"])}
    assert len(packed) == 1 and len(spread) == 2, (packed, spread)
    assert (packed | spread) <= nodes["workers"], "the head node must run no training"
    # gloo's all-reduce of two ranks is the same sum wherever the ranks run, and a resume continues exactly:
    # equal within fp32 rounding.
    _same_weights(load_state(ddp_runs["spread"]["checkpoint"]), load_state(ddp_runs["killed"]["checkpoint"]))
    assert [m["epoch"] for m in read_metrics(ddp_runs["spread"]["run_dir"])] == [0, 1, 2]
    # Both ranks trained, each on its half of the rows with half of the effective batch.
    steps_per_epoch = read_metrics(ddp_runs["spread"]["run_dir"])[0]["step"]
    assert steps_per_epoch == (60 // 2) // 4  # 60 train images over 2 ranks, batch 8 = 4 per worker
    assert (ddp_runs["spread"]["run_dir"] / "pictures" / "reconstructions_epoch0002.png").is_file()


def test_worker_sigkill_mid_epoch_resumes_from_checkpoint(ddp_runs):
    killed = ddp_runs["killed"]
    seen = killed["seen"]
    assert seen.get("logged") in ([0], [0, 1]), f"the kill should land after epoch 0's checkpoint, in the run: {seen}"
    # Ray restarted the worker group (new processes) from the newest checkpoint: every epoch once, in order.
    assert seen["pid"] not in {w["pid"] for w in read_placement(killed["run_dir"])}
    assert [m["epoch"] for m in read_metrics(killed["run_dir"])] == [0, 1, 2]
    _same_weights(load_state(ddp_runs["spread"]["checkpoint"]), load_state(killed["checkpoint"]))
    # The restarted group's rank 0 resumed the same W&B run: every epoch once over the attempts' files.
    runs = [tracking.read_offline_run(f) for f in tracking.run_folders(killed["wandb"], "pt-killed")]
    # (the killed attempt's file may hold nothing: wandb had not flushed it yet)
    assert 1 <= len(runs) <= 2 and {r["run_id"] for r in runs} - {None} == {"pt-killed"}
    assert sorted(r["_step"] for run in runs for r in run["history"]) == [0, 1, 2]
    assert runs[-1]["exit_code"] == 0


def test_two_worker_finetune_from_the_ray_checkpoint(ray_local, train_inputs, ddp_runs, tmp_path):
    ckpt = ddp_runs["spread"]["checkpoint"]
    cfg = finetune_config(train_inputs, tmp_path, "ft", model="mae", init=f"{ckpt}/state.pt")
    cfg["scaling"] = two_workers()
    out = vars(run_with_ray(parse_job(cfg)))
    metrics = out["metrics"]
    assert metrics["epoch"] == 1 and 0.0 <= metrics["test_miou"] <= 1.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert [m["epoch"] for m in read_metrics(out["run_dir"])] == [0, 1]
    assert list((out["run_dir"] / "pictures").glob("segmentations_epoch0001.png"))


def test_infeasible_request_is_refused_before_launch(ray_local):
    # No autoscaler config on this cluster: only its alive nodes count, and the refusal says so.
    with pytest.raises(MixsweepError, match=r"scaling: 3 workers × \(3 CPU\) cannot be placed; the cluster has 4 CPU "
                                            r"over 3 node\(s\), room for 0 such worker\(s\), and no autoscaler config"):
        check_resources(ScalingSettings(num_workers=3, cpus_per_worker=3))
    # 4 CPUs in all, but 2 per node: two 2-CPU workers fit, three do not.
    with pytest.raises(MixsweepError, match="room for 2 such worker"):
        check_resources(ScalingSettings(num_workers=3, cpus_per_worker=2))
    with pytest.raises(MixsweepError, match="GPU"):
        check_resources(ScalingSettings(num_workers=1, use_gpu=True))
    with pytest.raises(MixsweepError, match="0 accelerator_type:H100"):
        check_resources(ScalingSettings(num_workers=1, resources={"accelerator_type:H100": 0.001}))
    check_resources(ScalingSettings(num_workers=2, cpus_per_worker=2))  # exactly fits: no error
