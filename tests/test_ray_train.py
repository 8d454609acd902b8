"""Ray Train V2 jobs on a local Ray instance: 2-worker CPU DDP, failure + resume, fine-tuning, refusals.

Ray start-up and trainer start cost tens of seconds here, so these are few and each checks a lot.
"""

from __future__ import annotations

import pytest
import torch

from conftest import finetune_config, pretrain_config
from mixsweep.errors import MixsweepError
from mixsweep.train.config import ScalingSettings, parse_job
from mixsweep.train.loop import load_state, read_metrics
from mixsweep.train.ray_jobs import check_resources, run_with_ray

TWO_WORKERS = {"num_workers": 2, "cpus_per_worker": 1}


@pytest.fixture(scope="module")
def ddp_runs(ray_local, train_inputs, tmp_path_factory):
    """The same 2-worker pre-training twice: once straight, once with a worker failure after epoch 0."""
    storage = tmp_path_factory.mktemp("ray-runs")
    out = {}
    for name, run in (("straight", {}), ("failed", {"fail_after_epoch": 0, "max_failures": 1})):
        cfg = pretrain_config(train_inputs, storage, name, **run)
        cfg["scaling"] = TWO_WORKERS
        out[name] = run_with_ray(parse_job(cfg))
    return out


def test_two_worker_ddp_recovers_from_a_failure_and_matches(ddp_runs):
    straight, failed = ddp_runs["straight"], ddp_runs["failed"]
    # Ray restarted the worker group from the epoch-0 checkpoint: every epoch once, in order.
    assert [m["epoch"] for m in read_metrics(failed["run_dir"])] == [0, 1, 2]
    assert [m["epoch"] for m in read_metrics(straight["run_dir"])] == [0, 1, 2]
    a, b = load_state(straight["checkpoint"]), load_state(failed["checkpoint"])
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    # gloo all-reduce of two ranks on a CPU is deterministic, so the resumed run ends bit-identical.
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=0, atol=1e-7), k
    # Both ranks trained, each on its half of the rows with half of the effective batch.
    steps_per_epoch = read_metrics(straight["run_dir"])[0]["step"]
    assert steps_per_epoch == (60 // 2) // 4  # 60 train images over 2 ranks, batch 8 = 4 per worker
    assert (straight["run_dir"] / "pictures" / "reconstructions_epoch0002.png").is_file()


def test_two_worker_finetune_from_the_ray_checkpoint(ray_local, train_inputs, ddp_runs, tmp_path):
    ckpt = ddp_runs["straight"]["checkpoint"]
    cfg = finetune_config(train_inputs, tmp_path, "ft", model="mae", init=f"{ckpt}/state.pt")
    cfg["scaling"] = TWO_WORKERS
    out = run_with_ray(parse_job(cfg))
    metrics = out["metrics"]
    assert metrics["epoch"] == 1 and 0.0 <= metrics["test_miou"] <= 1.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert [m["epoch"] for m in read_metrics(out["run_dir"])] == [0, 1]
    assert list((out["run_dir"] / "pictures").glob("segmentations_epoch0001.png"))


def test_infeasible_request_is_refused_before_launch(ray_local):
    with pytest.raises(MixsweepError, match=r"scaling: 3 workers × \(3 CPU\) cannot be placed; the cluster has 4 CPU"):
        check_resources(ScalingSettings(num_workers=3, cpus_per_worker=3))
    with pytest.raises(MixsweepError, match="GPU"):
        check_resources(ScalingSettings(num_workers=1, use_gpu=True))
    check_resources(ScalingSettings(num_workers=2, cpus_per_worker=2))  # exactly fits: no error
