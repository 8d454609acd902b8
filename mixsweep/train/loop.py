"""The one training skeleton every job shares: epochs of steps, evaluation, reports, checkpoints, resume.

A job (pre-training, fine-tuning) is a `Task`: it owns its model, loaders, loss and evaluation. `fit` runs
it in a `World`, which says who this process is (rank, world size, device) and how to report metrics and
checkpoints. `local_world` needs no Ray (benchmarks, GPU hosts without Ray, tests); the Ray worlds live in
`mixsweep.train.ray_worlds` and are only imported inside Ray Train workers and Tune trials.

Resume: a checkpoint holds model, optimizer, scheduler, epoch, step and RNG states. Loaders and masking
noise draw from generators seeded by (seed, epoch, rank), so a run resumed at epoch k+1 sees the same
batches and masks as one that never stopped, and reports each epoch exactly once. The last epoch's
checkpoint holds the weights only (a third of the bytes for AdamW): nothing resumes a finished job.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mixsweep.checkpoint import STATE_FILE, read_checkpoint
from mixsweep.errors import Diverged, MixsweepError
from mixsweep.files import atomic_path, copy_atomic, publish, read_jsonl, write_text_atomic

META_FILE = "meta.json"


class Task(Protocol):
    """What a job gives the loop."""

    model: nn.Module
    train_loader: Iterable
    epochs: int
    clip_grad: float | None
    accum_iter: int  # micro-batches per optimizer step

    def build_optimizer(self, model: nn.Module, world: World) -> tuple[torch.optim.Optimizer, object]: ...
    def loss(self, model: nn.Module, batch: dict, gen: torch.Generator) -> torch.Tensor: ...
    def evaluate(self, model: nn.Module, world: World, final: bool) -> dict[str, float]: ...
    def save_pictures(self, model: nn.Module, out_dir: Path, tag: str) -> list[Path]: ...


@dataclass
class World:
    """Who this process is and where its reports go."""

    rank: int
    world_size: int
    device: torch.device
    run_dir: Path  # local folder for pictures and the metrics log
    # (metrics, checkpoint dir or None, final): called on every rank; `final` marks the weights-only last one
    report: Callable[[dict, Path | None, bool], None]
    resume_from: Path | None = None  # a checkpoint directory holding STATE_FILE
    # A fresh folder on the checkpoints' own file system for the checkpoint of an epoch: written there once and
    # renamed into place by `report`. None: a temporary folder, which `report` copies (Ray Train uploads it).
    stage_checkpoint: Callable[[int], Path] | None = None
    wrap_model: Callable[[nn.Module], nn.Module] = field(default=lambda m: m)
    loop_seconds: float = 0.0  # wall time spent inside `fit` (a sweep's overhead is a stage's wall minus this)
    # Parts of loop_seconds on rank 0: first_step_s (the first optimizer step, its compile included), eval_s,
    # checkpoint_s (writing them). What the cost model calibrates its fixed costs on.
    timing: dict[str, float] = field(default_factory=dict)
    live: object | None = None  # rank 0's live W&B run, when kept open for the caller (mixsweep.train.live)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise MixsweepError("run.device: 'cuda' requested but no CUDA device is visible")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- checkpoints ------------------------------------------------------------------------------------

def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (its state-dict keys have no prefixes)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a job saves: every `every_epochs` epochs, or (None) at the first epoch end `every_s` seconds of
    training after the last save; always after the last epoch, weights only. Workers keep the newest `keep`."""

    every_epochs: int | None = None
    every_s: float = 900.0
    keep: int = 2

    @classmethod
    def of(cls, run) -> CheckpointPolicy:
        """The policy of a job's RunSettings."""
        return cls(run.checkpoint_every, run.checkpoint_minutes * 60, run.keep_checkpoints)

    def due(self, epoch: int, since_save_s: float) -> bool:
        if self.every_epochs is not None:
            return (epoch + 1) % self.every_epochs == 0
        return since_save_s >= self.every_s

    def saves(self, epochs: int, epoch_s: float) -> int:
        """Resumable checkpoints a job of `epochs` epochs of `epoch_s` seconds writes (the final one not counted)."""
        if self.every_epochs is not None:
            return (epochs - 1) // self.every_epochs
        per = max(1, math.ceil(self.every_s / max(epoch_s, 1e-9)))  # a save lands on the first epoch end due
        return (epochs - 1) // per


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, epoch: int, step: int,
                    meta: dict, metrics: dict, weights_only: bool = False) -> Path:
    """Write STATE_FILE (what resume needs; the weights alone when `weights_only`) and META_FILE (what a person
    reads) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": unwrap(model).state_dict(), "epoch": epoch, "step": step, "metrics": metrics}
    if not weights_only:
        state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=_rng_state())
    with atomic_path(folder / STATE_FILE) as tmp:
        torch.save(state, tmp)
    (folder / META_FILE).write_text(json.dumps({**meta, "epoch": epoch, "step": step, "metrics": metrics,
                                                "resumable": not weights_only},
                                               indent=1, sort_keys=True, default=str) + "\n")
    return folder


def load_state(path: Path | str) -> dict:
    """A mixsweep checkpoint's training state (a folder holding STATE_FILE, or the file itself)."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise MixsweepError(f"{path}: not a mixsweep checkpoint (no 'model' entry)")
    return state


# --- the loop ---------------------------------------------------------------------------------------

def worker_batch_size(recipe, world_size: int) -> int:
    """Per-worker micro-batch: the recipe's batch is the effective one (all workers, all accumulation
    steps), so changing the number of workers does not change what is trained."""
    parts = world_size * recipe.accum_iter
    if recipe.batch_size % parts:
        raise MixsweepError(f"recipe.batch_size {recipe.batch_size} is not divisible by workers × accum_iter "
                            f"({world_size} × {recipe.accum_iter})")
    return recipe.batch_size // parts


def epoch_generator(seed: int, epoch: int, rank: int, device: torch.device, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, rank, stream): resumed epochs draw what they would have."""
    value = np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(value))


def autocast(device: torch.device):
    """bf16 autocast on CUDA, full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def attention_kernel(name: str):
    """A context that pins scaled_dot_product_attention to one kernel (`auto`: torch's choice)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel(backends[name])


def check_attention_kernel(name: str, device: torch.device) -> None:
    """Refuse, before training, a pinned attention kernel this device does not have."""
    if name == "auto":
        return
    q = torch.zeros(1, 2, 4, 64, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        with attention_kernel(name):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError as e:
        raise MixsweepError(f"run.attention: {name!r} has no kernel on {device} ({' '.join(str(e).split())[:100]}); "
                            "choose another, or auto") from None


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _add(timing: dict[str, float], part: str, seconds: float) -> None:
    timing[part] = timing.get(part, 0.0) + seconds


@contextlib.contextmanager
def _checkpoint_folder(world: World, epoch: int):
    """Where this epoch's checkpoint is written: the world's staging folder, else a temporary one."""
    if world.stage_checkpoint is not None:
        folder = world.stage_checkpoint(epoch)
        try:
            yield folder
        except BaseException:  # not placed: nothing half-done stays behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return
    with tempfile.TemporaryDirectory(prefix="mixsweep-ckpt-") as tmp:
        yield Path(tmp) / "checkpoint"


def train_step(task: Task, train_model: nn.Module, optimizer, scheduler, batch: dict, gen: torch.Generator,
               sync: bool, attention: str = "auto") -> torch.Tensor:
    """One micro-step: forward under autocast, backward; on the micro-step that ends an accumulation (`sync`), the
    optimizer and scheduler steps. Returns the detached loss, left on the device. What `fit` and the throughput
    benchmark both run."""
    device = batch["images"].device
    # Under DDP, gradients are all-reduced only on the micro-step that ends an accumulation.
    no_sync = train_model.no_sync() if not sync and hasattr(train_model, "no_sync") else contextlib.nullcontext()
    with no_sync:
        with autocast(device), attention_kernel(attention):
            loss = task.loss(train_model, batch, gen)
        (loss / task.accum_iter).backward()
    if sync:
        if task.clip_grad:
            nn.utils.clip_grad_norm_(train_model.parameters(), task.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def fit(task: Task, world: World, seed: int, checkpoints: CheckpointPolicy = CheckpointPolicy(),
        pictures_every: int = 0, meta: dict | None = None, compile_model: bool | None = None,
        compile_cache: Path | str | None = None, compile_mode: str = "default", attention: str = "auto") -> dict:
    """Train `task` to its last epoch, resuming from `world.resume_from`; returns the last epoch's metrics.
    `compile_model` None compiles on CUDA only (on a CPU, compile time outweighs the gain for short runs), in
    torch.compile's `compile_mode`; `compile_cache`: a folder of compiled graphs shared between stages
    (mixsweep.train.compile_cache); `attention` pins the attention kernel (RunSettings.attention)."""
    t_fit = time.perf_counter()
    device = world.device
    if compile_model is None:
        compile_model = device.type == "cuda"
    check_attention_kernel(attention, device)
    model = task.model.to(device)
    optimizer, scheduler = task.build_optimizer(model, world)
    start_epoch, step, last = 0, 0, {}
    if world.resume_from is not None:
        state = load_state(world.resume_from)
        model.load_state_dict(state["model"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        last = dict(state.get("metrics", {}))  # a finished job rerun: nothing to train, same answer
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
        elif start_epoch < task.epochs:
            raise MixsweepError(f"{world.resume_from}: holds the weights of epoch {start_epoch - 1} only (a finished "
                                f"job's), but this job trains to epoch {task.epochs - 1}: nothing can resume from it")
    train_model = world.wrap_model(model)
    if compile_model:
        if compile_cache is not None:
            from mixsweep.train.compile_cache import use_shared_cache

            use_shared_cache(compile_cache, device)
        train_model = torch.compile(train_model, mode=None if compile_mode == "default" else compile_mode)
    meta = dict(meta or {})
    last_save = time.perf_counter()
    for epoch in range(start_epoch, task.epochs):
        task.train_loader.set_epoch(epoch)
        train_model.train()
        gen = epoch_generator(seed, epoch, world.rank, device, stream=2)
        totals = torch.zeros(2, device=device, dtype=torch.float64)  # loss·n, n: summed on device, no sync
        t0 = time.perf_counter()
        accum = task.accum_iter
        micro_steps = (len(task.train_loader) // accum) * accum  # a partial accumulation is dropped
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(task.train_loader):
            if i >= micro_steps:
                break
            n = batch["images"].shape[0]
            sync = (i + 1) % accum == 0
            loss = train_step(task, train_model, optimizer, scheduler, batch, gen, sync, attention)
            totals[0] += loss.double() * n
            totals[1] += n
            if sync:
                step += 1
                if "first_step_s" not in world.timing:  # one sync per job: the compile shows here
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    world.timing["first_step_s"] = time.perf_counter() - t0
        totals = all_reduce_sum(totals).cpu()  # the epoch's one host sync
        seconds = time.perf_counter() - t0
        final = epoch == task.epochs - 1
        train_loss = float(totals[0] / max(totals[1], 1))
        if not math.isfinite(train_loss):
            # Checked at the epoch's one host sync (a check per step would stall the GPU): nothing of this epoch
            # is reported or checkpointed, so a resume could never start from diverged weights.
            raise Diverged(f"train_loss is {train_loss} in epoch {epoch} (by optimizer step {step}): the stage "
                           "diverged")
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "lr": max(g["lr"] for g in optimizer.param_groups),
            "img_per_s": float(totals[1]) / max(seconds, 1e-9),
            "epoch_seconds": seconds,
        }
        train_model.eval()
        t_eval = time.perf_counter()
        with torch.no_grad(), autocast(device), attention_kernel(attention):
            metrics.update(task.evaluate(train_model, world, final))
        _add(world.timing, "eval_s", time.perf_counter() - t_eval)
        if world.is_main and (final or (pictures_every and (epoch + 1) % pictures_every == 0)):
            task.save_pictures(model, world.run_dir / "pictures", f"epoch{epoch:04d}")
        # Rank 0 decides alone (only it writes); every rank reports each epoch.
        if world.is_main and (final or checkpoints.due(epoch, time.perf_counter() - last_save)):
            with _checkpoint_folder(world, epoch) as where:
                t_save = time.perf_counter()
                folder = save_checkpoint(where, model, optimizer, scheduler, epoch, step, meta, metrics,
                                         weights_only=final)
                _add(world.timing, "checkpoint_s", time.perf_counter() - t_save)
                world.report(metrics, folder, final)
            last_save = time.perf_counter()
        else:
            world.report(metrics, None, final)
        last = metrics
    world.loop_seconds += time.perf_counter() - t_fit
    return last


# --- a world without Ray ----------------------------------------------------------------------------

def latest_local_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_epoch*")) if (run_dir / "checkpoints").is_dir() else []
    complete = [c for c in ckpts if (c / STATE_FILE).is_file()]
    return complete[-1] if complete else None


STAGING_PREFIX = ".staging-"  # a checkpoint being written; never resumed from, removed by the next run


def staging_folder(base: Path, epoch: int) -> Path:
    """A fresh folder under `base` for one checkpoint, beside where it will be renamed to."""
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}epoch{epoch:04d}-", dir=base))


def remove_staging(base: Path) -> None:
    """What a killed writer left half-written under `base`."""
    for stale in base.glob(f"{STAGING_PREFIX}*") if base.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def place_checkpoint(folder: Path, dest: Path) -> Path:
    """`folder` at `dest`, whole or not at all: renamed when it was staged beside it, else copied."""
    if folder.parent == dest.parent and folder.name.startswith(STAGING_PREFIX):
        return publish(folder, dest)
    return copy_atomic(folder, dest)


def append_metrics(run_dir: Path, metrics: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics, sort_keys=True) + "\n")


def read_metrics(run_dir: Path | str) -> list[dict]:
    """The run's logged epochs; a torn last line (a kill mid-append) is dropped with a warning."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def truncate_metrics(run_dir: Path, resume_from: Path | None) -> None:
    """Drop logged epochs after the checkpoint we resume from, so each epoch appears once in the curve."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    last = int(load_state(resume_from)["epoch"]) if resume_from is not None else -1
    keep = [m for m in read_metrics(run_dir) if m.get("epoch", -1) <= last]
    write_text_atomic(path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in keep))


def local_world(run_dir: Path | str, device: str = "auto", resume: bool = True, keep: int = 2) -> World:
    """One process, no Ray: metrics go to run_dir/metrics.jsonl, checkpoints to run_dir/checkpoints/ (each
    written once, in place; the newest `keep` kept, and only the final one once the job has finished)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = latest_local_checkpoint(run_dir) if resume else None
    truncate_metrics(run_dir, resume_from)

    base = run_dir / "checkpoints"
    remove_staging(base)

    def report(metrics: dict, checkpoint: Path | None, final: bool) -> None:
        # Log first: a kill between the two then costs a re-run epoch (its line is dropped on resume), never
        # a checkpointed epoch missing from the curve.
        append_metrics(run_dir, metrics)
        if checkpoint is not None:
            place_checkpoint(checkpoint, base / f"checkpoint_epoch{metrics['epoch']:04d}")
            kept = sorted(base.glob("checkpoint_epoch*"))[-(1 if final else keep):]
            for old in sorted(set(base.glob("checkpoint_epoch*")) - set(kept)):
                shutil.rmtree(old, ignore_errors=True)

    return World(rank=0, world_size=1, device=pick_device(device), run_dir=run_dir, report=report,
                 resume_from=resume_from, stage_checkpoint=lambda epoch: staging_folder(base, epoch))
