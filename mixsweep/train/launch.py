"""Launch a training job: in this process without Ray (`run_local`), inside a Ray Tune trial (`run_in_trial`),
or as a Ray Train V2 `TorchTrainer` (`run_with_ray`). All three train the same `fit` and return a `JobResult`.

Ray is imported only inside functions here: the training code itself (loop, pretrain, finetune) never
imports it, so the same jobs run on a GPU host with no Ray installed (`run_local`).

A sweep stage with one CPU worker trains inside its Tune trial: a TorchTrainer would start a controller and
a worker group (tens of seconds here) to run the same loop in one other process. Stages with several workers
or a GPU keep the TorchTrainer. Both write the same checkpoint folders under storage/name and resume from the
newest complete one.

Before launching: the config is already validated, the data pack is built on the driver (workers only
open it), and the init checkpoint is read once, so a damaged input stops the job before any GPU starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mixsweep.errors import Diverged
from mixsweep.train.config import FinetuneJob, PretrainJob, ScalingSettings
from mixsweep.train.loop import World, latest_local_checkpoint, local_world
from mixsweep.train.placement import clear_loop_timing, read_loop_timing, read_placement, write_loop_timing
from mixsweep.train.storage import artifact_dir, keep_only, resume_checkpoint, storage_root

# Ray Train's controller polls its workers every 2 s by default, and a worker's report waits for the poll
# that takes the one before it: a stage then idles its workers up to 2 s per close pair of reports and ~3 s
# at its end (benchmarks/stage_overhead.py). 0.5 s costs the controller a few RPCs a second. A value the
# user set is kept.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.5"


@dataclass
class JobResult:
    """What a finished job leaves: its last epoch's metrics, where its files are, and how long it trained."""

    metrics: dict
    run_dir: Path  # metrics.jsonl, pictures/, workers/
    checkpoint: str | None  # the newest checkpoint: a local folder, or a URI on object storage
    loop_s: float | None  # rank 0's time inside `fit` (None when unknown)
    loop_parts: dict = field(default_factory=dict)  # its parts: first_step_s, eval_s, checkpoint_s (World.timing)
    started_at: float | None = None  # when rank 0 started and finished this attempt's job (epoch seconds)
    finished_at: float | None = None
    in_trial: bool = False  # trained inside its Tune trial's process
    live: object | None = None  # the stage's live W&B run, left open for the caller (in-trial stages)

    def placement(self) -> list[dict]:
        """Each rank's node, process, device and versions (workers/rank<r>.json); empty without Ray."""
        return read_placement(self.run_dir)


def prepare_data(job) -> Path:
    """Build the job's pack on the driver, and read its init checkpoint once: a damaged file stops the job
    here, before any worker (or GPU) starts."""
    if getattr(job, "init_checkpoint", None) is not None:
        from mixsweep.train.loop import load_state

        load_state(job.init_checkpoint)
    if job.kind == "pretrain":
        from mixsweep.train.pretrain import prepare_pretrain_data

        return prepare_pretrain_data(job)
    from mixsweep.train.finetune import prepare_finetune_data

    return prepare_finetune_data(job)


def run_job_in_world(job, pack: Path | str, world: World, keep_open: bool = False) -> dict:
    """Train the job in `world`, logging it live to W&B from rank 0 when the job names a run (job.tracking).
    `keep_open` leaves that run open in world.live, for the caller to add artifacts and finish it."""
    from mixsweep.train.live import open_live_run

    live = open_live_run(job, world)
    if live is not None:
        world.report = live.wrap_report(world.report)
    try:
        if job.kind == "pretrain":
            from mixsweep.train.pretrain import run_pretrain

            metrics = run_pretrain(job, pack, world)
        else:
            from mixsweep.train.finetune import run_finetune

            metrics = run_finetune(job, pack, world)
    except BaseException as e:
        if live is not None:
            text = str(e).strip()
            live.close(error=f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}")
            try:
                e.wandb_logged = True  # the sweep then logs no second failed run
            except AttributeError:
                pass
        raise
    if live is not None:
        if keep_open:
            world.live = live
        else:
            live.close(summary=metrics)
    return metrics


def run_local(job: PretrainJob | FinetuneJob) -> JobResult:
    """The job in this process, no Ray: resumes from the last checkpoint under <run folder>/checkpoints."""
    pack = prepare_data(job)
    run_dir = artifact_dir(job, storage_root(job))
    world = local_world(run_dir, job.run.device, keep=job.run.keep_checkpoints)
    started = time.time()
    metrics = run_job_in_world(job, pack, world)
    newest = latest_local_checkpoint(run_dir)
    return JobResult(metrics=metrics, run_dir=run_dir, checkpoint=str(newest) if newest else None,
                     loop_s=world.loop_seconds, loop_parts=dict(world.timing), started_at=started,
                     finished_at=time.time())


def runs_in_trial(scaling: ScalingSettings) -> bool:
    """A stage this small trains in its Tune trial's own process: one worker, no GPU."""
    return scaling.num_workers == 1 and not scaling.use_gpu


def run_in_trial(job: PretrainJob | FinetuneJob) -> JobResult:
    """Train a one-CPU-worker job in this Tune trial (which holds the worker's resources); a rerun, or Tune's
    retry after the process died, resumes from the newest complete checkpoint under storage/name."""
    import torch

    from mixsweep.train.ray_worlds import trial_world

    storage = storage_root(job)
    pack = prepare_data(job)
    run_dir = artifact_dir(job, storage)
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    world = trial_world(run_dir, job.run.device, storage, job.run.name, keep=job.run.keep_checkpoints)
    started = time.time()
    metrics = run_job_in_world(job, pack, world, keep_open=True)
    finished = time.time()
    final = resume_checkpoint(storage, job.run.name, None, 0)  # the newest (a local copy if storage is a URI)
    return JobResult(metrics=metrics, run_dir=run_dir, checkpoint=str(final) if final else None,
                     loop_s=world.loop_seconds, loop_parts=dict(world.timing), started_at=started,
                     finished_at=finished, in_trial=True,
                     live=world.live)


def train_loop_per_worker(config: dict) -> None:
    """What each Ray Train worker runs: rebuild the job from plain data and run it in a Ray world."""
    from mixsweep.train.config import parse_job
    from mixsweep.train.ray_worlds import ray_world

    job = parse_job(config["job"], config["source"])
    world = ray_world(Path(config["run_dir"]), job.run.device, config["storage"], job.run.name)
    started = time.time()
    diverged = ""
    try:
        run_job_in_world(job, config["pack"], world)
    except Diverged as e:  # every rank sees the same reduced loss; Ray Train must not retry a deterministic end
        diverged = str(e)
    if world.is_main:
        write_loop_timing(world.run_dir, world.loop_seconds, started, time.time(), diverged, world.timing)


def run_with_ray(job: PretrainJob | FinetuneJob, source: str = "<config>", address: str | None = None,
                 callbacks: list | None = None, check: bool = True) -> JobResult:
    """Launch the job as a TorchTrainer; a rerun with the same run.name and storage resumes it.

    `callbacks` go to the trainer's RunConfig (e.g. Tune's TuneReportCallback inside a Tune trial). `check`
    joins the cluster and refuses a request it can never hold (a sweep checks once for all its stages).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from mixsweep.train.torch_backend import DeviceAwareTorchConfig

    storage = storage_root(job)
    pack = prepare_data(job)
    if check:
        from mixsweep.train.cluster import check_resources, ensure_ray

        ensure_ray(address)
        check_resources(job.scaling)
    s = job.scaling
    run_dir = artifact_dir(job, storage)
    clear_loop_timing(run_dir)
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S)  # the trainer passes it to its controller
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.model_dump(mode="json"), "source": source, "pack": str(pack),
                           "run_dir": str(run_dir), "storage": storage},
        torch_config=DeviceAwareTorchConfig(),
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker=s.resources_per_worker(),
                                               placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(
            name=job.run.name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=job.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=job.run.keep_checkpoints),
            callbacks=callbacks or None,
        ),
    )
    result = trainer.fit()
    timing = read_loop_timing(run_dir)
    if timing.get("diverged"):
        raise Diverged(timing["diverged"])
    if result.checkpoint is not None:  # finished: the weights-only final is all anything reads
        keep_only(storage, job.run.name, result.checkpoint.path)
    return JobResult(metrics=dict(result.metrics or {}),
                     checkpoint=result.checkpoint.path if result.checkpoint else None, run_dir=run_dir,
                     loop_s=timing.get("loop_s"), loop_parts=timing.get("parts", {}),
                     started_at=timing.get("started_at"),
                     finished_at=timing.get("finished_at"))
