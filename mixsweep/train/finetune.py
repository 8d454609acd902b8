"""Segmentation fine-tuning on Oxford-IIIT Pet: the pre-trained MAE, or a baseline (scratch MAE, ResNet-50).
With head "probe" the same job trains only a linear head on the frozen encoder (a frozen-encoder probe).

A plain function of its config; Ray Train only wraps it. Validation metrics every epoch, test metrics at
the end, all from one confusion matrix per split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from mixsweep.data.augment import AugmentConfig
from mixsweep.data.loader import PackedLoader
from mixsweep.data.packed import PackedSet
from mixsweep.data.pack_build import build_pack
from mixsweep.data.pets import (IGNORE_LABEL, PACK_FIT, finetune_subset, pets_pack_items, read_manifest,
                                trimap_to_labels)
from mixsweep.errors import MixsweepError
from mixsweep.models.mae import get_preset
from mixsweep.models.segment import build_segmenter
from mixsweep.train.config import FinetuneJob
from mixsweep.train.loop import CheckpointPolicy, World, fit, worker_batch_size
from mixsweep.train.metrics import SegMetrics
from mixsweep.train.recipes import build_optimizer, build_scheduler


def _split_names(manifest, split: str) -> list[str]:
    return manifest.filter(pc.equal(manifest.column("split"), split)).column("name").to_pylist()


def prepare_finetune_data(job: FinetuneJob) -> Path:
    """Build (or reuse) the Pet pack on the driver, before any worker starts."""
    manifest = read_manifest(job.data.manifest)
    items = pets_pack_items(manifest, job.data.pets_root)
    pack = build_pack(items, job.data.cache, size=job.data.pack_size, fit=PACK_FIT, mask_fn=trimap_to_labels)
    subset_seed = job.seed if job.data.subset_seed is None else job.data.subset_seed
    names = finetune_subset(manifest, job.data.finetune_fraction, seed=subset_seed).column("name").to_pylist()
    pack.require_usable(pack.indices_for(names), f"{job.data.manifest} (fine-tune subset, Pet images)")
    return pack.path


class FinetuneTask:
    """Cross-entropy segmentation on a nested fine-tune subset of the Pet train split.

    Steps per epoch follow recipe.schedule (FinetuneRecipe): fixed_steps gives every subset the optimizer
    steps of one epoch over the full train split, fixed_epochs one pass over the subset.
    """

    def __init__(self, job: FinetuneJob, pack_path: Path | str, world: World):
        self.job, self.recipe = job, job.recipe
        self.epochs, self.clip_grad, self.accum_iter = job.recipe.epochs, job.recipe.clip_grad, job.recipe.accum_iter
        per_worker = worker_batch_size(job.recipe, world.world_size)
        self.model = build_segmenter(job.model, preset=job.preset, head=job.head,
                                     mae_checkpoint=job.init_checkpoint, mae_init=job.mae_init,
                                     resnet_weights=job.resnet_weights)
        pack = PackedSet.open(pack_path)
        manifest = read_manifest(job.data.manifest)
        subset_seed = job.seed if job.data.subset_seed is None else job.data.subset_seed
        train_names = finetune_subset(manifest, job.data.finetune_fraction, seed=subset_seed).column("name")
        out = get_preset(job.preset).img_size
        aug = AugmentConfig(out_size=out, scale=job.recipe.crop_scale, hflip=job.recipe.hflip,
                            vflip=job.recipe.vflip)
        common = dict(augment=aug, rank=world.rank, world_size=world.world_size, device=world.device,
                      seed=job.seed)
        train_idx = pack.indices_for(train_names.to_pylist())
        self.schedule = job.recipe.schedule
        num_batches = None
        if self.schedule == "fixed_steps":
            if not np.isin(train_idx, pack.valid_indices).any():
                raise MixsweepError(f"{job.data.manifest}: the fine-tune subset (fraction "
                                    f"{job.data.finetune_fraction:g}) has no usable image")
            # The full split's usable rows, counted as a fraction-1.0 loader would.
            full = pack.indices_for(_split_names(manifest, "train"))
            n_full = int(np.isin(full, pack.valid_indices).sum())
            num_batches = max(1, n_full // job.recipe.batch_size) * self.accum_iter
        self.train_loader = PackedLoader(pack, per_worker, train=True, indices=train_idx, num_batches=num_batches,
                                         ahead=job.run.augment_ahead, **common)
        if len(self.train_loader) // self.accum_iter == 0:
            raise MixsweepError(
                f"{job.data.manifest}: the fine-tune subset ({len(train_names)} images at fraction "
                f"{job.data.finetune_fraction:g}) cannot fill one batch of {per_worker} on each of "
                f"{world.world_size} workers (recipe.schedule: fixed_steps cycles a small subset)")
        self.steps_per_epoch = len(self.train_loader) // self.accum_iter
        self.eval_loaders = {}
        for split in ("val", "test"):
            # Padded to full batches: a last, smaller batch would make a compiled model recompile.
            self.eval_loaders[split] = PackedLoader(pack, per_worker, train=False, pad_to_batch=True,
                                                    pad_mask_value=IGNORE_LABEL,
                                                    indices=pack.indices_for(_split_names(manifest, split)), **common)
        self.world_batch = job.recipe.batch_size
        self.n_train = len(train_names)

    def build_optimizer(self, model: nn.Module, world: World):
        opt = build_optimizer(model, self.recipe, self.world_batch, world.device,
                              layer_decay=self.recipe.layer_decay_for(self.job.model, head=self.job.head))
        return opt, build_scheduler(opt, self.recipe, self.steps_per_epoch, self.world_batch)

    def loss(self, model: nn.Module, batch: dict, gen: torch.Generator) -> torch.Tensor:
        logits = model(batch["images"])
        return F.cross_entropy(logits.float(), batch["masks"], ignore_index=IGNORE_LABEL,
                               label_smoothing=self.recipe.label_smoothing)

    def _evaluate_split(self, model: nn.Module, split: str, world: World) -> dict[str, float]:
        metrics = SegMetrics(device=world.device)
        for batch in self.eval_loaders[split]:
            if len(batch["index"]) == 0:
                continue  # all padding
            # Padded rows carry IGNORE_LABEL masks: they add nothing to the confusion matrix or the loss sum.
            logits = model(batch["images"]).float()
            loss_sum = F.cross_entropy(logits, batch["masks"], ignore_index=IGNORE_LABEL, reduction="sum")
            metrics.update(logits, batch["masks"], loss_sum)
        metrics.all_reduce()
        return {f"{split}_{k}": v for k, v in metrics.compute().items()}

    def evaluate(self, model: nn.Module, world: World, final: bool) -> dict[str, float]:
        out = self._evaluate_split(model, "val", world)
        if final:
            out.update(self._evaluate_split(model, "test", world))
        return out

    def save_pictures(self, model: nn.Module, out_dir: Path, tag: str) -> list[Path]:
        from mixsweep.report.pictures import save_segmentations

        batch = next(iter(self.eval_loaders["test"]), None)
        k = 0 if batch is None else min(8, len(batch["index"]))  # real rows only, not the padding
        if k == 0:
            return []
        model.eval()
        with torch.no_grad():
            logits = model(batch["images"][:k])
        aug = self.train_loader.augment
        out_dir.mkdir(parents=True, exist_ok=True)
        return [save_segmentations(out_dir / f"segmentations_{tag}.png", batch["images"][:k], batch["masks"][:k],
                                   logits.argmax(1), aug.mean, aug.std)]


def run_finetune(job: FinetuneJob, pack_path: Path | str, world: World) -> dict:
    """The whole fine-tuning job in this process's world."""
    torch.manual_seed(job.seed)
    task = FinetuneTask(job, pack_path, world)
    meta = {"kind": "finetune", "model": job.model, "preset": job.preset, "seed": job.seed,
            "finetune_fraction": job.data.finetune_fraction, "n_train": task.n_train,
            "finetune_schedule": task.schedule, "steps_per_epoch": task.steps_per_epoch,
            "total_steps": task.steps_per_epoch * task.epochs, "job": job.model_dump(mode="json")}
    return fit(task, world, job.seed, checkpoints=CheckpointPolicy.of(job.run),
               pictures_every=job.run.pictures_every, meta=meta, compile_model=job.run.compile,
               compile_cache=job.run.compile_cache,
               compile_mode=job.run.compile_mode, attention=job.run.attention)
