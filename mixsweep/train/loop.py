"""The one training skeleton every job shares: epochs of steps, evaluation, reports, checkpoints, resume.

A job (pre-training, fine-tuning) is a `Task`: it owns its model, loaders, loss and evaluation. `fit` runs
it in a `World`, which says who this process is (rank, world size, device) and how to report metrics and
checkpoints. `local_world` needs no Ray (benchmarks, GPU hosts without Ray, tests); the Ray worlds live in
`mixsweep.train.ray_worlds` and are only imported inside Ray Train workers and Tune trials.

Resume: a checkpoint holds model, optimizer, scheduler, epoch, step and RNG states. Loaders and masking
noise draw from generators seeded by (seed, epoch, rank), so a run resumed at epoch k+1 sees the same
batches and masks as one that never stopped, and reports each epoch exactly once.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
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
from mixsweep.files import atomic_path, copy_atomic, read_jsonl, write_text_atomic

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
    report: Callable[[dict, Path | None], None]  # (metrics, checkpoint dir or None); called on every rank
    resume_from: Path | None = None  # a checkpoint directory holding STATE_FILE
    wrap_model: Callable[[nn.Module], nn.Module] = field(default=lambda m: m)
    loop_seconds: float = 0.0  # wall time spent inside `fit` (a sweep's overhead is a stage's wall minus this)
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


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, epoch: int, step: int,
                    meta: dict, metrics: dict) -> Path:
    """Write STATE_FILE (what resume needs) and META_FILE (what a person reads) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "rng": _rng_state(),
             "metrics": metrics}
    with atomic_path(folder / STATE_FILE) as tmp:
        torch.save(state, tmp)
    (folder / META_FILE).write_text(json.dumps({**meta, "epoch": epoch, "step": step, "metrics": metrics},
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


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def fit(task: Task, world: World, seed: int, checkpoint_every: int = 1, pictures_every: int = 0,
        meta: dict | None = None, compile_model: bool | None = None) -> dict:
    """Train `task` to its last epoch, resuming from `world.resume_from`; returns the last epoch's metrics.
    `compile_model` None compiles on CUDA only (on a CPU, compile time outweighs the gain for short runs)."""
    t_fit = time.perf_counter()
    device = world.device
    if compile_model is None:
        compile_model = device.type == "cuda"
    model = task.model.to(device)
    optimizer, scheduler = task.build_optimizer(model, world)
    start_epoch, step, last = 0, 0, {}
    if world.resume_from is not None:
        state = load_state(world.resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        last = dict(state.get("metrics", {}))  # a finished job rerun: nothing to train, same answer
        _set_rng_state(state["rng"])
    train_model = world.wrap_model(model)
    if compile_model:
        train_model = torch.compile(train_model)
    meta = dict(meta or {})
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
            # Under DDP, gradients are all-reduced only on the micro-step that ends an accumulation.
            no_sync = train_model.no_sync() if not sync and hasattr(train_model, "no_sync") else contextlib.nullcontext()
            with no_sync:
                with autocast(device):
                    loss = task.loss(train_model, batch, gen)
                (loss / accum).backward()
            totals[0] += loss.detach().double() * n
            totals[1] += n
            if sync:
                if task.clip_grad:
                    nn.utils.clip_grad_norm_(train_model.parameters(), task.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
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
        with torch.no_grad(), autocast(device):
            metrics.update(task.evaluate(train_model, world, final))
        if world.is_main and (final or (pictures_every and (epoch + 1) % pictures_every == 0)):
            task.save_pictures(model, world.run_dir / "pictures", f"epoch{epoch:04d}")
        if final or (epoch + 1) % checkpoint_every == 0:
            with tempfile.TemporaryDirectory(prefix="mixsweep-ckpt-") as tmp:
                folder = None
                if world.is_main:
                    folder = save_checkpoint(Path(tmp) / "checkpoint", model, optimizer, scheduler, epoch, step,
                                             meta, metrics)
                world.report(metrics, folder)
        else:
            world.report(metrics, None)
        last = metrics
    world.loop_seconds += time.perf_counter() - t_fit
    return last


# --- a world without Ray ----------------------------------------------------------------------------

def latest_local_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_epoch*")) if (run_dir / "checkpoints").is_dir() else []
    complete = [c for c in ckpts if (c / STATE_FILE).is_file()]
    return complete[-1] if complete else None


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


def local_world(run_dir: Path | str, device: str = "auto", resume: bool = True) -> World:
    """One process, no Ray: metrics go to run_dir/metrics.jsonl, checkpoints to run_dir/checkpoints/."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = latest_local_checkpoint(run_dir) if resume else None
    truncate_metrics(run_dir, resume_from)

    def report(metrics: dict, checkpoint: Path | None) -> None:
        # Log first: a kill between the two then costs a re-run epoch (its line is dropped on resume), never
        # a checkpointed epoch missing from the curve.
        append_metrics(run_dir, metrics)
        if checkpoint is not None:
            copy_atomic(checkpoint, run_dir / "checkpoints" / f"checkpoint_epoch{metrics['epoch']:04d}")

    return World(rank=0, world_size=1, device=pick_device(device), run_dir=run_dir, report=report,
                 resume_from=resume_from)
