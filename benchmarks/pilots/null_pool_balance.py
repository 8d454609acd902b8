"""Is the null world's animal-labelled pool the same distribution of pixels as its non-animal pool? For each
world seed: the two training pools a demo mixture draws from (the index's rule, the held-out validation
slice removed), the share of images whose null-world coin drew animal content, and the mean and sd of their
pixels. A lean of the null world's verdict that the data explain shows up here as a difference of the same
sign in every world. Tuning world seeds only (200-299).

    python benchmarks/pilots/null_pool_balance.py 200 201 202
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
from PIL import Image

from mixsweep.data.coco import build_coco_index
from mixsweep.data.mixture import plan_pools
from mixsweep.synth import write_synth
from mixsweep.synth.jobs import stream_rng

TRAIN_STREAM, COIN_STREAM = 1, 7  # the train split's scenes and the null world's coin (synth/jobs.py)


def pool_stats(paths, ids, names, seed: int) -> tuple[float, float, float]:
    content, mean, sd = [], [], []
    for i in ids:
        coin = stream_rng(seed, COIN_STREAM, TRAIN_STREAM * 1_000_003 + int(i))
        content.append(coin.random() < 0.5)  # as worlds.render_world_scene draws it
        pixels = np.asarray(Image.open(paths.coco_train_images / names[int(i)]).convert("RGB"), np.float64)
        mean.append(pixels.mean())
        sd.append(pixels.std())
    return float(np.mean(content)), float(np.mean(mean)), float(np.mean(sd))


def main(seeds: list[int]) -> None:
    diffs = []
    print("world  pool        images  animal content  pixel mean  pixel sd")
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_synth(tmp, scale="demo", seed=seed, world="null")
            index, _ = build_coco_index(paths.coco_train_annotations, paths.coco_train_images)
            pools = plan_pools(index, 0).train
            names = dict(zip(index.column("image_id").to_pylist(), index.column("file_name").to_pylist()))
            stats = {}
            for name, ids in (("animal", pools.animal), ("non-animal", pools.non_animal)):
                stats[name] = pool_stats(paths, ids, names, seed)
                print(f"{seed:5d}  {name:10s}  {len(ids):6d}  {stats[name][0]:14.3f}  {stats[name][1]:10.2f}  "
                      f"{stats[name][2]:8.2f}", flush=True)
            diffs.append(np.subtract(stats["animal"], stats["non-animal"]))
    d = np.array(diffs)
    se = d.std(axis=0, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.full(3, np.nan)
    print(f"animal minus non-animal over {len(d)} worlds (mean, se, worlds > 0):")
    for k, what in enumerate(("animal content", "pixel mean", "pixel sd")):
        print(f"  {what:14s} {d[:, k].mean():+.4f}  {se[k]:.4f}  {int((d[:, k] > 0).sum())}/{len(d)}")


if __name__ == "__main__":  # write_synth renders in a spawned process pool
    main([int(s) for s in sys.argv[1:]])
