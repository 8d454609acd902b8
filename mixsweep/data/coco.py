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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mixsweep.data.imread import link_escape, name_problem
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
        raise MixsweepError(f"{path}: not a UTF-8 JSON file ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise MixsweepError(f"{path}: JSON nested too deeply to read (a COCO instances file is 4 levels "
                            f"deep)") from None
    except ValueError as e:  # a number longer than Python's int conversion limit
        raise MixsweepError(f"{path}: unreadable JSON ({str(e).split(';')[0]})") from None
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
    image_ids = _check_images(path, dataset["images"])
    cat_ids = _check_categories(path, dataset["categories"])
    for i, ann in enumerate(dataset["annotations"]):
        # Type first: `True in {1}` and `1.0 in {1}` hold, and a list or object is not hashable.
        if not (type(ann["image_id"]) is int and ann["image_id"] in image_ids):
            raise MixsweepError(f"{path}: annotations[{i}] refers to unknown image_id {_show(ann['image_id'])}")
        if not (type(ann["category_id"]) is int and ann["category_id"] in cat_ids):
            raise MixsweepError(f"{path}: annotations[{i}] refers to unknown category_id "
                                f"{_show(ann['category_id'])}")


# The index columns the values land in: image_id int64; category_ids, width and height int32.
_INT32_MAX = 2**31 - 1


def _is_int(value, bits: int = 64) -> bool:
    """A JSON integer that fits a signed `bits`-bit column (JSON true is no integer here)."""
    return type(value) is int and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _show(value) -> str:
    """A JSON value as the file spells it: one line, ASCII, short."""
    if isinstance(value, (dict, list)):
        return "{...}" if isinstance(value, dict) else "[...]"
    text = json.dumps(value)  # escapes surrogates and control characters
    return text if len(text) <= 60 else text[:57] + "..."


def _check_images(path: Path, images: list[dict]) -> set[int]:
    """Every image record's id, file_name, width and height, checked once; returns the image ids."""
    for i, im in enumerate(images):
        image_id = im["id"]
        if not _is_int(image_id):
            raise MixsweepError(f"{path}: images[{i}]: id {_show(image_id)} is not a 64-bit integer")
        where = f"{path}: images[{i}] (id {image_id})"
        problem = name_problem(im["file_name"])
        if problem:
            raise MixsweepError(f"{where}: file_name {_show(im['file_name'])} {problem}; it must be a path "
                                f"relative to the image folder")
        for key in ("width", "height"):
            v = im[key]
            # 640.0 is a whole number of pixels; 64.5, NaN, 1e12, -5, "64" and true are not.
            whole = _is_int(v) or (isinstance(v, float) and v.is_integer())
            if not (whole and 1 <= v <= _INT32_MAX):
                raise MixsweepError(f"{where}: {key} {_show(v)} is not a whole number of pixels in 1..{_INT32_MAX}")
    return _check_unique(path, "images", images, lambda im: _show(im["file_name"]),
                         "each image needs its own id, or one record replaces the other and inherits its annotations")


def _check_categories(path: Path, categories: list[dict]) -> set[int]:
    """Every category's id, name and supercategory; returns the category ids."""
    for i, cat in enumerate(categories):
        if not _is_int(cat["id"], 32):
            raise MixsweepError(f"{path}: categories[{i}]: id {_show(cat['id'])} is not a 32-bit integer")
        for key in ("name", "supercategory"):
            if not isinstance(cat[key], str):
                raise MixsweepError(f"{path}: categories[{i}] (id {cat['id']}): {key} {_show(cat[key])} is not "
                                    f"a string")
    return _check_unique(path, "categories", categories,
                         lambda c: f"{_show(c['name'])} in {_show(c['supercategory'])}",
                         "each category needs its own id, or one declaration relabels every annotation of the other")


def _check_unique(path: Path, key: str, records: list[dict], label: Callable[[dict], str], why: str) -> set[int]:
    """The records' ids, which must differ; a clash names the first few ids and the records sharing each."""
    counts = Counter(r["id"] for r in records)
    dups = sorted(i for i, n in counts.items() if n > 1)
    if dups:
        by_id: dict[int, list[str]] = {}
        for r in records:
            if counts[r["id"]] > 1:
                by_id.setdefault(r["id"], []).append(label(r))
        shown = ", ".join(f"{i} ({', '.join(by_id[i][:3])}{', ...' if len(by_id[i]) > 3 else ''})" for i in dups[:3])
        what = (f"id {shown} is used more than once" if len(dups) == 1 else
                f"{len(dups)} ids are used more than once: {shown}{', ...' if len(dups) > 3 else ''}")
        raise MixsweepError(f"{path}: {key}: {what}; {why}")
    return set(counts)


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
        if images_dir is not None:
            target = link_escape(images_dir, info["file_name"])
            if target is not None:
                raise MixsweepError(f"{images_dir / info['file_name']}: image {image_id}'s file_name leads outside "
                                    f"{images_dir} through a symlink (to {target!r}); pass the folder the links "
                                    f"lead into as --images")
            if not (images_dir / info["file_name"]).is_file():
                missing.append(images_dir / info["file_name"])
                continue
        anns = coco.imgToAnns.get(image_id, [])
        cats = sorted(a["category_id"] for a in anns)
        is_animal, is_non_animal = classify(cats, animal_ids, rule, unlabelled_as_non_animal)
        animal_kinds = set(cats) & animal_ids
        per_category.update(animal_kinds)
        n_multi += len(animal_kinds) >= 2
        rows["image_id"].append(int(image_id))
        rows["file_name"].append(info["file_name"])
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
