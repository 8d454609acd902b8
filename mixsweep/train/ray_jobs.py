"""Run a training job as a Ray Train V2 `TorchTrainer`, inside a Ray Tune trial, or in this process without Ray.

Ray is imported only inside functions here: the training code itself (loop, pretrain, finetune) never
imports it, so the same jobs run on a GPU host with no Ray installed (`run_local`).

A sweep stage with one CPU worker trains inside its Tune trial (`run_in_trial`): a TorchTrainer would start a
controller and a worker group (tens of seconds here) to run the same loop in one other process. Stages with
several workers or a GPU keep the TorchTrainer (`run_with_ray`). Both paths run the same `fit`, write the same
checkpoint folders under storage/name and resume from the newest complete one.

Before launching: the config is already validated, the data pack is built on the driver (workers only
open it), and the requested resources are checked against the cluster, because Ray waits forever on a
request it can never satisfy.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mixsweep.errors import MixsweepError
from mixsweep.train.config import FinetuneJob, PretrainJob, ScalingSettings
from mixsweep.train.loop import World, append_metrics, local_world, pick_device, truncate_metrics


def storage_root(job) -> str:
    """Absolute local path (or URI) for Ray's storage_path; checks a local one is writable now."""
    storage = job.run.storage
    if "://" in storage:
        return storage
    root = Path(storage).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MixsweepError(f"run.storage: {root} is not writable ({e.strerror or e})") from None
    return str(root)


def _artifact_dir(job, storage: str) -> Path:
    """Pictures, the metrics log and worker placement: run.artifacts, else beside Ray's checkpoints for
    local storage, else ./runs/<name>."""
    if job.run.artifacts:
        return Path(job.run.artifacts).expanduser().resolve()
    return Path(storage) / job.run.name if "://" not in storage else Path("runs").resolve() / job.run.name


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


def run_local(job: PretrainJob | FinetuneJob) -> dict:
    """The job in this process, no Ray: resumes from the last checkpoint under storage/name/checkpoints."""
    pack = prepare_data(job)
    run_dir = _artifact_dir(job, storage_root(job))
    metrics = run_job_in_world(job, pack, local_world(run_dir, job.run.device))
    return {"metrics": metrics, "run_dir": run_dir}


# --- Ray ------------------------------------------------------------------------------------------------

def alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def worker_slots(scaling: ScalingSettings, nodes: list[dict[str, float]]) -> int:
    """How many of these workers the nodes hold at once, counted node by node (a worker never spans two)."""
    need = scaling.resources_per_worker()
    return sum(min(int(res.get(k, 0) // v) if v else 10**9 for k, v in need.items()) for res in nodes)


def check_resources(scaling: ScalingSettings) -> None:
    """Refuse, with one line, a request the running cluster can never satisfy."""
    need = scaling.resources_per_worker()
    nodes = alive_node_resources()
    fits = worker_slots(scaling, nodes)
    if fits < scaling.num_workers:
        total = {k: sum(res.get(k, 0) for res in nodes) for k in need}
        have = ", ".join(f"{v:g} {k}" for k, v in total.items())
        per = ", ".join(f"{v:g} {k}" for k, v in need.items())
        raise MixsweepError(
            f"scaling: {scaling.num_workers} workers × ({per}) cannot be placed; the cluster has {have} over "
            f"{len(nodes)} node(s), room for {fits} such worker(s)")


def probe_address(address: str, timeout: float = 5.0) -> None:
    """One TCP connect to the cluster's GCS (or Ray Client) port: ray.init itself retries for minutes."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise MixsweepError(f"--address {address}: expected host:port (the head's GCS port, e.g. 10.0.0.5:6379), "
                            "ray://host:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise MixsweepError(f"--address {address}: cannot reach a Ray cluster there ({e.strerror or e}); is the "
                            "head up (`ray up cluster.yaml`, `ray status`)?") from None


def ensure_ray(address: str | None = None, quiet: bool = False) -> None:
    """Join `address` or start a local instance; `quiet` keeps worker logs out of this terminal."""
    import ray

    if ray.is_initialized():
        return
    if address and address != "auto":
        probe_address(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=not quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise MixsweepError(f"--address {address}: cannot reach a Ray cluster ({str(e).splitlines()[0]})") from None


def resume_checkpoint(storage: str, name: str, registered, rank: int) -> Path | None:
    """A local copy of the checkpoint to resume from: Ray's registered one, or a newer complete one in the
    run folder. A driver killed between a worker's report and the controller's bookkeeping leaves a
    checkpoint Ray never registered; without this, the rerun would start the stage over."""
    import pyarrow.fs as pafs
    import ray.train

    from mixsweep.train.loop import load_state

    fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else str(Path(storage).resolve()))
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/{name}", allow_not_found=True))
    after = Path(registered.path).name if registered is not None else ""
    newer = sorted((i.path for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name > after), reverse=True)
    candidates = [ray.train.Checkpoint(p, filesystem=fs) for p in newer] + ([registered] if registered else [])
    for checkpoint in candidates:
        if isinstance(fs, pafs.LocalFileSystem):
            local = Path(checkpoint.path)  # read in place: only read, and no copy left behind in /tmp
        else:  # a local copy per rank: ranks on one node would otherwise share (and race on) one default folder
            local = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"mixsweep-resume-r{rank}-")))
        if checkpoint is registered:
            return local
        try:
            load_state(local)  # an upload cut short by the kill is skipped
            return local
        except MixsweepError:
            continue
    return None


def ray_world(run_dir: Path, device_pref: str, storage: str, name: str) -> World:
    """The World of one Ray Train worker: rank from the train context, reports through ray.train.report."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if device_pref != "cpu" else pick_device("cpu")
    if device.type == "cpu" and device_pref == "cuda":
        raise MixsweepError("run.device: 'cuda' requested but the worker got no GPU (set scaling.use_gpu)")
    resume_from = resume_checkpoint(storage, name, ray.train.get_checkpoint(), rank)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir, resume_from)
    record_placement(run_dir, rank)

    def report(metrics: dict, folder: Path | None) -> None:
        if rank == 0:  # log first, as in local_world: a kill in between re-runs the epoch, loses no line
            append_metrics(run_dir, metrics)
        ckpt = ray.train.Checkpoint.from_directory(str(folder)) if folder is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def wrap(model):
        return ray.train.torch.prepare_model(model, move_to_device=False) if world_size > 1 else model

    return World(rank=rank, world_size=world_size, device=device, run_dir=run_dir, report=report,
                 resume_from=resume_from, wrap_model=wrap)


# --- one CPU worker inside a Tune trial -------------------------------------------------------------------

def runs_in_trial(scaling: ScalingSettings) -> bool:
    """A stage this small trains in its Tune trial's own process: one worker, no GPU."""
    return scaling.num_workers == 1 and not scaling.use_gpu


def save_checkpoint_to_storage(storage: str, name: str, folder: Path, keep: int = 2) -> str:
    """Copy a checkpoint folder to storage/name/checkpoint_<time> (Ray Train's naming, so names sort by age and
    `resume_checkpoint` finds it); keep the newest `keep`. Local storage gets it whole or not at all (a rename);
    on object storage a cut-short upload fails `load_state` and is skipped on resume."""
    import datetime

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else str(Path(storage).resolve()))
    base = f"{root}/{name}"
    dest = f"{base}/checkpoint_{datetime.datetime.now().strftime('%Y-%m-%d_%H-%M-%S.%f')}"
    if isinstance(fs, pafs.LocalFileSystem):
        import shutil

        Path(base).mkdir(parents=True, exist_ok=True)
        tmp = Path(base) / f".{Path(dest).name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        os.replace(tmp, dest)
    else:
        fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(folder), dest, destination_filesystem=fs)
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    for old in names[:-keep]:
        fs.delete_dir(old)
    return dest


def trial_world(run_dir: Path, device_pref: str, storage: str, name: str) -> World:
    """The World of a stage trained inside its Tune trial: rank 0 of 1, metrics to Tune and metrics.jsonl,
    checkpoints to storage/name, resumed from the newest complete one there (left by an earlier attempt of
    this trial, or by a `mixsweep run` that was killed)."""
    import ray.tune

    if device_pref == "cuda":
        raise MixsweepError("run.device: 'cuda' requested but the worker got no GPU (set scaling.use_gpu)")
    resume_from = resume_checkpoint(storage, name, None, 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    truncate_metrics(run_dir, resume_from)
    record_placement(run_dir, 0)

    def report(metrics: dict, folder: Path | None) -> None:
        append_metrics(run_dir, metrics)  # log first, as in the other worlds: a kill in between re-runs the epoch
        if folder is not None:
            save_checkpoint_to_storage(storage, name, folder)
        ray.tune.report(metrics)

    return World(rank=0, world_size=1, device=pick_device("cpu"), run_dir=run_dir, report=report,
                 resume_from=resume_from)


def run_in_trial(job: PretrainJob | FinetuneJob) -> dict:
    """Train a one-CPU-worker job in this Tune trial (which holds the worker's resources); a rerun, or Tune's
    retry after the process died, resumes from the newest complete checkpoint under storage/name."""
    import torch

    storage = storage_root(job)
    pack = prepare_data(job)
    run_dir = _artifact_dir(job, storage)
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    world = trial_world(run_dir, job.run.device, storage, job.run.name)
    metrics = run_job_in_world(job, pack, world, keep_open=True)
    final = resume_checkpoint(storage, job.run.name, None, 0)  # the newest (a local copy if storage is a URI)
    return {"metrics": metrics, "checkpoint": str(final) if final else None, "run_dir": run_dir,
            "loop_s": world.loop_seconds, "live": world.live}


def newest_checkpoint_uri(storage: str, name: str) -> str | None:
    """Where the newest checkpoint of run `name` lives, as a URI (file:// for local storage): what a W&B
    reference artifact points to."""
    import pyarrow.fs as pafs

    local = "://" not in storage
    fs, root = pafs.FileSystem.from_uri(str(Path(storage).resolve()) if local else storage)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/{name}", allow_not_found=True))
    names = sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    if not names:
        return None
    return Path(names[-1]).as_uri() if local else f"{storage.split('://', 1)[0]}://{names[-1]}"


def record_placement(run_dir: Path, rank: int) -> None:
    """workers/rank<r>.json: which node and process this rank runs in (the latest attempt wins)."""
    import socket

    import ray

    folder = run_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "host": socket.gethostname()}
    tmp = folder / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / f"rank{rank}.json")


def read_placement(run_dir: Path | str) -> list[dict]:
    folder = Path(run_dir) / "workers"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))] if folder.is_dir() else []


def train_loop_per_worker(config: dict) -> None:
    """What each Ray Train worker runs: rebuild the job from plain data and run it in a Ray world."""
    from mixsweep.train.config import parse_job

    job = parse_job(config["job"], config["source"])
    world = ray_world(Path(config["run_dir"]), job.run.device, config["storage"], job.run.name)
    run_job_in_world(job, config["pack"], world)
    if world.is_main:
        write_loop_seconds(world.run_dir, world.loop_seconds)


def write_loop_seconds(run_dir: Path, seconds: float) -> None:
    """workers/loop.json: rank 0's time inside `fit` in the attempt that finished (a killed one writes none)."""
    folder = Path(run_dir) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".loop.json.tmp"
    tmp.write_text(json.dumps({"loop_s": seconds}))
    os.replace(tmp, folder / "loop.json")


def read_loop_seconds(run_dir: Path | str) -> float | None:
    path = Path(run_dir) / "workers" / "loop.json"
    return float(json.loads(path.read_text())["loop_s"]) if path.is_file() else None


def run_with_ray(job: PretrainJob | FinetuneJob, source: str = "<config>", address: str | None = None,
                 callbacks: list | None = None, check: bool = True) -> dict:
    """Launch the job as a TorchTrainer; a rerun with the same run.name and storage resumes it.

    `callbacks` go to the trainer's RunConfig (e.g. Tune's TuneReportCallback inside a Tune trial).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    storage = storage_root(job)
    pack = prepare_data(job)
    if check:
        ensure_ray(address)
        check_resources(job.scaling)
    s = job.scaling
    run_dir = _artifact_dir(job, storage)
    (run_dir / "workers" / "loop.json").unlink(missing_ok=True)  # this launch's timing, not an earlier one's
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.model_dump(mode="json"), "source": source, "pack": str(pack),
                           "run_dir": str(run_dir), "storage": storage},
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker=s.resources_per_worker(),
                                               placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(
            name=job.run.name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=job.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or None,
        ),
    )
    result = trainer.fit()
    return {"metrics": result.metrics, "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "run_dir": run_dir, "loop_s": read_loop_seconds(run_dir)}
