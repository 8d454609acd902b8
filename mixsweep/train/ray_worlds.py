"""The two Worlds a job trains in under Ray: a Ray Train worker (`ray_world`) and a Tune trial that is its own
one CPU worker (`trial_world`). Both write the same checkpoint folders under storage/name, resume from the
newest complete one, and log each epoch to metrics.jsonl before reporting it, so a kill in between re-runs an
epoch and never loses a line."""

from __future__ import annotations

import warnings
from pathlib import Path

from mixsweep.errors import MixsweepError
from mixsweep.train.loop import (World, append_metrics, pick_device, remove_staging, staging_folder,
                                  truncate_metrics)
from mixsweep.train.placement import record_placement
from mixsweep.train.storage import keep_only, local_run_folder, resume_checkpoint, save_checkpoint_to_storage


def ray_world(run_dir: Path, device_pref: str, storage: str, name: str) -> World:
    """The World of one Ray Train worker: rank from the train context, reports through ray.train.report."""
    import ray.train
    import ray.train.torch

    import torch

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if device_pref != "cpu" else pick_device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():  # a GPU in Ray's books only (torch_backend)
        warnings.warn(f"run {name}: Ray gave rank {rank} GPU {ray.get_gpu_ids()} but torch sees no CUDA device "
                      f"on node {ray.get_runtime_context().get_node_id()[:12]}: it trains on the CPU")
        device = pick_device("cpu")
    if device.type == "cpu" and device_pref == "cuda":
        raise MixsweepError("run.device: 'cuda' requested but the worker got no GPU (set scaling.use_gpu)")
    resume_from = resume_checkpoint(storage, name, ray.train.get_checkpoint(), rank)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir, resume_from)
    record_placement(run_dir, rank, device)

    def report(metrics: dict, folder: Path | None, final: bool) -> None:
        if rank == 0:
            append_metrics(run_dir, metrics)
        ckpt = ray.train.Checkpoint.from_directory(str(folder)) if folder is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def wrap(model):
        return ray.train.torch.prepare_model(model, move_to_device=False) if world_size > 1 else model

    return World(rank=rank, world_size=world_size, device=device, run_dir=run_dir, report=report,
                 resume_from=resume_from, wrap_model=wrap)


def trial_world(run_dir: Path, device_pref: str, storage: str, name: str, keep: int = 2) -> World:
    """The World of a stage trained inside its Tune trial: rank 0 of 1, metrics to Tune and metrics.jsonl,
    checkpoints to storage/name, resumed from the newest complete one there (left by an earlier attempt of
    this trial, or by a `mixsweep run` that was killed)."""
    import ray.tune

    if device_pref == "cuda":
        raise MixsweepError("run.device: 'cuda' requested but the worker got no GPU (set scaling.use_gpu)")
    resume_from = resume_checkpoint(storage, name, None, 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    truncate_metrics(run_dir, resume_from)
    device = pick_device("cpu")
    record_placement(run_dir, 0, device)

    local = local_run_folder(storage, name)
    if local is not None:
        remove_staging(local)

    def report(metrics: dict, folder: Path | None, final: bool) -> None:
        append_metrics(run_dir, metrics)
        if folder is not None:
            saved = save_checkpoint_to_storage(storage, name, folder, keep=keep)
            if final:
                keep_only(storage, name, saved)
        ray.tune.report(metrics)

    stage = (lambda epoch: staging_folder(local, epoch)) if local is not None else None
    return World(rank=0, world_size=1, device=device, run_dir=run_dir, report=report, resume_from=resume_from,
                 stage_checkpoint=stage)
