"""COCO instances JSON → one Parquet row per image, classified as animal / non-animal.

The classes come from the annotation file itself: the animal categories are those whose supercategory
is `animal` (ids 16–25 in COCO 2017), read from the JSON, never hard-coded.

Rules (`--rule`):
- `any` (default): animal if any annotation, crowd regions included, has an animal category; non-animal if
  it has at least one annotation and none is an animal; an image without annotations is neither, unless
  `unlabelled_as_non_animal` is set.
- `paper`: the paper's literal wording, "images with only a specific animal's label": animal only when the
  image's annotations carry exactly one distinct category and it is an animal. Non-animal as above, so
  an image with a dog and a person is neither.

Counting images per animal category and summing counts an image with two animal kinds twice. That is
how the paper arrived at 25,739 animal images (the sum of the published per-category counts); our index
is per image, so its animal count is smaller.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mixsweep.errors import MixsweepError
from mixsweep.tables import read_table

ANIMAL_SUPERCATEGORY = "animal"
RULES = ("any", "paper")

INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("category_ids", pa.list_(pa.int32())),
        ("n_annotations", pa.int32()),
        ("is_animal", pa.bool_()),
        ("is_non_animal", pa.bool_()),
    ]
)


@dataclass
class IndexSummary:
    """Counts printed after indexing; they explain themselves against the paper's 25,739."""

    n_images: int
    n_annotated: int
    n_animal: int
    n_non_animal: int
    n_neither: int
    per_category: dict[str, int] = field(default_factory=dict)  # animal category name → images containing it
    n_multi_animal: int = 0  # images with two or more distinct animal categories
    rule: str = "any"

    @property
    def per_category_sum(self) -> int:
        return sum(self.per_category.values())


def load_coco(annotations: Path | str):
    """Load an instances JSON with pycocotools; malformed input is one line naming the file."""
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise MixsweepError(f"{path}: annotation file not found")
    try:
        with path.open("rb") as f:
            dataset = json.load(f)
    except json.JSONDecodeError as e:
        raise MixsweepError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise MixsweepError(f"{path}: not a UTF-8 JSON file ({e.reason})") from None
    _check_instances(path, dataset)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise MixsweepError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    return coco


def _check_instances(path: Path, dataset) -> None:
    if not isinstance(dataset, dict):
        raise MixsweepError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise MixsweepError(f"{path}: missing key '{key}' (not a COCO instances file)")
        if not isinstance(dataset[key], list):
            raise MixsweepError(f"{path}: key '{key}' must be a list, got {type(dataset[key]).__name__}")
    required = {"images": ("id", "file_name", "width", "height"), "annotations": ("image_id", "category_id"),
                "categories": ("id", "name", "supercategory")}
    for key, fields in required.items():
        for i, entry in enumerate(dataset[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise MixsweepError(f"{path}: {key}[{i}] lacks {', '.join(repr(m) for m in missing)}")
    image_ids = {im["id"] for im in dataset["images"]}
    cat_ids = {c["id"] for c in dataset["categories"]}
    for i, ann in enumerate(dataset["annotations"]):
        if ann["image_id"] not in image_ids:
            raise MixsweepError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise MixsweepError(f"{path}: annotations[{i}] refers to unknown category_id {ann['category_id']}")


def animal_categories(coco) -> dict[int, str]:
    """{category id: name} of supercategory `animal`, as declared in the JSON."""
    cats = {c["id"]: c["name"] for c in coco.dataset["categories"] if c.get("supercategory") == ANIMAL_SUPERCATEGORY}
    return dict(sorted(cats.items()))


def classify(category_ids: list[int], animal_ids: set[int], rule: str, unlabelled_as_non_animal: bool) -> tuple[bool, bool]:
    """(is_animal, is_non_animal) of one image from the categories of all its annotations."""
    if not category_ids:
        return False, unlabelled_as_non_animal
    distinct = set(category_ids)
    has_animal = bool(distinct & animal_ids)
    if rule == "any":
        is_animal = has_animal
    elif rule == "paper":
        is_animal = len(distinct) == 1 and has_animal
    else:
        raise MixsweepError(f"unknown rule '{rule}' (choose from {', '.join(RULES)})")
    return is_animal, not has_animal


def build_coco_index(
    annotations: Path | str,
    images: Path | str | None = None,
    rule: str = "any",
    unlabelled_as_non_animal: bool = False,
    allow_missing: bool = False,
) -> tuple[pa.Table, IndexSummary]:
    """Index an instances JSON; with `images`, check every listed file exists (missing → error or dropped)."""
    if rule not in RULES:
        raise MixsweepError(f"--rule: unknown rule '{rule}' (choose from {', '.join(RULES)})")
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise MixsweepError(f"{images_dir}: image folder not found")
    coco = load_coco(annotations)
    animals = animal_categories(coco)
    if not animals:
        raise MixsweepError(f"{annotations}: no category has supercategory '{ANIMAL_SUPERCATEGORY}'")
    animal_ids = set(animals)

    rows = {name: [] for name in INDEX_SCHEMA.names}
    per_category: Counter[int] = Counter()
    n_multi = 0
    missing: list[Path] = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        if images_dir is not None and not (images_dir / info["file_name"]).is_file():
            missing.append(images_dir / info["file_name"])
            continue
        anns = coco.imgToAnns.get(image_id, [])
        cats = sorted(a["category_id"] for a in anns)
        is_animal, is_non_animal = classify(cats, animal_ids, rule, unlabelled_as_non_animal)
        animal_kinds = set(cats) & animal_ids
        per_category.update(animal_kinds)
        n_multi += len(animal_kinds) >= 2
        rows["image_id"].append(int(image_id))
        rows["file_name"].append(str(info["file_name"]))
        rows["width"].append(int(info["width"]))
        rows["height"].append(int(info["height"]))
        rows["category_ids"].append(sorted(set(cats)))
        rows["n_annotations"].append(len(anns))
        rows["is_animal"].append(is_animal)
        rows["is_non_animal"].append(is_non_animal)

    if missing and not allow_missing:
        raise MixsweepError(
            f"{missing[0]}: image file missing ({len(missing)} of {len(coco.imgs)} images listed in "
            f"{annotations} are not under {images_dir}; pass --allow-missing to drop them)"
        )
    table = pa.table(rows, schema=INDEX_SCHEMA)
    n_animal = sum(rows["is_animal"])
    n_non = sum(rows["is_non_animal"])
    summary = IndexSummary(
        n_images=table.num_rows,
        n_annotated=sum(1 for n in rows["n_annotations"] if n > 0),
        n_animal=n_animal,
        n_non_animal=n_non,
        n_neither=table.num_rows - n_animal - n_non,
        per_category={animals[c]: per_category.get(c, 0) for c in animals},
        n_multi_animal=n_multi,
        rule=rule,
    )
    meta = {
        "mixsweep.kind": "coco-index",
        "mixsweep.rule": rule,
        "mixsweep.unlabelled_as_non_animal": str(unlabelled_as_non_animal).lower(),
        "mixsweep.animal_categories": json.dumps(animals, sort_keys=True),
        "mixsweep.source": Path(annotations).name,
        "mixsweep.missing_dropped": str(len(missing)),
    }
    return table.replace_schema_metadata(meta), summary


def read_index(path: Path | str) -> pa.Table:
    """Read an index written by `build_coco_index`, checking it is one."""
    return read_table(path, ("image_id", "file_name", "is_animal", "is_non_animal"), "COCO index",
                      "make one with `mixsweep data coco-index`")
