"""`mixsweep demo`: the demo study on a synthetic world with a known answer, then its report.

`mixsweep demo --tour` walks the data path step by step instead: synth → COCO index → mixtures along a
fraction grid → Pet manifest → packs → augmented batches saved as a PNG → a tiny pre-train and fine-tune.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from mixsweep.tables import write_table

console = Console(highlight=False)
DEMO_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def demo_spec(world: str = "planted", world_seed: int = 0, spec_path: Path | None = None):
    """The demo study for one synthetic world: the packaged spec (or `spec_path`) with data.synth's world and
    seed, the name and the storage set from them, so each world and seed has its own store under ./runs/."""
    from mixsweep.spec import parse_spec
    from mixsweep.yamlio import read_yaml

    if spec_path is None:
        from importlib.resources import files

        source = files("mixsweep") / "specs" / "demo.yaml"
        data, where = read_yaml(Path(str(source)), "spec file"), "mixsweep/specs/demo.yaml"
    else:
        data, where = read_yaml(Path(spec_path), "spec file"), str(spec_path)
    synth = (data.get("data") or {}).get("synth")
    if spec_path is None or synth is not None:
        name = f"{data.get('name', 'demo')}-{world}-s{world_seed}"
        data = {**data, "name": name, "storage": f"runs/{name}",
                "data": {"synth": {**(synth or {}), "world": world, "seed": world_seed}}}
    base = Path(spec_path).resolve().parent if spec_path is not None else Path.cwd()
    return parse_spec(data, where, base_dir=base), where


def run_sweep_demo(spec_path: Path | None = None, world: str = "planted", world_seed: int = 0) -> dict[str, Path]:
    """Run the demo study (synthetic data, local Ray, CPU) and write its report; print where to look."""
    from mixsweep.sweep.results import make_report
    from mixsweep.sweep.run import run_sweep

    t0 = time.perf_counter()
    spec, where = demo_spec(world, world_seed, spec_path)
    console.rule(f"1. sweep {spec.name}: {where}")
    # A Ray of its own: without an address Ray joins the cluster last started on this machine (a test's, a
    # half-torn-down one), whose end would cancel the demo's stages.
    run_sweep(spec, where, address="local")
    console.rule("2. report")
    paths = make_report(spec, console=console)
    t = Table(title="where to look")
    t.add_column("what")
    t.add_column("path")
    for name, path in paths.items():
        t.add_row(name, str(path))
    console.print(t)
    from mixsweep.tracking import sync_command

    console.print(f"W&B runs are offline; upload them with: {sync_command(Path(spec.storage))}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return paths


def run_demo(out: Path, scale: str = "small", seed: int = 0) -> dict[str, Path]:
    from mixsweep.console import print_index_summary
    from mixsweep.data.coco import build_coco_index
    from mixsweep.data.mixture import build_mixture, mixture_pack_items
    from mixsweep.data.pack_build import build_pack
    from mixsweep.data.pets import (PACK_FIT, build_pets_manifest, finetune_subset, manifest_summary,
                                    pets_pack_items, trimap_to_labels)
    from mixsweep.synth import write_synth

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    console.rule("1. synthetic COCO-format and Pet-format data")
    data = write_synth(out / "data", scale=scale, seed=seed, progress=True)
    console.print(f"written under {data.root}")

    console.rule("2. COCO index")
    index, summary = build_coco_index(data.coco_train_annotations, data.coco_train_images)
    val_index, _ = build_coco_index(data.coco_val_annotations, data.coco_val_images)
    write_table(index, out / "coco_index.parquet")
    write_table(val_index, out / "coco_val_index.parquet")
    print_index_summary(summary, console)

    console.rule("3. mixtures along the animal-fraction grid (nested)")
    mixes, prev = {}, None
    t = Table(title=f"seed {seed}: train size fixed, only the share of animal images changes")
    for col in ("animal fraction", "train animal", "train non-animal", "val animal", "val non-animal",
                "swapped vs previous"):
        t.add_column(col, justify="right")
    for f in DEMO_FRACTIONS:
        mix = build_mixture(index, f, seed=seed, val_index=val_index)
        write_table(mix, out / "mixes" / f"mix_f{f:.2f}_s{seed}.parquet")
        mixes[f] = mix
        train = set(mix.filter(pc.equal(mix.column("split"), "train")).column("image_id").to_pylist())
        counts = _split_counts(mix)
        swapped = "-" if prev is None else str(len(train - prev))
        t.add_row(f"{f:.2f}", *(str(counts[k]) for k in ("train_a", "train_n", "val_a", "val_n")), swapped)
        prev = train
    console.print(t)

    console.rule("4. Oxford-IIIT Pet manifest")
    manifest = build_pets_manifest(data.pets_root, seed=seed)
    write_table(manifest, out / "pets.parquet")
    t = Table(title="split (seeded, stratified by breed)")
    t.add_column("split")
    t.add_column("images", justify="right")
    for k, v in manifest_summary(manifest).items():
        t.add_row(k, str(v))
    console.print(t)

    console.rule("5. packs: decoded and resized once")
    coco_pack = build_pack(mixture_pack_items(list(mixes.values()), data.coco_train_images,
                                              data.coco_val_images),
                           out / "cache", fit="crop", progress=True)
    pets_pack = build_pack(pets_pack_items(manifest), out / "cache", fit=PACK_FIT, mask_fn=trimap_to_labels,
                           progress=True)
    console.print(f"COCO pack (union of {len(mixes)} mixtures): {len(coco_pack)} images at {coco_pack.path}")
    console.print(f"Pet pack: {len(pets_pack)} images + masks at {pets_pack.path}")

    console.rule("6. augmented batches from the fast loader")
    half = finetune_subset(manifest, 0.5)
    preview = save_preview(out / "augment_preview.png", coco_pack, mixes[0.5], pets_pack,
                           half.column("name").to_pylist(), seed)
    console.print(f"fine-tune subset 0.5: {half.num_rows} train images; preview: {preview}")

    console.rule("7. a tiny MAE pre-training on the F=0.50 mixture, then segmentation fine-tuning")
    runs = train_tiny(out, data, seed)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs under {out}")
    return {"preview": preview, "pets": out / "pets.parquet", "index": out / "coco_index.parquet", **runs}


def train_tiny(out: Path, data, seed: int) -> dict[str, Path]:
    """Write two job YAMLs (rerun them with `mixsweep train ...`) and run them here without Ray."""
    import yaml

    from mixsweep.train.config import load_job
    from mixsweep.train.launch import run_local

    jobs = out / "jobs"
    jobs.mkdir(exist_ok=True)
    storage = str(out / "runs")
    pretrain = {
        "kind": "pretrain", "preset": "tiny", "seed": seed,
        "data": {"mixture": str(out / "mixes" / f"mix_f0.50_s{seed}.parquet"), "images": str(data.coco_train_images),
                 "val_images": str(data.coco_val_images), "cache": str(out / "cache"), "pack_size": 64},
        # A short run learns only with a larger lr than the paper's (blr 1.5e-4 at batch 256 over 150 epochs).
        "recipe": {"epochs": 5, "batch_size": 16, "warmup_epochs": 1, "blr": 1.5e-3},
        "run": {"name": "pretrain-f0.50", "storage": storage},
    }
    (jobs / "pretrain.yaml").write_text(yaml.safe_dump(pretrain, sort_keys=False))
    pt = run_local(load_job(jobs / "pretrain.yaml"))
    console.print(f"pre-training: val loss {pt.metrics['val_loss']:.3f}; pictures in {pt.run_dir / 'pictures'}")
    last = sorted((pt.run_dir / "checkpoints").glob("checkpoint_epoch*"))[-1]
    finetune = {
        "kind": "finetune", "model": "mae", "preset": "tiny", "seed": seed, "init_checkpoint": str(last / "state.pt"),
        "data": {"manifest": str(out / "pets.parquet"), "cache": str(out / "cache"), "pack_size": 64,
                 "finetune_fraction": 1.0},
        "recipe": {"epochs": 12, "batch_size": 16, "warmup_epochs": 1, "blr": 1e-2},
        "run": {"name": "finetune-f0.50", "storage": storage},
    }
    (jobs / "finetune.yaml").write_text(yaml.safe_dump(finetune, sort_keys=False))
    ft = run_local(load_job(jobs / "finetune.yaml"))
    m = ft.metrics
    t = Table(title="fine-tuned tiny MAE, test split (synthetic pets)")
    for col in ("loss", "accuracy", "IoU (binary)", "mIoU"):
        t.add_column(col, justify="right")
    t.add_row(f"{m['test_loss']:.3f}", f"{m['test_accuracy']:.3f}", f"{m['test_iou_binary']:.3f}",
              f"{m['test_miou']:.3f}")
    console.print(t)
    console.print(f"job configs: {jobs}/*.yaml (rerun: mixsweep train pretrain {jobs / 'pretrain.yaml'})")
    return {"pretrain": pt.run_dir, "finetune": ft.run_dir}


def _split_counts(mix) -> dict[str, int]:
    out = {}
    for split, tag in (("train", "train"), ("val", "val")):
        part = mix.filter(pc.equal(mix.column("split"), split))
        n_a = int(pc.sum(part.column("is_animal")).as_py() or 0)
        out[f"{tag}_a"], out[f"{tag}_n"] = n_a, part.num_rows - n_a
    return out


def save_preview(path: Path, coco_pack, mix, pets_pack, pet_names: list[str], seed: int) -> Path:
    """One row of augmented COCO mixture images, one of pets, one of their masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixsweep.data.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig
    from mixsweep.data.loader import PackedLoader

    n = 6
    train_ids = mix.filter(pc.equal(mix.column("split"), "train")).column("image_id").to_pylist()
    coco_rows = coco_pack.indices_for([str(i) for i in train_ids])
    coco_batch = next(iter(PackedLoader(coco_pack, n, indices=coco_rows, seed=seed)))
    pet_aug = AugmentConfig(hflip=0.5, vflip=0.5)  # the paper's fine-tune augmentation: crop + h and v flips
    pet_batch = next(iter(PackedLoader(pets_pack, n, augment=pet_aug, indices=pets_pack.indices_for(pet_names),
                                       seed=seed)))

    def to_img(x):
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        return np.clip(x.permute(1, 2, 0).float().numpy() * std + mean, 0, 1)

    colours = np.array([[0.95, 0.55, 0.1], [0.15, 0.3, 0.6], [0.95, 0.95, 0.95]])
    fig, axes = plt.subplots(3, n, figsize=(2 * n, 6.4))
    for j in range(n):
        axes[0, j].imshow(to_img(coco_batch["images"][j]))
        axes[1, j].imshow(to_img(pet_batch["images"][j]))
        m = pet_batch["masks"][j].numpy()
        axes[2, j].imshow(np.where(m[..., None] < 3, colours[np.minimum(m, 2)], 0.0))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("COCO mix F=0.5")
    axes[1, 0].set_ylabel("Pet (augmented)")
    axes[2, 0].set_ylabel("mask: pet/bg/border")
    fig.suptitle("random resized crop + flips, applied jointly to image and mask on the device")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
