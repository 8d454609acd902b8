"""Synthetic COCO / Oxford-IIIT Pet data: real formats, determinism, meaningful labels, awkward files."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fixtures import read_rgb
from mixsweep.data.imread import ImageReadError, is_image_file, read_label_png
from mixsweep.errors import MixsweepError
from mixsweep.synth import COCO_KINDS, SCALES, SynthPaths, write_synth
from mixsweep.synth.coco import scene_annotations
from mixsweep.synth.labels import ANIMAL_IDS, BREED_CLASS_ID, CAT_BREEDS, DOG_BREEDS, PERSON_ID
from mixsweep.synth.looks import PET_LOOKS, coco_look
from mixsweep.synth.pets import AWKWARD_PETS, STRAY_PET_FILES, pet_image_numbers
from mixsweep.synth.scenes import render_coco_scene


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(synth_small) -> SynthPaths:
    """The session's small set (write_synth(..., "small", seed=0)); these tests only read it."""
    return synth_small


@pytest.fixture(scope="module")
def cocos(small) -> dict[str, COCO]:
    return {"train": COCO(str(small.coco_train_annotations)), "val": COCO(str(small.coco_val_annotations))}


# ---------------------------------------------------------------------------------------------- API / layout

def test_bad_scale_is_a_user_error(tmp_path):
    with pytest.raises(MixsweepError, match="huge.*small.*medium"):
        write_synth(tmp_path, "huge")
    assert not any(tmp_path.iterdir())


def test_layout(small):
    root = small.root
    assert small.coco_train_annotations == root / "coco/annotations/instances_train2017.json"
    assert small.coco_val_annotations == root / "coco/annotations/instances_val2017.json"
    assert small.coco_train_images == root / "coco/train2017"
    assert small.coco_val_images == root / "coco/val2017"
    for sub in ("images", "annotations/trimaps", "annotations/xmls"):
        assert (small.pets_root / sub).is_dir()
    for f in ("list.txt", "trainval.txt", "test.txt"):
        assert (small.pets_root / "annotations" / f).is_file()


def test_scales_table():
    assert set(SCALES) == {"small", "demo", "medium"}
    assert SCALES["demo"].n_pets >= 300  # a test IoU over tens of images, not a handful
    med = SCALES["medium"]
    assert len(med.pet_breeds) == 37 and med.n_coco_train >= 1500
    assert SCALES["small"].n_coco_train < med.n_coco_train
    for spec in SCALES.values():
        assert all(spec.coco_train[k] > 0 and spec.coco_val[k] > 0 for k in COCO_KINDS)
        for name in AWKWARD_PETS:
            breed, n = name.rsplit("_", 1)
            assert breed in spec.pet_breeds and int(n) in pet_image_numbers(breed, spec.pets_per_breed)
        assert {b[0].isupper() for b in spec.pet_breeds} == {True, False}  # both species


def test_deterministic_and_seed_dependent(small, tmp_path):
    again = write_synth(tmp_path / "b", "small", seed=0)
    ref = _hashes(small.root)
    assert _hashes(again.root) == ref
    other = _hashes(write_synth(tmp_path / "c", "small", seed=1).root)
    assert other[str(Path("coco/annotations/instances_train2017.json"))] != \
        ref[str(Path("coco/annotations/instances_train2017.json"))]
    pet_images = [k for k in ref if k.startswith("pets/images/") and k.endswith(".jpg") and k in other]
    assert len(pet_images) > 50
    assert sum(other[k] != ref[k] for k in pet_images) > 0.9 * len(pet_images)


def test_reuse_and_refuse_foreign_output(small, tmp_path):
    before = _hashes(small.root)
    assert write_synth(small.root, "small", seed=0) == small  # complete set with same args: reused
    assert _hashes(small.root) == before
    (tmp_path / "pets").mkdir()
    (tmp_path / "pets" / "mine.txt").write_text("not synth")
    with pytest.raises(MixsweepError, match="pets"):
        write_synth(tmp_path, "small")
    assert (tmp_path / "pets" / "mine.txt").read_text() == "not synth"


# ---------------------------------------------------------------------------------------------- COCO part

def test_categories_are_the_real_coco_ones(cocos):
    for coco in cocos.values():
        cats = coco.loadCats(coco.getCatIds())
        assert len(cats) == 80 and max(c["id"] for c in cats) == 90 and 12 not in coco.cats
        assert sorted(coco.getCatIds(supNms=["animal"])) == list(range(16, 26))
        names = {c["id"]: c["name"] for c in cats}
        assert (names[16], names[18], names[25], names[1]) == ("bird", "dog", "giraffe", "person")
        assert len({c["supercategory"] for c in cats}) == 12


def test_coco_json_loads_and_every_annotation_rasterises(small, cocos):
    for split, coco in cocos.items():
        img_dir = small.coco_train_images if split == "train" else small.coco_val_images
        assert len(coco.anns) > len(coco.imgs)
        for img in coco.imgs.values():
            assert img["file_name"] == f"{img['id']:012d}.jpg"
            with Image.open(img_dir / img["file_name"]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (img["width"], img["height"]))
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            m = coco.annToMask(ann)
            assert m.shape == (img["height"], img["width"]) and m.sum() > 0
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6
            assert abs(ann["area"] - m.sum()) <= 0.02 * m.sum() + 2
            if ann["iscrowd"]:
                seg = ann["segmentation"]
                assert isinstance(seg["counts"], list) and seg["size"] == [img["height"], img["width"]]
            else:
                assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
    # ids unique across the two splits, as in the real release
    assert not set(cocos["train"].imgs) & set(cocos["val"].imgs)
    assert not set(cocos["train"].anns) & set(cocos["val"].anns)


def test_special_kinds_exist(cocos):
    animals = set(ANIMAL_IDS)
    for coco in cocos.values():
        found = defaultdict(int)
        n_animal_images = 0
        for img_id in coco.imgs:
            anns = coco.imgToAnns[img_id]
            if not anns:
                found["unannotated"] += 1
                continue
            solo = {a["category_id"] for a in anns if not a["iscrowd"]}
            crowd = {a["category_id"] for a in anns if a["iscrowd"]}
            n_animal_images += bool((solo | crowd) & animals)
            if len(solo & animals) >= 2:
                found["two_animal_kinds"] += 1
            if solo & animals and PERSON_ID in solo:
                found["animal_and_person"] += 1
            if crowd & animals and not solo & animals and solo:
                found["crowd_is_only_animal_plus_objects"] += 1
            if crowd and crowd <= animals and not solo:
                found["only_crowd_animals"] += 1
            if solo and not (solo | crowd) & animals:
                found["non_animal"] += 1
        assert set(found) == {"unannotated", "two_animal_kinds", "animal_and_person",
                              "crowd_is_only_animal_plus_objects", "only_crowd_animals", "non_animal"}
        assert 0.3 < n_animal_images / len(coco.imgs) < 0.7


def test_polygons_cover_the_drawn_creatures():
    """The polygon annotation against the exact pixels the drawer painted."""
    ious, recalls = [], []
    for i in range(12):
        scene = render_coco_scene(123, 7, i, "animal" if i % 3 else "two_animals")
        w, h = scene.image.size
        objs = [o for o in scene.objects if o.mask.sum() >= 12]
        anns = scene_annotations(scene)
        assert [a["category_id"] for a in anns] == [o.category_id for o in objs]
        for o, a in zip(objs, anns):
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))).astype(bool)
            inter = (m & o.mask).sum()
            ious.append(inter / (m | o.mask).sum())
            recalls.append(inter / o.mask.sum())
    assert len(ious) >= 15
    assert np.mean(ious) > 0.8 and min(ious) > 0.55
    assert np.mean(recalls) > 0.95


def test_written_annotations_sit_on_image_edges(small, cocos):
    """In the written JPEGs, animal outlines lie on real edges: contrast across the outline beats elsewhere."""
    coco = cocos["train"]
    ratios = []
    for ann in coco.anns.values():
        if ann["iscrowd"] or ann["category_id"] not in ANIMAL_IDS or ann["area"] < 400:
            continue
        img = coco.imgs[ann["image_id"]]
        arr = np.asarray(Image.open(small.coco_train_images / img["file_name"]), np.float32).mean(axis=2)
        gy, gx = np.gradient(arr)
        grad = np.hypot(gx, gy)
        m = coco.annToMask(ann).astype(bool)
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        ratios.append(grad[edge].mean() / grad.mean())
    assert len(ratios) > 30
    # ~5 here; the same masks shifted 15 px sideways give ~1.7.
    assert np.median(ratios) > 3.0


def test_animal_looks_are_consistent_per_category():
    """A learnable signal: each COCO animal kind has its own look; cats and dogs share the pets' looks."""
    rng = np.random.default_rng(0)
    assert coco_look(24, rng).texture == "stripes"
    assert coco_look(25, rng).texture == "patches"
    assert coco_look(22, rng).body == "elephant"
    assert coco_look(16, rng).body == "bird"
    # Cats and dogs in COCO are drawn from the Pet breeds' looks (the shared family).
    looks = {coco_look(17, rng) for _ in range(40)} | {coco_look(18, rng) for _ in range(40)}
    assert looks <= set(PET_LOOKS.values()) and len(looks) > 15


# ---------------------------------------------------------------------------------------------- Pets part

def _list_rows(path: Path) -> list[tuple[str, int, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, cid, sp, bid = line.split()
        rows.append((name, int(cid), int(sp), int(bid)))
    return rows


def test_pet_lists(small):
    ann = small.pets_root / "annotations"
    text = (ann / "list.txt").read_text()
    header = [l for l in text.splitlines() if l.startswith("#")]
    assert header[0] == "#Image CLASS-ID SPECIES BREED ID" and len(header) == 6
    assert text.startswith("\n".join(header))
    rows = _list_rows(ann / "list.txt")
    tv, te = _list_rows(ann / "trainval.txt"), _list_rows(ann / "test.txt")
    assert not set(tv) & set(te) and sorted(tv + te) == sorted(rows)
    assert 0.4 < len(tv) / len(rows) < 0.6
    assert len(rows) == SCALES["small"].n_pets == len({r[0] for r in rows})
    for name, cid, sp, bid in rows:
        breed = name.rsplit("_", 1)[0]
        assert cid == BREED_CLASS_ID[breed]
        assert sp == (1 if breed[0].isupper() else 2)
        assert bid == (CAT_BREEDS if sp == 1 else DOG_BREEDS).index(breed) + 1
    # Real class ids: alphabetical ignoring case over all 37 breeds.
    assert BREED_CLASS_ID["Abyssinian"] == 1 and BREED_CLASS_ID["boxer"] == 9
    assert BREED_CLASS_ID["British_Shorthair"] == 10 and BREED_CLASS_ID["yorkshire_terrier"] == 37
    jpgs = sorted(p.stem for p in (small.pets_root / "images").iterdir() if is_image_file(p))
    assert jpgs == sorted(r[0] for r in rows)


def test_trimaps(small):
    rows = _list_rows(small.pets_root / "annotations" / "list.txt")
    for name, *_ in rows:
        tri = read_label_png(small.pets_root / "annotations" / "trimaps" / f"{name}.png")
        with Image.open(small.pets_root / "annotations" / "trimaps" / f"{name}.png") as t:
            assert t.mode == "L"
        with Image.open(small.pets_root / "images" / f"{name}.jpg") as im:
            assert im.size == tri.shape[::-1]
        assert set(np.unique(tri)) == {1, 2, 3}
        pet, bg = tri == 1, tri == 2
        # The border band separates pet from background everywhere (4-neighbourhood).
        assert not (pet[1:] & bg[:-1]).any() and not (pet[:-1] & bg[1:]).any()
        assert not (pet[:, 1:] & bg[:, :-1]).any() and not (pet[:, :-1] & bg[:, 1:]).any()
        assert 0.05 < (tri != 2).mean() < 0.8


def test_trimap_marks_the_pet_pixels(small):
    """The pet region differs in colour from the background in the image (labels match content)."""
    rows = _list_rows(small.pets_root / "annotations" / "trainval.txt")
    contrasts = []
    for name, *_ in rows:
        try:
            rgb, _ = read_rgb(small.pets_root / "images" / f"{name}.jpg")
        except ImageReadError:
            continue
        tri = read_label_png(small.pets_root / "annotations" / "trimaps" / f"{name}.png")
        gray = rgb.astype(np.float32).mean(axis=2)
        gy, gx = np.gradient(gray)
        grad = np.hypot(gx, gy)
        contrasts.append(grad[tri == 3].mean() / grad.mean())
    # ~3.2 here; the same trimaps shifted 15 px sideways give ~1.5.
    assert np.median(contrasts) > 2.2


def test_head_box_xmls(small):
    xmls = sorted((small.pets_root / "annotations" / "xmls").glob("*.xml"))
    tv = {r[0] for r in _list_rows(small.pets_root / "annotations" / "trainval.txt")}
    assert 0.6 * len(tv) <= len(xmls) <= len(tv)
    for x in xmls:
        root = ET.parse(x).getroot()
        assert root.findtext("filename") == x.stem + ".jpg" and x.stem in tv
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        box = [int(root.findtext(f"object/bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert 1 <= box[0] < box[2] <= w and 1 <= box[1] < box[3] <= h
        assert root.findtext("object/name") == ("cat" if x.stem[0].isupper() else "dog")


def test_awkward_files_behave_like_the_real_ones(small, capfd):
    images = small.pets_root / "images"
    expect = {"Egyptian_Mau_139": ("PNG", "P"), "Egyptian_Mau_129": ("JPEG", "L"),
              "Abyssinian_5": ("PNG", "RGBA"), "Egyptian_Mau_156": ("PNG", "RGB"),
              "beagle_116": ("JPEG", "RGB"), "staffordshire_bull_terrier_2": ("JPEG", "L")}
    for name, (fmt, mode) in expect.items():
        with Image.open(images / f"{name}.jpg") as im:
            im.load()
            assert (im.format, im.mode) == (fmt, mode), name
        arr, quirks = read_rgb(images / f"{name}.jpg")
        assert arr.ndim == 3 and arr.shape[2] == 3
        assert (quirks != "") == (name != "beagle_116"), name
    # Truncated JPEG: the header opens, the full decode fails; the project's reader calls it unreadable.
    with Image.open(images / "chihuahua_121.jpg") as im:
        assert im.format == "JPEG"
        with pytest.raises(OSError):
            im.load()
    with pytest.raises(ImageReadError):
        read_rgb(images / "chihuahua_121.jpg")
    # Corrupt JPEG data: libjpeg warns on stderr but every pixel decodes.
    tvio = pytest.importorskip("torchvision.io")
    capfd.readouterr()
    tvio.decode_jpeg(tvio.read_file(str(images / "beagle_116.jpg")))
    assert "Corrupt JPEG data" in capfd.readouterr().err
    tvio.decode_jpeg(tvio.read_file(str(images / "beagle_1.jpg")))
    assert "Corrupt JPEG data" not in capfd.readouterr().err
    # Stray files: present, and not images.
    for name in STRAY_PET_FILES:
        p = images / name
        assert p.is_file() and p.stat().st_size > 0 and not is_image_file(p)
    assert (images / "._Abyssinian_1.jpg").read_bytes()[:4] == b"\x00\x05\x16\x07"


def test_not_awkward_means_plain_rgb_jpegs(tmp_path):
    pets = write_synth(tmp_path, "small", seed=3, awkward=False).pets_root
    files = sorted((pets / "images").iterdir())
    assert all(p.suffix == ".jpg" and not p.name.startswith(".") for p in files)
    for p in files:
        with Image.open(p) as im:
            im.load()
            assert (im.format, im.mode) == ("JPEG", "RGB"), p.name
