"""Small hand-made fixtures for the awkward cases, written in the real on-disk formats."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mixsweep import tracking
from mixsweep.data.imread import read_rgb_image
from mixsweep.report.analyze import t_intervals

# Non-contiguous ids on purpose, and animal ids that are not COCO's 16-25: the index must read the
# supercategory from the JSON instead of trusting ids.
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 42, "name": "zebra", "supercategory": "animal"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
]

# image id -> (annotations as (category_id, iscrowd)), expected class under rule any / paper
COCO_CASES = {
    1: ([(17, 0)], "animal", "animal"),                      # one cat
    2: ([(17, 0), (18, 0)], "animal", "neither"),            # two animal kinds
    3: ([(18, 0), (1, 0)], "animal", "neither"),             # animal plus a person
    4: ([(42, 1), (3, 0)], "animal", "neither"),             # crowd-only animal beside a car
    5: ([(42, 1)], "animal", "animal"),                      # only a crowd animal region
    6: ([], "neither", "neither"),                           # no annotations
    7: ([(3, 0), (62, 0)], "non_animal", "non_animal"),      # man-made only
    8: ([(90, 0)], "non_animal", "non_animal"),
    9: ([(18, 0), (18, 0), (18, 0)], "animal", "animal"),    # three dogs: one distinct category
    10: ([(1, 0), (1, 1)], "non_animal", "non_animal"),      # people, one crowd
}


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_coco_fixture(root: Path, cases: dict = COCO_CASES, categories: list = CATEGORIES, with_files: bool = True):
    """instances.json + images/ for `cases`; returns (json path, images dir)."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    ann_id = 100
    for image_id, (objs, _, _) in cases.items():
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
        if with_files:
            Image.new("RGB", (64, 48), (image_id * 20 % 255, 90, 120)).save(images_dir / name, quality=90)
        for k, (cat, crowd) in enumerate(objs):
            ann_id += 1
            ann = {"id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                   "bbox": [4 + k, 4, 20, 20], "area": 400.0}
            if crowd:
                mask = np.zeros((48, 64), dtype=np.uint8)
                mask[4:24, 4 + k:24 + k] = 1
                counts, flat, prev, run = [], mask.flatten(order="F"), 0, 0
                for v in flat:
                    if v != prev:
                        counts.append(run)
                        run, prev = 0, v
                    run += 1
                counts.append(run)
                ann["segmentation"] = {"counts": counts, "size": [48, 64]}
            else:
                ann["segmentation"] = _polygon(4 + k, 4, 20, 20)
            anns.append(ann)
    path = root / "instances.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                "categories": categories}))
    return path, images_dir


# --- Oxford-IIIT Pet ---------------------------------------------------------------------------------

LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Dog 1:12:Cat\n#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)
PET_BREEDS = [("Abyssinian", 1, 1, 1), ("Egyptian_Mau", 12, 1, 6), ("beagle", 5, 2, 4),
              ("chihuahua", 8, 2, 7), ("staffordshire_bull_terrier", 33, 2, 22)]


def pet_trimap(w: int, h: int, cx: int, cy: int, r: int, band: int = 2) -> np.ndarray:
    """A disc of pet (1) on background (2) with a border band (3) across the edge."""
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    tri = np.full((h, w), 2, dtype=np.uint8)
    tri[d < r + band] = 3
    tri[d < r - band] = 1
    return tri


def pet_image(tri: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros(tri.shape + (3,), dtype=np.uint8)
    img[tri == 1] = (200, 120, 40)
    img[tri == 2] = (40, 90, 160)
    img[tri == 3] = (120, 105, 100)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _jpeg_bytes(arr: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


AWKWARD = {
    "Egyptian_Mau_139": "palette",      # PNG bytes, mode P, under .jpg
    "Egyptian_Mau_129": "grayscale",    # real JPEG, mode L
    "Abyssinian_5": "rgba",             # PNG bytes, mode RGBA
    "Egyptian_Mau_156": "png_as_jpg",   # PNG bytes, mode RGB
    "beagle_116": "corrupt_data",       # JPEG with junk bytes in the scan: decodes with a warning
    "chihuahua_121": "truncated",       # JPEG cut short: cannot be decoded
}


def write_pets_fixture(root: Path, per_breed: int = 10, awkward: bool = True, size=(60, 44)) -> Path:
    """A tiny Oxford-IIIT Pet folder in the official layout; returns root."""
    images, trimaps = root / "images", root / "annotations" / "trimaps"
    images.mkdir(parents=True, exist_ok=True)
    trimaps.mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "xmls").mkdir(exist_ok=True)
    lines, names = [], []
    w, h = size
    for b, (breed, class_id, species, breed_id) in enumerate(PET_BREEDS):
        for n in range(1, per_breed + 1):
            if not (awkward and f"{breed}_{n}" in AWKWARD):
                names.append((f"{breed}_{n}", class_id, species, breed_id))
    for breed_name in AWKWARD if awkward else ():
        breed = breed_name.rsplit("_", 1)[0]
        meta = next(p for p in PET_BREEDS if p[0] == breed)
        names.append((breed_name, meta[1], meta[2], meta[3]))
    for i, (name, class_id, species, breed_id) in enumerate(names):
        tri = pet_trimap(w, h, w // 2 + i % 5 - 2, h // 2, 12 + i % 4)
        Image.fromarray(tri, mode="L").save(trimaps / f"{name}.png")
        rgb = pet_image(tri, i)
        kind = AWKWARD.get(name) if awkward else None
        if kind is None:
            data = _jpeg_bytes(rgb)
        elif kind == "palette":
            data = _png_bytes(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
        elif kind == "grayscale":
            data = _jpeg_bytes(rgb, "L")
        elif kind == "rgba":
            data = _png_bytes(Image.fromarray(rgb).convert("RGBA"))
        elif kind == "png_as_jpg":
            data = _png_bytes(Image.fromarray(rgb))
        elif kind == "corrupt_data":
            jpg = _jpeg_bytes(rgb)
            sos = jpg.index(b"\xff\xda")
            at = sos + 40
            data = jpg[:at] + b"\x00\x13\x37\x00" + jpg[at:]
        elif kind == "truncated":
            data = _jpeg_bytes(rgb)[:200]
        (images / f"{name}.jpg").write_bytes(data)
        lines.append(f"{name} {class_id} {species} {breed_id}")
    if awkward:
        for stray in ("Abyssinian_100.mat", "Abyssinian_101.mat", "Abyssinian_102.mat"):
            (images / stray).write_bytes(b"MATLAB 5.0 MAT-file junk")
        (images / "._Abyssinian_1.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    ann = root / "annotations"
    (ann / "list.txt").write_text(LIST_HEADER + "\n".join(lines) + "\n")
    (ann / "trainval.txt").write_text("\n".join(lines[0::2]) + "\n")
    (ann / "test.txt").write_text("\n".join(lines[1::2]) + "\n")
    return root


# Oxford-IIIT Pet as torchvision's own dataset tests fake it (test_datasets.py, OxfordIIITPetTestCase): an
# oxford-iiit-pet/ folder, BREED-ID -1 on every line, noise images, noise "trimaps" (random RGB, not 1/2/3),
# .mat strays beside the images and hidden dot-copies beside the trimaps. Their fixture writes only the split
# files; list.txt is added here because the real archive has it.
TORCHVISION_PETS = (("Abyssinian", 1, 1), ("keeshond", 19, 2), ("yorkshire_terrier", 37, 2))


def write_torchvision_pets(root: Path, breed_id: str = "-1", noise_trimaps: bool = True, per_breed: int = 3,
                           size=(10, 8), seed: int = 0) -> Path:
    """The torchvision-test-like Pet folder under root/oxford-iiit-pet; returns root."""
    rng = np.random.default_rng(seed)
    base = root / "oxford-iiit-pet"
    images, trimaps = base / "images", base / "annotations" / "trimaps"
    images.mkdir(parents=True, exist_ok=True)
    trimaps.mkdir(parents=True, exist_ok=True)
    w, h = size
    lines = []
    for breed, class_id, species in TORCHVISION_PETS:
        for n in range(1, per_breed + 1):
            name = f"{breed}_{n}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{name}.jpg")
            tri = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise_trimaps
                   else pet_trimap(w, h, w // 2, h // 2, min(w, h) // 3, band=1))
            Image.fromarray(tri).save(trimaps / f"{name}.png")
            (trimaps / f".{name}.png").touch()
            lines.append(f"{name} {class_id} {species} {breed_id}")
    for stray in sorted(images.glob("*.jpg"))[:2]:
        stray.with_suffix(".mat").touch()
    ann = base / "annotations"
    (ann / "list.txt").write_text("\n".join(lines) + "\n")
    (ann / "trainval.txt").write_text("\n".join(lines[0::2]) + "\n")
    (ann / "test.txt").write_text("\n".join(lines[1::2]) + "\n")
    return root


# --- helpers only the tests call (the product has no use for them) ---------------------------------

def paired_difference(values: np.ndarray, i: int, j: int, ci: float = 0.95):
    """Mean and t-CI of (fraction j - fraction i), paired by seed: the interval of the per-seed differences.

    `values` is (seeds x fractions), NaN = missing run; seeds missing either fraction are dropped. Returns
    three floats; with leading batch axes (..., seeds, fractions) three arrays of the batch shape.
    """
    values = np.asarray(values, dtype=float)
    d = values[..., j] - values[..., i]
    mean, low, high = t_intervals(d, ci, axis=-1)
    if d.ndim == 1:
        return float(mean[0]), float(low[0]), float(high[0])
    return mean, low, high


def read_rgb(path: Path | str) -> tuple[np.ndarray, str]:
    """Decode any image to an HxWx3 uint8 array; returns (array, quirks). Raises ImageReadError."""
    img, quirks = read_rgb_image(path)
    return np.asarray(img, dtype=np.uint8), quirks


def log_stage(tracker: tracking.Tracker, *, key: str, name: str, group: str, job_type: str, config: dict,
              history: list[dict], summary: dict, pictures: list[Path]) -> Path | None:
    """Log one stage as one run (id from `key`); returns its local folder, None when disabled or on failure."""
    what = f"stage {key}"

    def body(run: Any, wandb: Any) -> None:
        rows = rows_by_step(history)
        images = tracking.wandb_images(wandb, pictures, "pictures", what)
        if images:  # with the last epoch, so they show next to its metrics
            last = max(rows, default=0)
            rows[last] = {**rows.get(last, {}), **images}
        for step in sorted(rows):
            run.log(rows[step], step=step)
        run.summary.update(tracking.plain_values(summary))

    return tracking._with_run(tracker, what, body, id=tracking.run_id(key), name=name, group=group,
                              job_type=job_type, config={"stage_key": key, **tracking.plain_values(config)})


def read_offline_table(run_dir: Path | str, key: str, run: dict | None = None) -> pd.DataFrame:
    """The table a finished local run logged under `key` (a `wandb.plot` chart's is `<chart>_table`), read
    from the file its summary entry names. `run`: the run's `read_offline_run` record, if already read."""
    run = tracking.read_offline_run(run_dir) if run is None else run
    if run["summary"].get(f"{key}._type") != "table-file":
        raise KeyError(f"{run_dir}: no table logged under {key!r}")
    data = json.loads((Path(run_dir) / "files" / run["summary"][f"{key}.path"]).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def rows_by_step(history: list[dict]) -> dict[int, dict]:
    """step = the row's epoch (else its index); a repeated epoch (a resumed run) keeps its last row."""
    rows: dict[int, dict] = {}
    for i, row in enumerate(history):
        row = tracking.plain_values(row)
        step = row.get("epoch", i)
        rows[int(step) if isinstance(step, (int, float)) else i] = row
    return rows
