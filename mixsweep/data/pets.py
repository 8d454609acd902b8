"""Oxford-IIIT Pet: manifest, a fixed train/val/test split, nested fine-tune subsets, trimap labels.

The manifest is built once: every listed image and trimap is decoded here, so the awkward files of the
real archive (palette, grayscale and RGBA images, a PNG saved as .jpg, corrupt JPEG data) are found and
noted once, and an unreadable file is excluded with its reason instead of failing an epoch later.

The split is a pure function of the usable image names and a seed: stratified by breed, 70/15/15, written
to the manifest's `split` column. The paper's code reshuffled on every construction without a seed, so
its train and test sets could overlap; ours cannot.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixsweep.data.imread import (ImageReadError, is_image_file, link_escape, name_problem, read_label_png,
                                  read_rgb_image)
from mixsweep.data.mixture import check_fraction, hash_rank, round_half_up
from mixsweep.errors import MixsweepError
from mixsweep.tables import read_table, table_metadata

# The label rule, defined here only: metrics, training, pictures and benchmarks import it.
TRIMAP_TO_LABEL = {1: 0, 2: 1, 3: 2}  # pet, background, border
LABEL_NAMES = ("pet", "background", "border")
IGNORE_LABEL = 255  # any other trimap value, and padding; left out of loss and metrics
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_SCHEMES = ("stratified", "official")
_OFFICIAL_VAL_SHARE = SPLIT_FRACTIONS["val"] / (SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"])  # of trainval
PACK_FIT = "squash"  # the whole pet and its whole trimap, as the paper resized them; masks nearest

MANIFEST_COLUMNS = [
    "name", "breed", "class_id", "species", "breed_id", "official_split", "image_path", "trimap_path",
    "width", "height", "usable", "issue", "quirks", "split", "finetune_order",
]

_LUT = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _t, _l in TRIMAP_TO_LABEL.items():
    _LUT[_t] = _l


def trimap_to_labels(trimap: np.ndarray) -> np.ndarray:
    """Trimap values 1/2/3 → labels 0 pet / 1 background / 2 border; anything else → 255 (ignored)."""
    return _LUT[np.asarray(trimap, dtype=np.uint8)]


def resolve_root(root: Path | str) -> Path:
    """The folder holding images/ and annotations/: the official layout or torchvision's download layout."""
    root = Path(root)
    if not root.is_dir():
        raise MixsweepError(f"{root}: Oxford-IIIT Pet root not found")
    for cand in (root, root / "oxford-iiit-pet"):
        if (cand / "images").is_dir() and (cand / "annotations").is_dir():
            return cand
    raise MixsweepError(
        f"{root}: not an Oxford-IIIT Pet folder (expected images/ and annotations/ in it or in oxford-iiit-pet/)"
    )


@dataclass(frozen=True)
class PetEntry:
    name: str
    class_id: int
    species: str
    breed_id: int

    @property
    def breed(self) -> str:
        return self.name.rsplit("_", 1)[0]


LIST_FIELDS = ("Image", "CLASS-ID", "SPECIES", "BREED-ID")
_FIELD_EXPECTED = {
    "CLASS-ID": "a positive integer (the breed's class, 1-37)",
    "SPECIES": "1 (cat) or 2 (dog)",
    "BREED-ID": "a positive integer (the breed's number within its species: 1-12 for cats, 1-25 for dogs)",
}


def parse_list(path: Path) -> list[PetEntry]:
    """Parse list.txt / trainval.txt / test.txt: `#` comments, then `Image CLASS-ID SPECIES BREED-ID`."""
    if not path.is_file():
        raise MixsweepError(f"{path}: annotation list not found")
    entries, seen = [], {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != len(LIST_FIELDS):
            raise MixsweepError(f"{path}:{lineno}: expected '{' '.join(LIST_FIELDS)}' ({len(LIST_FIELDS)} fields), "
                                f"got {len(parts)}: {line[:60]!r}")
        name = parts[0]
        problem = name_problem(name)
        if problem:  # the name becomes images/<name>.jpg and annotations/trimaps/<name>.png
            raise MixsweepError(f"{path}:{lineno}: image name {name!r} {problem}; it must name a file under "
                                f"images/ and annotations/trimaps/")
        values = {}
        for i, (field, text) in enumerate(zip(LIST_FIELDS[1:], parts[1:]), 2):
            ok = text.isascii() and text.isdigit() and int(text) > 0
            if ok and field == "SPECIES":
                ok = int(text) in (1, 2)
            if not ok:
                raise MixsweepError(f"{path}:{lineno}: field {i} ({field}) of {name} is {text!r}; expected "
                                    f"{_FIELD_EXPECTED[field]}")
            values[field] = int(text)
        if name in seen:
            raise MixsweepError(f"{path}:{lineno}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        species = "cat" if values["SPECIES"] == 1 else "dog"
        entries.append(PetEntry(name, values["CLASS-ID"], species, values["BREED-ID"]))
    return entries


def _image_files(folder: Path) -> list[Path]:
    """The image files in `folder`; their names go into the manifest, so each must be UTF-8."""
    files = [p for p in folder.iterdir() if is_image_file(p)]
    for p in files:
        problem = name_problem(p.name)  # a non-UTF-8 name arrives as a lone surrogate: Parquet cannot store it
        if problem:
            raise MixsweepError(f"{folder}: file name {os.fsencode(p.name)!r} {problem}; rename or remove it")
    return files


def _inspect(args: tuple[str, str]) -> tuple[int, int, str, str, str]:
    """(width, height, issue, quirks, culprit) of one image+trimap pair; issue '' means usable, culprit is the
    file the issue is about ('image' or 'trimap')."""
    image_path, trimap_path = args
    try:
        img, quirks = read_rgb_image(image_path)
    except ImageReadError as e:
        return 0, 0, f"unreadable image: {e.reason}", "", "image"
    w, h = img.size
    try:
        trimap = read_label_png(trimap_path)
    except ImageReadError as e:
        return w, h, f"unreadable trimap: {e.reason}", quirks, "trimap"
    if trimap.shape != (h, w):
        return w, h, f"trimap size {trimap.shape[1]}x{trimap.shape[0]} != image size {w}x{h}", quirks, "trimap"
    bad = np.setdiff1d(np.unique(trimap), list(TRIMAP_TO_LABEL)).tolist()
    if bad:
        shown = str(bad[:8])[:-1] + (f", ... ({len(bad)} values)]" if len(bad) > 8 else "]")
        return w, h, f"trimap values {shown} outside 1/2/3", quirks, "trimap"
    return w, h, "", quirks, ""


def _inspect_all(pairs: list[tuple[str, str]], workers: int | None) -> list[tuple[int, int, str, str, str]]:
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(pairs) < 64:
        return [_inspect(p) for p in pairs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_inspect, pairs, chunksize=32))


def stratified_split(names: list[str], breeds: list[str], seed: int) -> list[str]:
    """train/val/test per name: within each breed a hash order, then 15% test, 15% val, the rest train."""
    split = [""] * len(names)
    by_breed: dict[str, list[int]] = {}
    for i, b in enumerate(breeds):
        by_breed.setdefault(b, []).append(i)
    for breed in sorted(by_breed):
        idx = np.array(by_breed[breed])
        ranks = hash_rank("pets-split", seed, [names[i] for i in idx])
        idx = idx[np.lexsort((np.array([names[i] for i in idx]), ranks))]
        n = len(idx)
        n_test = round_half_up(SPLIT_FRACTIONS["test"] * n)
        n_val = round_half_up(SPLIT_FRACTIONS["val"] * n)
        for j, i in enumerate(idx):
            split[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return split


def finetune_order(names: list[str], breeds: list[str], seed: int) -> list[int]:
    """A rank over the train images whose every prefix is close to breed-stratified.

    Each breed's images are hash-ordered; the j-th of a breed with n images gets the key (j + 0.5) / n.
    Sorting by key interleaves breeds in proportion, so the subset at fraction f (a prefix) keeps the breed
    mix, and subsets at f1 < f2 are nested.
    """
    keys = np.zeros(len(names))
    tie = hash_rank("pets-finetune", seed, names)
    by_breed: dict[str, list[int]] = {}
    for i, b in enumerate(breeds):
        by_breed.setdefault(b, []).append(i)
    for idx in by_breed.values():
        idx = np.array(idx)
        idx = idx[np.lexsort((np.array([names[i] for i in idx]), tie[idx]))]
        keys[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = np.lexsort((np.array(names), tie, keys))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank.tolist()


def build_pets_manifest(
    root: Path | str,
    seed: int = 0,
    scheme: str = "stratified",
    allow_missing: bool = False,
    workers: int | None = None,
) -> pa.Table:
    """One row per image listed in annotations/list.txt (plus unlisted image files, excluded)."""
    if scheme not in SPLIT_SCHEMES:
        raise MixsweepError(f"--split: unknown scheme '{scheme}' (choose from {', '.join(SPLIT_SCHEMES)})")
    root = resolve_root(root)
    ann = root / "annotations"
    entries = parse_list(ann / "list.txt")
    if not entries:
        raise MixsweepError(f"{ann / 'list.txt'}: lists no images")
    official = {}
    for fname, tag in (("trainval.txt", "trainval"), ("test.txt", "test")):
        if (ann / fname).is_file():
            official.update({e.name: tag for e in parse_list(ann / fname)})
        elif scheme == "official":
            raise MixsweepError(f"{ann / fname}: not found; --split official takes test from annotations/test.txt "
                                f"and train/val from annotations/trainval.txt")

    rows: list[dict] = []
    missing: list[str] = []
    for e in entries:
        for folder, file, what in ((root / "images", f"{e.name}.jpg", "image"),
                                   (ann / "trimaps", f"{e.name}.png", "trimap")):
            p = folder / file
            target = link_escape(folder, file)
            if target is not None:
                raise MixsweepError(f"{p}: the {what} of {e.name} leads outside {folder} through a symlink "
                                    f"(to {target!r})")
            if not p.is_file():
                missing.append(f"{p}: {what} file missing (listed in {ann / 'list.txt'})")
        rows.append(dict(name=e.name, breed=e.breed, class_id=e.class_id, species=e.species, breed_id=e.breed_id,
                         official_split=official.get(e.name, ""), image_path=f"images/{e.name}.jpg",
                         trimap_path=f"annotations/trimaps/{e.name}.png"))
    if missing and not allow_missing:
        more = f" (and {len(missing) - 1} more; --allow-missing excludes them)" if len(missing) > 1 else ""
        raise MixsweepError(missing[0] + more)

    listed = {e.name for e in entries}
    unlisted = sorted(p.stem for p in _image_files(root / "images") if p.stem not in listed)

    results = _inspect_all([(str(root / r["image_path"]), str(root / r["trimap_path"])) for r in rows], workers)
    for r, (w, h, issue, quirks, culprit) in zip(rows, results):
        r.update(width=w, height=h, issue=issue, quirks=quirks, usable=issue == "")
        if issue:
            warnings.warn(f"{root / r[culprit + '_path']}: {issue}; {r['name']} is excluded from the manifest's "
                          f"splits", stacklevel=2)
    for name in unlisted:
        rows.append(dict(name=name, breed=name.rsplit("_", 1)[0], class_id=0, species="", breed_id=0,
                         official_split="", image_path=f"images/{name}.jpg", trimap_path="", width=0, height=0,
                         issue="not in annotations/list.txt", quirks="", usable=False))

    usable = [r for r in rows if r["usable"]]
    if scheme == "stratified":
        splits = stratified_split([r["name"] for r in usable], [r["breed"] for r in usable], seed)
    else:
        orphans = [r["name"] for r in usable if not r["official_split"]]
        if orphans:
            warnings.warn(f"{ann / 'list.txt'}: {len(orphans)} usable images are in neither trainval.txt nor "
                          f"test.txt (first: {orphans[0]}); --split official puts them in train/val", stacklevel=2)
        splits = _official_split(usable, seed)
    for r, s in zip(usable, splits):
        r["split"] = s
    _check_split_sizes(root, rows, usable, scheme)
    train = [r for r in usable if r["split"] == "train"]
    for r, rank in zip(train, finetune_order([r["name"] for r in train], [r["breed"] for r in train], seed)):
        r["finetune_order"] = rank
    for r in rows:
        r.setdefault("split", "excluded")
        r.setdefault("finetune_order", -1)

    rows.sort(key=lambda r: r["name"])
    table = pa.table({c: [r[c] for r in rows] for c in MANIFEST_COLUMNS})
    meta = {"kind": "pets-manifest", "root": str(root.resolve()), "seed": str(seed), "scheme": scheme}
    return table.replace_schema_metadata({f"mixsweep.{k}": v for k, v in meta.items()})


def _issue_kind(issue: str) -> str:
    """An issue without its particulars, to count issues of one kind."""
    for kind in ("unreadable image", "unreadable trimap"):
        if issue.startswith(kind):
            return kind
    if issue.startswith("trimap size"):
        return "trimap size != image size"
    if issue.startswith("trimap values"):
        return "trimap values outside 1/2/3"
    return issue


def _check_split_sizes(root: Path, rows: list[dict], usable: list[dict], scheme: str) -> None:
    """No train image is an error (nothing to fine-tune on); an empty val or test split is a warning."""
    counts = {s: sum(r["split"] == s for r in usable) for s in ("train", "val", "test")}
    if not counts["train"]:
        listed = [r for r in rows if r["issue"] != "not in annotations/list.txt"]
        if not usable:
            kinds: dict[str, int] = {}
            for r in listed:
                kinds[_issue_kind(r["issue"])] = kinds.get(_issue_kind(r["issue"]), 0) + 1
            first = listed[0]
            culprit = first["image_path"] if first["issue"].startswith("unreadable image") else first["trimap_path"]
            raise MixsweepError(
                f"{root}: the train split would be empty: none of the {len(listed)} images in "
                f"annotations/list.txt is usable ({', '.join(f'{n} {k}' for k, n in kinds.items())}; first: "
                f"{root / culprit}: {first['issue']})")
        raise MixsweepError(f"{root}: the train split would be empty: all {len(usable)} usable images are in "
                            f"annotations/test.txt (--split {scheme})")
    for split in ("val", "test"):
        if counts[split]:
            continue
        if scheme == "official" and split == "test":
            why = "no usable image is listed in annotations/test.txt"
        else:
            pool = [r for r in usable if r["split"] != "test"] if scheme == "official" else usable
            per_breed: dict[str, int] = {}
            for r in pool:
                per_breed[r["breed"]] = per_breed.get(r["breed"], 0) + 1
            what = "trainval.txt's" if scheme == "official" else "the"
            share = _OFFICIAL_VAL_SHARE if scheme == "official" else SPLIT_FRACTIONS[split]
            why = (f"{what} {len(pool)} usable images, at most {max(per_breed.values())} per breed, are too few "
                   f"to give {split} {share:.0%} of each breed")
        warnings.warn(f"{root}: the {split} split is empty: {why}", stacklevel=3)


def _official_split(usable: list[dict], seed: int) -> list[str]:
    """test.txt stays test; trainval.txt is split 70:15 into train and val, stratified by breed."""
    out = ["test" if r["official_split"] == "test" else "" for r in usable]
    tv = [i for i, r in enumerate(usable) if r["official_split"] != "test"]
    names = [usable[i]["name"] for i in tv]
    ranks = hash_rank("pets-official", seed, names)
    by_breed: dict[str, list[int]] = {}
    for j, i in enumerate(tv):
        by_breed.setdefault(usable[i]["breed"], []).append(j)
    for js in by_breed.values():
        js = sorted(js, key=lambda j: (int(ranks[j]), names[j]))
        n_val = round_half_up(_OFFICIAL_VAL_SHARE * len(js))
        for k, j in enumerate(js):
            out[tv[j]] = "val" if k < n_val else "train"
    return out


def manifest_summary(table: pa.Table) -> dict[str, int]:
    counts = {s: 0 for s in ("train", "val", "test", "excluded")}
    for s in table.column("split").to_pylist():
        counts[s] = counts.get(s, 0) + 1
    return counts


def read_manifest(path: Path | str) -> pa.Table:
    return read_table(path, ("name", "image_path", "trimap_path", "split", "finetune_order", "usable"),
                      "Pets manifest", "make one with `mixsweep data pets`")


def finetune_subset(manifest: pa.Table, fraction: float, seed: int | None = None) -> pa.Table:
    """The train rows of a fine-tune subset: the first round(f·n_train) of the nested order.

    With `seed` other than the manifest's, the order is recomputed for that seed (still nested).
    """
    fraction = check_fraction(fraction, "finetune fraction")
    train = manifest.filter(pc.equal(manifest.column("split"), "train"))
    if seed is None:
        order = np.asarray(train.column("finetune_order").to_numpy())
    else:
        order = np.asarray(finetune_order(train.column("name").to_pylist(), train.column("breed").to_pylist(), seed))
    k = round_half_up(fraction * train.num_rows)
    if fraction > 0 and k == 0:
        raise MixsweepError(f"finetune fraction {fraction:g} of {train.num_rows} train images selects no image")
    return train.take(np.argsort(order, kind="stable")[:k])


def pets_pack_items(manifest: pa.Table, root: Path | str | None = None) -> list:
    """PackItems (image + trimap) of the usable rows; `root` defaults to the one the manifest was built from."""
    from mixsweep.data.packed import PackItem

    root = Path(root) if root is not None else Path(table_metadata(manifest).get("root", ""))
    if not root.is_dir():
        raise MixsweepError(f"{root}: Pet root of the manifest not found (pass the root explicitly)")
    usable = manifest.filter(pc.equal(manifest.column("usable"), True))
    names, images, trimaps = (usable.column(c).to_pylist() for c in ("name", "image_path", "trimap_path"))
    for n, i, t in zip(names, images, trimaps):
        # Built from checked names, but a store may hold a manifest from before that check.
        for path in (i, t):
            if problem := name_problem(path):
                raise MixsweepError(f"Pets manifest: {n}: path {path!r} {problem}; rebuild it with "
                                    f"`mixsweep data pets`")
    return [PackItem(n, str(root / i), str(root / t)) for n, i, t in zip(names, images, trimaps)]
