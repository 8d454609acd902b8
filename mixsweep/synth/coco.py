"""The COCO-format part: scene images as JPEGs and instances_{train,val}2017.json with their masks as
polygons (crowds as RLE)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from mixsweep.synth.draw import jpeg_bytes
from mixsweep.synth.jobs import run_jobs, stream_rng
from mixsweep.synth.labels import COCO_CATEGORIES
from mixsweep.synth.output import COCO_KINDS, GENERATOR_NAME, SCALES, SynthPaths
from mixsweep.synth.scenes import Scene
from mixsweep.synth.worlds import render_world_scene


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0] == 1:
        runs = np.concatenate([[0], runs])
    return {"counts": [int(c) for c in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def mask_to_polygon(mask: np.ndarray, nbins: int = 120) -> list[float]:
    """Outline of a mask as one COCO polygon: the farthest pixel corner from the centroid in each direction.

    Star-shaped around the centroid, so it covers limbs and tails that point outwards and fills little of
    the gaps between them; coordinates are pixel-edge based, as COCO's are.
    """
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    # All four corners of each pixel, so the polygon encloses whole pixels.
    px = np.concatenate([xs, xs + 1, xs, xs + 1]).astype(np.float64)
    py = np.concatenate([ys, ys, ys + 1, ys + 1]).astype(np.float64)
    dx, dy = px - cx, py - cy
    ang = np.arctan2(dy, dx)
    r = dx * dx + dy * dy
    b = ((ang + np.pi) / (2 * np.pi) * nbins).astype(np.int64) % nbins
    order = np.lexsort((r, b))
    bs = b[order]
    last = np.concatenate([bs[1:] != bs[:-1], [True]])
    pick = order[last]
    h, w = mask.shape
    out: list[float] = []
    for x, y in zip(np.clip(px[pick], 0, w), np.clip(py[pick], 0, h)):
        out += [round(float(x), 2), round(float(y), 2)]
    if len(out) < 6:
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        out = [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]
    return out


def scene_annotations(scene: Scene) -> list[dict]:
    """COCO annotation dicts (without id / image_id) for a scene's visible objects."""
    w, h = scene.image.size
    anns = []
    for o in scene.objects:
        if o.mask.sum() < 12:
            continue
        if o.iscrowd:
            seg = _uncompressed_rle(o.mask)
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            seg = [mask_to_polygon(o.mask)]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        area = float(mask_utils.area(rle))
        if area <= 0:
            continue
        bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
        anns.append({"segmentation": seg, "area": area, "iscrowd": int(o.iscrowd), "bbox": bbox,
                     "category_id": int(o.category_id)})
    return anns


def _coco_job(job: tuple) -> tuple[int, int, list[dict]]:
    path, seed, stream, index, kind, world = job
    scene = render_world_scene(seed, stream, index, kind, world)
    Path(path).write_bytes(jpeg_bytes(scene.image))
    w, h = scene.image.size
    return w, h, scene_annotations(scene)


def write_coco(paths: SynthPaths, scale: str, seed: int, pool, progress: bool, world: str = "planted") -> None:
    """The train and val splits: JPEGs and instances JSON, image ids drawn and interleaved like COCO's."""
    spec = SCALES[scale]
    layout = stream_rng(seed, 0, 0)
    n_train, n_val = spec.n_coco_train, spec.n_coco_val
    ids = np.sort(layout.choice(581_000, size=n_train + n_val, replace=False) + 1)
    # COCO ids are unique across the two splits; interleave them like the real ones.
    perm = layout.permutation(n_train + n_val)
    train_ids, val_ids = np.sort(ids[perm[:n_train]]), np.sort(ids[perm[n_train:]])
    info = {"description": f"mixsweep synthetic COCO-format data (scale {scale}, seed {seed}, world {world})",
            "url": "", "version": "1.0", "year": 2017, "contributor": GENERATOR_NAME,
            "date_created": "2017/09/01"}
    licenses = [{"url": "", "id": 1, "name": "synthetic, no rights reserved"}]
    categories = [{"supercategory": s, "id": i, "name": n} for i, n, s in COCO_CATEGORIES]
    next_ann = 1
    for split, stream, counts, img_ids, img_dir, ann_path in (
            ("train", 1, spec.coco_train, train_ids, paths.coco_train_images, paths.coco_train_annotations),
            ("val", 2, spec.coco_val, val_ids, paths.coco_val_images, paths.coco_val_annotations)):
        kinds = [k for k in COCO_KINDS for _ in range(counts[k])]
        kinds = [kinds[i] for i in layout.permutation(len(kinds))]
        img_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(str(img_dir / f"{int(i):012d}.jpg"), seed, stream, int(i), k, world)
                for i, k in zip(img_ids, kinds)]
        results = run_jobs(_coco_job, jobs, pool, f"coco {split}", progress)
        images, annotations = [], []
        for (path, _, _, image_id, _, _), (w, h, anns) in zip(jobs, results):
            images.append({"license": 1, "file_name": Path(path).name, "coco_url": "", "height": h, "width": w,
                           "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": image_id})
            for a in anns:
                annotations.append({**a, "image_id": image_id, "id": next_ann})
                next_ann += 1
        doc = {"info": info, "licenses": licenses, "images": images, "annotations": annotations,
               "categories": categories}
        ann_path.parent.mkdir(parents=True, exist_ok=True)
        ann_path.write_text(json.dumps(doc, separators=(",", ":")))
