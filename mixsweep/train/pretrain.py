"""MAE pre-training on one COCO mixture: a plain function of its config (Ray Train only wraps it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import torch
from torch import nn

from mixsweep.data.augment import AugmentConfig
from mixsweep.data.mixture import mixture_pack_items, read_mixture
from mixsweep.data.loader import PackedLoader
from mixsweep.data.packed import PackedSet
from mixsweep.data.pack_build import build_pack
from mixsweep.errors import MixsweepError
from mixsweep.models.mae import build_mae, load_mae_checkpoint
from mixsweep.train.config import PretrainData, PretrainJob
from mixsweep.train.loop import (CheckpointPolicy, World, all_reduce_sum, epoch_generator, fit, unwrap,
                                  worker_batch_size)
from mixsweep.train.recipes import build_optimizer, build_scheduler

VAL_NOISE_SEED = 20_231  # validation masks are the same every epoch, so val loss curves are comparable


def prepare_pretrain_data(job: PretrainJob) -> Path:
    """Build (or reuse) the job's pack on the driver, before any worker starts."""
    return pretrain_pack(job.data).path


def pretrain_pack(data: PretrainData, progress: bool = False) -> PackedSet:
    """The job's pack, refused when none of the mixture's training images is usable."""
    pack = open_or_build_pack(data, progress)
    mix = read_mixture(data.mixture)
    pack.require_usable(_rows(pack, mix, "train"), f"{data.mixture} (train split, images in {data.images})")
    return pack


def open_or_build_pack(data: PretrainData, progress: bool = False) -> PackedSet:
    """data.pack as is when it is complete (the sweep's driver built it this run: no re-keying of every
    file per stage), else the pack of data.union (a whole grid's images), else of the mixture alone."""
    if data.pack is not None and (data.pack / "meta.json").is_file():
        return PackedSet.open(data.pack)
    source = read_mixture(data.mixture if data.union is None else data.union)
    items = mixture_pack_items([source], data.images, data.val_images)
    return build_pack(items, data.cache, size=data.pack_size, fit="crop", progress=progress)


def _rows(pack: PackedSet, mix, split: str):
    """The mixture's rows of `split` as row indices into the pack: a fraction is an index list, not a pack."""
    ids = mix.filter(pc.equal(mix.column("split"), split)).column("image_id").to_pylist()
    return pack.indices_for([str(i) for i in ids])


class PretrainTask:
    """MAE with masking ratio r on the mixture's train rows; validation loss on its val rows."""

    def __init__(self, job: PretrainJob, pack_path: Path | str, world: World):
        self.job, self.recipe = job, job.recipe
        self.model = build_mae(job.preset, norm_pix_loss=job.recipe.norm_pix_loss)
        if job.init_checkpoint is not None:
            load_mae_checkpoint(self.model, job.init_checkpoint, job.mae_init)
        self.epochs, self.clip_grad, self.accum_iter = job.recipe.epochs, job.recipe.clip_grad, job.recipe.accum_iter
        per_worker = worker_batch_size(job.recipe, world.world_size)
        preset = self.model.preset
        pack = PackedSet.open(pack_path)
        mix = read_mixture(job.data.mixture)
        aug = AugmentConfig(out_size=preset.img_size, scale=job.recipe.crop_scale, hflip=job.recipe.hflip,
                            vflip=job.recipe.vflip)
        common = dict(augment=aug, rank=world.rank, world_size=world.world_size, device=world.device,
                      seed=job.seed)
        self.train_loader = PackedLoader(pack, per_worker, train=True, indices=_rows(pack, mix, "train"),
                                         ahead=job.run.augment_ahead,
                                         **common)
        if len(self.train_loader) // self.accum_iter == 0:
            raise MixsweepError(
                f"{job.data.mixture}: {len(self.train_loader.rows)} usable training images cannot fill one batch "
                f"of {per_worker} on each of {world.world_size} workers")
        # Padded to full batches: a last, smaller batch would make a compiled model recompile.
        self.val_loader = PackedLoader(pack, per_worker, train=False, indices=_rows(pack, mix, "val"),
                                       pad_to_batch=True, **common)
        self.world_batch = job.recipe.batch_size

    def build_optimizer(self, model: nn.Module, world: World):
        opt = build_optimizer(model, self.recipe, self.world_batch, world.device)
        return opt, build_scheduler(opt, self.recipe, len(self.train_loader) // self.accum_iter, self.world_batch)

    def _noise(self, imgs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(imgs.shape[0], self.model.preset.num_patches, generator=gen, device=imgs.device)

    def loss(self, model: nn.Module, batch: dict, gen: torch.Generator) -> torch.Tensor:
        imgs = batch["images"]
        loss, _, _ = model(imgs, mask_ratio=self.recipe.mask_ratio, noise=self._noise(imgs, gen))
        return loss

    def evaluate(self, model: nn.Module, world: World, final: bool) -> dict[str, float]:
        gen = epoch_generator(VAL_NOISE_SEED, 0, world.rank, world.device, stream=3)
        totals = torch.zeros(2, device=world.device, dtype=torch.float64)
        for batch in self.val_loader:
            imgs, n = batch["images"], len(batch["index"])
            if n == 0:
                continue  # all padding
            # The real rows draw the noise they would unpadded; padded rows get zeros.
            noise = self._noise(imgs[:n], gen)
            noise = torch.cat([noise, noise.new_zeros(imgs.shape[0] - n, noise.shape[1])])
            loss, pred, mask = model(imgs, mask_ratio=self.recipe.mask_ratio, noise=noise)
            if n < imgs.shape[0]:  # the batch mean counted the padding: the real rows' mean, outside the graph
                loss = unwrap(model).forward_loss(imgs[:n], pred[:n], mask[:n])
            totals[0] += loss.double() * n
            totals[1] += n
        totals = all_reduce_sum(totals).cpu()
        return {"val_loss": float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")}

    def save_pictures(self, model: nn.Module, out_dir: Path, tag: str) -> list[Path]:
        from mixsweep.report.pictures import save_reconstructions

        batch = next(iter(self.val_loader), None)
        k = 0 if batch is None else min(8, len(batch["index"]))  # real rows only, not the padding
        if k == 0:
            return []
        imgs = batch["images"][:k]
        gen = epoch_generator(VAL_NOISE_SEED, 0, 0, imgs.device, stream=4)
        model.eval()
        with torch.no_grad():
            _, pred, mask = model(imgs, mask_ratio=self.recipe.mask_ratio, noise=self._noise(imgs, gen))
        aug = self.val_loader.augment
        out_dir.mkdir(parents=True, exist_ok=True)
        return [save_reconstructions(out_dir / f"reconstructions_{tag}.png", imgs, pred, mask, model, aug.mean,
                                     aug.std)]


def run_pretrain(job: PretrainJob, pack_path: Path | str, world: World) -> dict:
    """The whole pre-training job in this process's world."""
    torch.manual_seed(job.seed)  # model init: identical on every rank and every attempt
    task = PretrainTask(job, pack_path, world)
    meta = {"kind": "pretrain", "preset": job.preset, "seed": job.seed, "job": job.model_dump(mode="json")}
    return fit(task, world, job.seed, checkpoints=CheckpointPolicy.of(job.run),
               pictures_every=job.run.pictures_every, meta=meta, compile_model=job.run.compile,
               compile_cache=job.run.compile_cache,
               compile_mode=job.run.compile_mode, attention=job.run.attention)
