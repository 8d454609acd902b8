"""Synthetic look-alike COCO 2017 and Oxford-IIIT Pet data, written in the real on-disk formats.

The real archives cannot be downloaded here, so tests and `make demo` run the real loaders on this. The
content is procedural but carries a real signal: animal images hold textured creatures of the ten COCO
animal kinds in natural-looking scenes, non-animal images hold man-made objects, and the pets are drawn by
the same creature drawer, so pre-training on more animals has something to find. Everything is a pure
function of (scale, seed, awkward): the same call writes byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from mixsweep.errors import MixsweepError

GENERATOR_VERSION = 2  # 2: close-ups, worlds
MARKER = "synth.json"

# ----------------------------------------------------------------------------------------------------------
# Tables (real COCO 2017 categories, real Oxford-IIIT Pet breeds)
# ----------------------------------------------------------------------------------------------------------

# (id, name, supercategory), exactly as in instances_*2017.json.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"), (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"), (24, "zebra", "animal"),
    (25, "giraffe", "animal"), (27, "backpack", "accessory"), (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"), (32, "tie", "accessory"), (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"), (35, "skis", "sports"), (36, "snowboard", "sports"),
    (37, "sports ball", "sports"), (38, "kite", "sports"), (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"), (41, "skateboard", "sports"), (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"), (44, "bottle", "kitchen"), (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"), (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"), (58, "hot dog", "food"),
    (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
    (63, "couch", "furniture"), (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"), (78, "microwave", "appliance"),
    (79, "oven", "appliance"), (80, "toaster", "appliance"), (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"),
    (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
)
ANIMAL_IDS: tuple[int, ...] = (16, 17, 18, 19, 20, 21, 22, 23, 24, 25)
PERSON_ID = 1

CAT_BREEDS = ("Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon",
              "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx")
DOG_BREEDS = ("american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
              "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
              "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian",
              "pug", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
              "wheaten_terrier", "yorkshire_terrier")
# CLASS-ID follows the real list.txt: alphabetical ignoring case, over both species.
BREED_CLASS_ID: dict[str, int] = {b: i + 1 for i, b in enumerate(sorted(CAT_BREEDS + DOG_BREEDS, key=str.lower))}

PETS_LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Dog 1:12:Cat\n"
    "#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)

# Awkward files of the real archive (names as in FACTS.md) and how each is stored when awkward=True.
AWKWARD_PETS: dict[str, str] = {
    "Abyssinian_5": "rgba_png",
    "Egyptian_Mau_129": "gray_jpeg",
    "Egyptian_Mau_139": "palette_png",
    "Egyptian_Mau_156": "rgb_png",
    "beagle_116": "corrupt_jpeg",
    "chihuahua_121": "truncated_jpeg",
    "staffordshire_bull_terrier_2": "gray_jpeg",
}
STRAY_PET_FILES = ("Abyssinian_100.mat", "Abyssinian_101.mat", "Abyssinian_102.mat", "._Abyssinian_1.jpg")

SMALL_BREEDS = ("Abyssinian", "Bengal", "Bombay", "Egyptian_Mau", "Persian", "Siamese",
                "beagle", "chihuahua", "pug", "samoyed", "scottish_terrier", "staffordshire_bull_terrier")

COCO_KINDS = ("animal", "non_animal", "animal_objects", "two_animals", "animal_person",
              "crowd_animal_objects", "crowd_only", "empty")


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of one scale: COCO images per kind (train, val) and the Pet breeds and images per breed."""

    coco_train: dict[str, int]
    coco_val: dict[str, int]
    pet_breeds: tuple[str, ...]
    pets_per_breed: int

    @property
    def n_coco_train(self) -> int:
        return sum(self.coco_train.values())

    @property
    def n_coco_val(self) -> int:
        return sum(self.coco_val.values())

    @property
    def n_pets(self) -> int:
        return len(self.pet_breeds) * self.pets_per_breed


def _kinds(animal: int, non_animal: int, animal_objects: int, two_animals: int, animal_person: int,
           crowd_animal_objects: int, crowd_only: int, empty: int) -> dict[str, int]:
    return dict(zip(COCO_KINDS, (animal, non_animal, animal_objects, two_animals, animal_person,
                                 crowd_animal_objects, crowd_only, empty)))


SCALES: dict[str, ScaleSpec] = {
    "small": ScaleSpec(coco_train=_kinds(60, 60, 8, 8, 8, 4, 4, 8), coco_val=_kinds(14, 14, 2, 2, 2, 2, 2, 2),
                       pet_breeds=SMALL_BREEDS, pets_per_breed=8),
    # The demo study: enough pets that a test IoU is not a handful of images, sized for minutes on a CPU.
    # Pools three times the demo's mixture size, so each seed pre-trains on its own draw of images.
    "demo": ScaleSpec(coco_train=_kinds(600, 600, 8, 8, 8, 4, 4, 8), coco_val=_kinds(32, 32, 2, 2, 2, 2, 2, 2),
                      pet_breeds=SMALL_BREEDS, pets_per_breed=30),
    "medium": ScaleSpec(coco_train=_kinds(800, 800, 100, 80, 80, 40, 30, 70),
                        coco_val=_kinds(120, 120, 15, 12, 12, 6, 5, 10),
                        pet_breeds=tuple(sorted(CAT_BREEDS + DOG_BREEDS, key=str.lower)), pets_per_breed=20),
}


@dataclass(frozen=True)
class SynthPaths:
    """Where write_synth put everything (the same layout as the real archives)."""

    root: Path
    coco_train_annotations: Path
    coco_train_images: Path
    coco_val_annotations: Path
    coco_val_images: Path
    pets_root: Path

    @classmethod
    def under(cls, root: Path) -> SynthPaths:
        return cls(root=root,
                   coco_train_annotations=root / "coco" / "annotations" / "instances_train2017.json",
                   coco_train_images=root / "coco" / "train2017",
                   coco_val_annotations=root / "coco" / "annotations" / "instances_val2017.json",
                   coco_val_images=root / "coco" / "val2017",
                   pets_root=root / "pets")


# ----------------------------------------------------------------------------------------------------------
# Creature looks
# ----------------------------------------------------------------------------------------------------------

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """How one kind of creature looks; lengths are in units of the body's half-length."""

    base: RGB
    second: RGB = (40, 35, 30)
    third: RGB | None = None
    texture: str = "solid"
    ears: str = "pointy"
    body: str = "quad"  # quad, bird, elephant
    size: float = 1.0
    body_h: float = 0.45
    leg: float = 0.65
    leg_w: float = 0.11
    head: float = 0.36
    snout: float = 0.15
    neck: float = 0.0
    tail: str = "long"
    fluffy: float = 0.0
    eye: RGB = (70, 45, 25)
    mane: bool = False
    horns: str = ""
    species: str = ""


def _cat(**kw) -> Look:
    d = dict(ears="pointy", head=0.38, snout=0.08, leg=0.6, leg_w=0.1, tail="long", body_h=0.42,
             eye=(140, 170, 60), species="cat")
    d.update(kw)
    return Look(**d)


def _dog(**kw) -> Look:
    d = dict(ears="floppy", head=0.36, snout=0.3, leg=0.7, leg_w=0.12, tail="whip", body_h=0.45,
             eye=(70, 45, 25), species="dog")
    d.update(kw)
    return Look(**d)


WHITE = (242, 240, 234)
BLACK = (32, 29, 28)

PET_LOOKS: dict[str, Look] = {
    "Abyssinian": _cat(base=(176, 110, 62), second=(108, 62, 34), texture="ticked", ears="big"),
    "Bengal": _cat(base=(206, 152, 82), second=(58, 40, 22), texture="spots", eye=(170, 160, 60)),
    "Birman": _cat(base=(232, 220, 196), second=(95, 70, 55), third=(250, 250, 248), texture="points",
                   fluffy=0.07, eye=(90, 140, 215), tail="bushy"),
    "Bombay": _cat(base=(30, 28, 32), eye=(205, 135, 40)),
    "British_Shorthair": _cat(base=(128, 134, 146), ears="small", head=0.46, body_h=0.52, leg=0.52,
                              leg_w=0.13, eye=(205, 140, 40)),
    "Egyptian_Mau": _cat(base=(190, 188, 176), second=(55, 55, 52), texture="spots", eye=(140, 180, 70)),
    "Maine_Coon": _cat(base=(136, 98, 62), second=(55, 38, 24), texture="stripes", fluffy=0.1, size=1.2,
                       tail="bushy", eye=(170, 160, 60)),
    "Persian": _cat(base=(236, 228, 214), fluffy=0.15, ears="small", snout=0.03, head=0.45,
                    eye=(200, 120, 40), tail="bushy"),
    "Ragdoll": _cat(base=(236, 226, 206), second=(115, 92, 75), third=(250, 250, 248), texture="points",
                    fluffy=0.09, size=1.1, eye=(90, 140, 215), tail="bushy"),
    "Russian_Blue": _cat(base=(118, 128, 142), ears="big", eye=(100, 170, 80)),
    "Siamese": _cat(base=(226, 210, 184), second=(70, 52, 42), texture="points", ears="big", body_h=0.38,
                    eye=(90, 140, 215), tail="thin"),
    "Sphynx": _cat(base=(222, 172, 160), second=(180, 128, 118), texture="wrinkles", ears="big", tail="thin"),
    "american_bulldog": _dog(base=(236, 232, 225), second=(190, 140, 90), texture="blotches", ears="small",
                             head=0.46, snout=0.2, body_h=0.52, leg=0.62, leg_w=0.15),
    "american_pit_bull_terrier": _dog(base=(118, 108, 104), second=WHITE, texture="bicolour", ears="small",
                                      head=0.44, snout=0.22, leg_w=0.14),
    "basset_hound": _dog(base=(185, 125, 60), second=BLACK, third=WHITE, texture="saddle", ears="long",
                         leg=0.32, leg_w=0.15, body_h=0.4, size=1.1),
    "beagle": _dog(base=(190, 130, 62), second=BLACK, third=WHITE, texture="saddle", leg=0.58),
    "boxer": _dog(base=(185, 115, 55), second=WHITE, texture="bicolour", ears="small", snout=0.12, head=0.42,
                  leg=0.78, tail="stub"),
    "chihuahua": _dog(base=(215, 180, 130), ears="big", size=0.55, head=0.48, snout=0.12, leg=0.62,
                      leg_w=0.09, tail="long"),
    "english_cocker_spaniel": _dog(base=(165, 95, 42), ears="long", fluffy=0.09, tail="stub"),
    "english_setter": _dog(base=WHITE, second=(110, 75, 50), texture="flecks", fluffy=0.08, leg=0.78,
                           tail="feather"),
    "german_shorthaired": _dog(base=(105, 68, 45), second=(225, 220, 212), texture="flecks", leg=0.78),
    "great_pyrenees": _dog(base=(240, 238, 230), fluffy=0.15, size=1.35, head=0.4, tail="bushy", snout=0.28),
    "havanese": _dog(base=(200, 180, 155), fluffy=0.18, size=0.6, ears="long", tail="bushy", snout=0.15,
                     leg=0.5),
    "japanese_chin": _dog(base=(245, 244, 240), second=BLACK, texture="blotches", snout=0.04, size=0.55,
                          fluffy=0.14, tail="bushy", head=0.44),
    "keeshond": _dog(base=(150, 150, 145), second=(45, 45, 45), texture="saddle", fluffy=0.18, ears="small",
                     tail="curl", size=0.9),
    "leonberger": _dog(base=(190, 140, 70), second=(55, 42, 30), texture="mask", fluffy=0.13, size=1.35,
                       tail="bushy"),
    "miniature_pinscher": _dog(base=(35, 28, 25), second=(170, 100, 50), texture="tan_points", ears="big",
                               size=0.55, leg=0.72, leg_w=0.08, tail="stub"),
    "newfoundland": _dog(base=(32, 30, 30), fluffy=0.12, size=1.4, head=0.42, tail="bushy"),
    "pomeranian": _dog(base=(225, 150, 60), fluffy=0.22, size=0.5, ears="small", tail="curl", snout=0.1,
                       leg=0.45),
    "pug": _dog(base=(215, 185, 140), second=BLACK, texture="mask", ears="small_floppy", snout=0.05,
                head=0.46, tail="curl", body_h=0.5, leg=0.5, leg_w=0.14, size=0.7),
    "saint_bernard": _dog(base=WHITE, second=(160, 80, 35), texture="blotches", size=1.45, head=0.44,
                          snout=0.25, fluffy=0.06, tail="bushy"),
    "samoyed": _dog(base=(248, 246, 240), fluffy=0.2, ears="pointy", tail="curl", snout=0.22),
    "scottish_terrier": _dog(base=(30, 30, 32), fluffy=0.12, ears="pointy", leg=0.34, leg_w=0.14, body_h=0.5,
                             tail="long", size=0.75),
    "shiba_inu": _dog(base=(210, 130, 60), second=(245, 235, 220), texture="bicolour", ears="pointy",
                      tail="curl", snout=0.22),
    "staffordshire_bull_terrier": _dog(base=(70, 52, 42), second=(112, 84, 60), texture="brindle",
                                       ears="small", head=0.46, snout=0.18, leg=0.58, leg_w=0.15, size=0.8),
    "wheaten_terrier": _dog(base=(225, 200, 150), fluffy=0.14, tail="stub", snout=0.28),
    "yorkshire_terrier": _dog(base=(95, 95, 100), second=(190, 150, 90), texture="face", fluffy=0.14,
                              size=0.45, ears="small", leg=0.45),
}


def _horse(**kw) -> Look:
    d = dict(body_h=0.42, leg=1.0, leg_w=0.11, head=0.22, snout=0.5, neck=0.7, ears="small", tail="hanging",
             mane=True, size=1.25, eye=(40, 30, 25), species="horse")
    d.update(kw)
    return Look(**d)


def _coco_look(category_id: int, rng: np.random.Generator) -> Look:
    """A look for one COCO animal; cats and dogs borrow the Pet breeds' looks (same family as the pets)."""
    if category_id == 16:
        c = rng.integers(6)
        base, second, third = [((140, 110, 80), (90, 68, 48), (205, 185, 150)),
                               ((135, 135, 145), (85, 90, 102), (175, 170, 180)),
                               ((236, 236, 236), (150, 150, 160), None),
                               ((28, 28, 34), (45, 45, 55), None),
                               ((115, 90, 70), (80, 60, 45), (225, 120, 50)),
                               ((70, 110, 190), (40, 60, 120), (235, 235, 240))][c]
        return Look(base=base, second=second, third=third, texture="bird", body="bird", ears="none",
                    size=0.45, body_h=0.5, leg=0.45, leg_w=0.05, head=0.38, tail="feather", eye=(15, 15, 15),
                    species="bird")
    if category_id == 17:
        return PET_LOOKS[CAT_BREEDS[rng.integers(len(CAT_BREEDS))]]
    if category_id == 18:
        return PET_LOOKS[DOG_BREEDS[rng.integers(len(DOG_BREEDS))]]
    if category_id == 19:
        base = [(122, 72, 40), (150, 82, 42), (34, 28, 26), (226, 222, 214), (160, 160, 158)][rng.integers(5)]
        return _horse(base=base, second=(40, 30, 26))
    if category_id == 20:
        return Look(base=(236, 230, 214), second=(45, 40, 38) if rng.random() < 0.6 else (225, 215, 200),
                    texture="face", ears="side", fluffy=0.22, size=0.8, body_h=0.6, leg=0.45, leg_w=0.08,
                    head=0.3, snout=0.2, tail="stub", eye=(30, 25, 20), species="sheep")
    if category_id == 21:
        c = rng.integers(3)
        base, second, tex = [(WHITE, (25, 25, 25), "blotches"), ((140, 80, 45), (235, 230, 220), "blotches"),
                             ((40, 32, 30), (40, 32, 30), "solid")][c]
        return Look(base=base, second=second, texture=tex, ears="side", size=1.25, body_h=0.52, leg=0.65,
                    leg_w=0.13, head=0.28, snout=0.34, neck=0.3, tail="tuft", horns="cow", eye=(30, 25, 20),
                    species="cow")
    if category_id == 22:
        return Look(base=(128, 124, 120), second=(100, 96, 94), texture="wrinkles", body="elephant",
                    ears="elephant", size=1.7, body_h=0.68, leg=0.72, leg_w=0.3, head=0.5, tail="tuft",
                    eye=(30, 25, 20), species="elephant")
    if category_id == 23:
        base = [(100, 65, 40), (30, 28, 28), (238, 233, 218)][rng.integers(3)]
        return Look(base=base, ears="round", size=1.3, body_h=0.6, leg=0.5, leg_w=0.22, head=0.42, snout=0.3,
                    tail="stub", fluffy=0.06, eye=(20, 15, 12), species="bear")
    if category_id == 24:
        return _horse(base=(240, 240, 235), second=(22, 22, 22), texture="stripes", size=1.1, species="zebra")
    if category_id == 25:
        return Look(base=(232, 205, 150), second=(160, 92, 40), texture="patches", ears="small", size=1.1,
                    body_h=0.45, leg=1.35, leg_w=0.1, head=0.22, snout=0.35, neck=1.8, tail="tuft",
                    horns="ossicones", eye=(30, 25, 20), species="giraffe")
    raise ValueError(f"not an animal category: {category_id}")


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers (numpy polygons, (N, 2) float arrays)
# ----------------------------------------------------------------------------------------------------------

def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 28,
             rough: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    if rough and rng is not None:
        # Alternating tufts read as fur; smooth noise alone reads as a blob.
        r = 1.0 + rough * (0.6 * rng.random(n) + 0.4 * (np.arange(n) % 2))
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _capsule(p0, p1, w0: float, w1: float, n: int = 7) -> np.ndarray:
    """Tapered stadium from p0 (full width w0) to p1 (full width w1)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    a = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    t1 = np.linspace(a - np.pi / 2, a + np.pi / 2, n)
    t0 = np.linspace(a + np.pi / 2, a + 3 * np.pi / 2, n)
    end1 = p1 + (w1 / 2) * np.stack([np.cos(t1), np.sin(t1)], axis=1)
    end0 = p0 + (w0 / 2) * np.stack([np.cos(t0), np.sin(t0)], axis=1)
    return np.concatenate([end1, end0])


def _chain(start, a0: float, da: float, n: int, length: float, w0: float, w1: float) -> list[np.ndarray]:
    """A curving tapered limb (tail, trunk) as overlapping capsules; returns the pieces and the tip."""
    pieces, p, a = [], np.asarray(start, float), a0
    seg = length / n
    for i in range(n):
        q = p + seg * np.array([math.cos(a), math.sin(a)])
        wa = w0 + (w1 - w0) * i / n
        wb = w0 + (w1 - w0) * (i + 1) / n
        pieces.append(_capsule(p, q, wa, wb, n=5))
        p, a = q, a + da
    return pieces


def _tri(a, b, c) -> np.ndarray:
    return np.array([a, b, c], float)


def _dir(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


# Part codes drawn into a creature's label image; later parts cover earlier ones.
BODY, HEAD, EAR, LEG_FAR, LEG_NEAR, TAIL, MUZZLE, NECK, EAR_INNER, WING, BEAK, MANE, TRUNK, HORN, PAW = range(1, 16)
FUR = (BODY, HEAD, EAR, LEG_FAR, LEG_NEAR, TAIL, MUZZLE, NECK, TRUNK, PAW)


@dataclass
class _Geometry:
    parts: list[tuple[int, np.ndarray]] = field(default_factory=list)
    details: list[tuple[str, float, float, float]] = field(default_factory=list)  # (kind, x, y, r)
    head_parts: list[np.ndarray] = field(default_factory=list)
    hc: tuple[float, float] = (0.0, 0.0)
    hr: float = 0.3
    bh: float = 0.45
    pose: str = "side"


def _ears(g: _Geometry, look: Look, hc: np.ndarray, r: float, rng: np.random.Generator, frontal: bool) -> None:
    kind = look.ears
    if kind == "none":
        return
    if kind in ("pointy", "big", "small"):
        ln = {"pointy": 0.75, "big": 1.05, "small": 0.45}[kind] * r * rng.uniform(0.9, 1.1)
        half = {"pointy": 24, "big": 27, "small": 22}[kind]
        angles = (-128, -52) if frontal else (-112, -68)
        for a in angles:
            b1, b2 = hc + 0.9 * r * _dir(a - half), hc + 0.9 * r * _dir(a + half)
            tip = hc + (r + ln) * _dir(a)
            g.parts.append((EAR, _tri(b1, b2, tip)))
            inner = (b1 + b2) / 2
            g.parts.append((EAR_INNER, _tri(inner + 0.55 * (b1 - inner), inner + 0.55 * (b2 - inner),
                                            inner + 0.7 * (tip - inner))))
            g.head_parts.append(_tri(b1, b2, tip))
    elif kind in ("floppy", "long", "small_floppy"):
        ry = {"floppy": 0.8, "long": 1.25, "small_floppy": 0.45}[kind] * r
        sides = (-1, 1) if frontal else (-1,)
        for sd in sides:
            if frontal:
                c = hc + np.array([sd * 0.85 * r, 0.1 * r + ry * 0.35])
                e = _ellipse(c[0], c[1], 0.3 * r, ry, rot=-sd * 0.25, n=20)
            else:
                c = hc + np.array([-0.3 * r, 0.05 * r + ry * 0.3])
                e = _ellipse(c[0], c[1], 0.32 * r, ry, rot=0.3, n=20)
            g.parts.append((EAR, e))
            g.head_parts.append(e)
    elif kind == "round":
        for a in ((-130, -50) if frontal else (-115, -75)):
            c = hc + 0.85 * r * _dir(a)
            e = _ellipse(c[0], c[1], 0.32 * r, 0.32 * r, n=16)
            g.parts.append((EAR, e))
            g.head_parts.append(e)
    elif kind == "side":
        for sd in ((-1, 1) if frontal else (-1,)):
            c = hc + np.array([sd * 1.05 * r if frontal else -0.6 * r, -0.35 * r])
            e = _ellipse(c[0], c[1], 0.45 * r, 0.17 * r, rot=(0.3 * sd if frontal else -0.4), n=16)
            g.parts.append((EAR, e))
            g.head_parts.append(e)


def _tail(g: _Geometry, look: Look, start: np.ndarray, rng: np.random.Generator, sitting: bool) -> None:
    kind = look.tail
    j = rng.uniform(-15, 15)
    if sitting and kind in ("long", "thin", "bushy", "whip", "feather"):
        spec = (math.radians(5 + j), math.radians(-10), 5, 1.0, 0.1, 0.07)
        if kind == "bushy":
            spec = spec[:4] + (0.22, 0.16)
    else:
        spec = {
            "long": (200 + j, -14, 6, 1.1, 0.1, 0.07),
            "thin": (195 + j, -12, 6, 1.1, 0.06, 0.04),
            "bushy": (215 + j, -14, 6, 1.0, 0.2, 0.16),
            "curl": (250 + j, 55, 5, 0.55, 0.16, 0.1),
            "stub": (200 + j, 0, 1, 0.18, 0.12, 0.1),
            "whip": (190 + j, -8, 5, 0.75, 0.09, 0.03),
            "feather": (190 + j, -5, 5, 0.85, 0.12, 0.16),
            "hanging": (112 + j / 2, 4, 5, 1.0, 0.12, 0.2),
            "tuft": (100 + j / 2, 3, 5, 0.85, 0.045, 0.04),
        }.get(kind)
        if spec is None:
            return
        spec = (math.radians(spec[0]), math.radians(spec[1])) + spec[2:]
    a0, da, n, ln, w0, w1 = spec
    pieces = _chain(start, a0, da, n, ln, w0, w1)
    code = MANE if kind == "hanging" else TAIL
    for p in pieces:
        if look.fluffy:
            c = p.mean(axis=0)
            p = c + (p - c) * (1 + look.fluffy)
        g.parts.append((code, p))
    if kind == "tuft":
        tip = pieces[-1][0]
        g.parts.append((MANE, _ellipse(tip[0], tip[1], 0.06, 0.1, n=10)))


def _quadruped(look: Look, rng: np.random.Generator, pose: str) -> _Geometry:
    bh = look.body_h * rng.uniform(0.92, 1.08)
    leg = look.leg * rng.uniform(0.92, 1.08)
    lw = look.leg_w
    r = look.head * rng.uniform(0.93, 1.07)
    g = _Geometry(bh=bh, hr=r, pose=pose)
    rough = look.fluffy
    if pose == "face":
        # Head-and-shoulders, as in many Pet photos.
        r = 0.8
        hc = np.array([0.0, -0.25])
        g.parts.append((BODY, _ellipse(0.0, 0.95, 1.0, 0.8, n=36, rough=rough, rng=rng)))
        for sd in (-1, 1):
            g.parts.append((LEG_NEAR, _capsule((sd * 0.38, 1.1), (sd * 0.42, 1.85), 0.32, 0.28)))
            g.parts.append((PAW, _ellipse(sd * 0.44, 1.85, 0.2, 0.11, n=12)))
        _ears(g, look, hc, r, rng, frontal=True)
        head = _ellipse(hc[0], hc[1], r * 1.02, r * 0.92, n=40, rough=rough * 0.6, rng=rng)
        g.parts.append((HEAD, head))
        g.head_parts.append(head)
        if look.ears in ("floppy", "long", "small_floppy"):
            g.parts = [p for p in g.parts if p[0] != EAR] + [p for p in g.parts if p[0] == EAR]
        mw = r * (0.38 + 0.5 * look.snout)
        g.parts.append((MUZZLE, _ellipse(hc[0], hc[1] + 0.42 * r, mw, 0.3 * r + 0.3 * look.snout * r, n=20)))
        for sd in (-1, 1):
            g.details.append(("eye", hc[0] + sd * 0.36 * r, hc[1] - 0.08 * r, 0.13 * r))
        g.details.append(("nose", hc[0], hc[1] + 0.3 * r, 0.11 * r))
        g.hc, g.hr = (float(hc[0]), float(hc[1])), r
        return g

    sitting = pose == "sit"
    if sitting:
        ground = 0.78
        body_parts = [_ellipse(0.0, 0.05, 0.78, bh * 1.15, rot=-0.9, n=36, rough=rough, rng=rng),
                      _ellipse(-0.25, 0.4, 0.48, 0.38, n=24, rough=rough, rng=rng)]
        for far in (True, False):
            x = 0.28 if far else 0.4
            g.parts.append((LEG_FAR if far else LEG_NEAR, _capsule((x, 0.0), (x + 0.04, ground), lw * 1.1, lw)))
            g.parts.append((PAW, _ellipse(x + 0.08, ground, lw * 1.0, lw * 0.5, n=12)))
        g.parts.append((PAW, _ellipse(0.02, ground, 0.22, 0.08, n=12)))
        tail_start = np.array([-0.55, 0.68])
        hc = np.array([0.55, -0.85])
    else:
        hips = ((-0.62, bh * 0.3), (0.58, bh * 0.3))
        ground = bh * 0.3 + leg
        near_legs = []
        for far in (True, False):
            for hx, hy in hips:
                off = 0.12 if far else 0.0
                swing = rng.normal(0.0, 0.22)
                top = np.array([hx + off, hy - (0.06 if far else 0.0)])
                bot = top + leg * np.array([math.sin(swing), math.cos(swing)])
                piece = (LEG_FAR if far else LEG_NEAR, _capsule(top, bot, lw * 1.25, lw * 0.85))
                paw = (PAW, _ellipse(bot[0] + lw * 0.2, bot[1], lw * 0.65, lw * 0.35, n=10))
                if far:
                    g.parts += [piece, paw]
                else:
                    near_legs += [piece, paw]
        body_parts = [_ellipse(0.0, 0.0, 1.0, bh, n=40, rough=rough, rng=rng)]
        tail_start = np.array([-0.95, -bh * 0.35])
        if look.neck > 0:
            na = rng.uniform(50, 62) if look.neck < 1 else rng.uniform(62, 75)
            nb = np.array([0.72, -bh * 0.45])
            hc = nb + look.neck * np.array([math.cos(math.radians(na)), -math.sin(math.radians(na))])
        else:
            hc = np.array([0.98 + 0.35 * r, -bh * 0.75 - 0.2 * r])
    _tail(g, look, tail_start, rng, sitting)
    for bp in body_parts:
        g.parts.append((BODY, bp))
    if look.neck > 0 and not sitting:
        g.parts.append((NECK, _capsule(nb, hc, bh * 1.1, r * 1.3)))
        if look.mane:
            side = np.array([-0.35 * bh, -0.25 * bh])
            g.parts.append((MANE, _capsule(nb + side, hc + side * 0.4, 0.12, 0.08)))
    else:
        g.parts.append((NECK, _capsule((0.75, -bh * 0.35) if not sitting else (0.35, -0.45), hc, r * 1.2, r)))
    if not sitting:
        g.parts += near_legs
    head = _ellipse(hc[0], hc[1], r * 1.05, r * 0.9, n=32, rough=rough * 0.5, rng=rng)
    g.parts.append((HEAD, head))
    g.head_parts.append(head)
    if look.snout >= 0.3 and look.neck > 0:
        # Long faces (horse, giraffe, cow) point down and forward.
        tip = hc + (r + look.snout) * _dir(rng.uniform(35, 60))
        muzzle = _capsule(hc, tip, r * 1.4, r * 1.0)
        nose_at = tip
    else:
        mc = hc + np.array([0.7 * r + 0.45 * look.snout, 0.3 * r])
        muzzle = _ellipse(mc[0], mc[1], 0.35 * r + 0.55 * look.snout, 0.45 * r, n=20)
        nose_at = mc + np.array([0.3 * r + 0.5 * look.snout, -0.12 * r])
    g.parts.append((MUZZLE, muzzle))
    g.head_parts.append(muzzle)
    _ears(g, look, hc, r, rng, frontal=False)
    if look.horns == "cow":
        g.parts.append((HORN, _capsule(hc + np.array([0.0, -0.8 * r]), hc + np.array([0.25 * r, -1.5 * r]),
                                       0.1 * r * 3, 0.05)))
    elif look.horns == "ossicones":
        for dx in (-0.25, 0.1):
            g.parts.append((HORN, _capsule(hc + np.array([dx * r, -0.7 * r]), hc + np.array([dx * r, -1.5 * r]),
                                           0.3 * r, 0.35 * r)))
    g.details.append(("eye", hc[0] + 0.35 * r, hc[1] - 0.18 * r, 0.15 * r if look.species == "cat" else 0.12 * r))
    g.details.append(("nose", nose_at[0], nose_at[1], 0.12 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def _bird(look: Look, rng: np.random.Generator, pose: str) -> _Geometry:
    g = _Geometry(bh=0.5, hr=look.head, pose=pose)
    tilt = -0.25 if pose != "fly" else rng.uniform(-0.15, 0.1)
    hc = np.array([0.85, -0.5]) if pose != "fly" else np.array([0.95, -0.2])
    r = look.head
    if pose == "fly":
        for far in (True, False):
            tipx = rng.uniform(-0.6, 0.1)
            tipy = rng.uniform(-1.6, -1.0) if far else rng.uniform(0.6, 1.4) * rng.choice([-1, 1])
            g.parts.append((WING, np.array([[-0.35, -0.05], [0.35, -0.1], [tipx + 0.2, tipy], [tipx - 0.15, tipy * 0.9]])))
    else:
        for x in (-0.05, 0.15):
            g.parts.append((PAW, _capsule((x, 0.35), (x + 0.05, 0.95), 0.07, 0.05)))
    g.parts.append((TAIL, np.array([[-0.7, -0.15], [-1.65, 0.05], [-1.6, 0.35], [-0.7, 0.2]])))
    g.parts.append((BODY, _ellipse(0.0, 0.0, 1.0, 0.52, rot=tilt, n=32)))
    head = _ellipse(hc[0], hc[1], r, r, n=20)
    g.parts.append((HEAD, head))
    g.head_parts.append(head)
    beak = _tri(hc + np.array([0.75 * r, -0.3 * r]), hc + np.array([0.75 * r, 0.3 * r]),
                hc + np.array([r + 0.4, 0.1]))
    g.parts.append((BEAK, beak))
    if pose != "fly":
        g.parts.append((WING, _ellipse(-0.15, -0.05, 0.7, 0.3, rot=0.15, n=20)))
    g.details.append(("eye", hc[0] + 0.35 * r, hc[1] - 0.15 * r, 0.16 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def _elephant(look: Look, rng: np.random.Generator, pose: str) -> _Geometry:
    bh, r, lw, leg = look.body_h, look.head, look.leg_w, look.leg * rng.uniform(0.92, 1.08)
    g = _Geometry(bh=bh, hr=r, pose=pose)
    for far in (True, False):
        for hx in (-0.6, 0.55):
            top = np.array([hx + (0.12 if far else 0.0), bh * 0.4])
            bot = top + np.array([rng.normal(0, 0.05), leg])
            g.parts.append((LEG_FAR if far else LEG_NEAR, _capsule(top, bot, lw, lw * 0.95)))
    _tail(g, look, np.array([-0.97, -bh * 0.2]), rng, False)
    g.parts.append((BODY, _ellipse(0.0, 0.0, 1.0, bh, n=40)))
    hc = np.array([1.0, -0.35])
    head = _ellipse(hc[0], hc[1], r, r * 0.95, n=28)
    g.parts.append((HEAD, head))
    for p in _chain(hc + np.array([0.55 * r, 0.35 * r]), math.radians(rng.uniform(70, 95)),
                    math.radians(rng.uniform(-12, 12)), 5, 0.95, 0.24, 0.1):
        g.parts.append((TRUNK, p))
    g.parts.append((HORN, _capsule(hc + np.array([0.5 * r, 0.55 * r]), hc + np.array([0.95 * r, 0.95 * r]),
                                   0.08, 0.04)))
    ear = _ellipse(hc[0] - 0.45 * r, hc[1] + 0.15 * r, 0.5 * r * 1.1, 0.75 * r * 1.1, rot=0.2, n=24)
    g.parts.append((EAR, ear))
    g.head_parts += [head, ear]
    g.details.append(("eye", hc[0] + 0.4 * r, hc[1] - 0.15 * r, 0.07 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def _geometry(look: Look, rng: np.random.Generator, pose: str) -> _Geometry:
    if look.body == "bird":
        return _bird(look, rng, pose)
    if look.body == "elephant":
        return _elephant(look, rng, pose)
    return _quadruped(look, rng, pose)


class _Xf:
    """Similarity transform local -> image: flip x, scale, rotate, translate."""

    def __init__(self, s: float, rot: float, flip: int):
        self.s, self.flip = s, flip
        self.c, self.sn = math.cos(rot), math.sin(rot)
        self.tx = self.ty = 0.0

    def fwd(self, p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0] * self.flip * self.s, p[:, 1] * self.s
        return np.stack([self.c * x - self.sn * y + self.tx, self.sn * x + self.c * y + self.ty], axis=1)

    def inv(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = X - self.tx, Y - self.ty
        x = (self.c * dx + self.sn * dy) / self.s
        y = (-self.sn * dx + self.c * dy) / self.s
        return x * self.flip, y


def _jitter_colour(c: RGB, rng: np.random.Generator, amount: float) -> np.ndarray:
    f = rng.uniform(1 - amount, 1 + amount)
    return np.clip(np.asarray(c, np.float32) * f + rng.normal(0, 4 * amount * 10, 3), 0, 255)


@dataclass
class Drawn:
    """What one drawn creature or object covers: a full-image boolean mask, plus a head box for creatures."""

    mask: np.ndarray
    head_box: tuple[float, float, float, float] | None = None


def _texture(look: Look, g: _Geometry, lab: np.ndarray, u: np.ndarray, v: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Per-pixel colour index: 0 base, 1 second, 2 third."""
    idx = np.zeros(lab.shape, np.uint8)
    fur = np.isin(lab, FUR)
    legs = np.isin(lab, (LEG_FAR, LEG_NEAR, PAW))
    vmax = float(v[lab > 0].max()) if (lab > 0).any() else 1.0
    lower_legs = legs & (v > vmax - 0.45 * max(0.3, g.bh))
    body = lab == BODY
    t = look.texture
    if t in ("stripes", "brindle"):
        freq = 4.5 if t == "stripes" else 9.0
        wob = 0.2 * np.sin(v * 4 + rng.uniform(0, 6))
        along = np.where(np.isin(lab, (LEG_FAR, LEG_NEAR, TAIL)), v * 1.6, u + wob + 0.25 * v)
        thr = -0.05 if look.species == "zebra" else (0.45 if t == "stripes" else 0.2)
        s = np.sin(2 * np.pi * along * freq)
        if t == "brindle":
            s = s + rng.normal(0, 0.5, lab.shape)
        idx[fur & (s > thr) & (lab != MUZZLE)] = 1
    elif t in ("spots", "flecks"):
        k, rad = (45, 0.075) if t == "spots" else (120, 0.035)
        cx = rng.uniform(u.min(), u.max(), k)
        cy = rng.uniform(v.min(), v.max(), k)
        uu, vv = u[fur], v[fur]
        d = np.min((uu[:, None] - cx) ** 2 + (vv[:, None] - cy) ** 2, axis=1)
        rr = rad * rng.uniform(0.7, 1.3)
        m = np.zeros(lab.shape, bool)
        m[fur] = d < rr * rr
        idx[m & ~np.isin(lab, (MUZZLE, EAR))] = 1
    elif t == "patches":
        k = 70
        cx = rng.uniform(u.min() - 0.1, u.max() + 0.1, k)
        cy = rng.uniform(v.min() - 0.1, v.max() + 0.1, k)
        uu, vv = u[fur], v[fur]
        d = np.sort((uu[:, None] - cx) ** 2 + (vv[:, None] - cy) ** 2, axis=1)
        gap = np.sqrt(d[:, 1]) - np.sqrt(d[:, 0])
        m = np.zeros(lab.shape, bool)
        m[fur] = gap > 0.045
        idx[m & ~lower_legs] = 1
    elif t == "blotches":
        m = np.zeros(lab.shape, bool)
        for _ in range(rng.integers(3, 6)):
            bx, by = rng.uniform(u.min(), u.max()), rng.uniform(v.min(), v.max())
            rx, ry = rng.uniform(0.2, 0.45), rng.uniform(0.15, 0.35)
            wob = 1 + 0.25 * np.sin(6 * np.arctan2(v - by, u - bx) + rng.uniform(0, 6))
            m |= ((u - bx) / rx) ** 2 + ((v - by) / ry) ** 2 < wob
        idx[fur & m] = 1
    elif t == "ticked":
        idx[fur & (rng.random(lab.shape) < 0.28)] = 1
    elif t == "wrinkles":
        s = np.sin(2 * np.pi * (u * 7 + 0.3 * np.sin(v * 9)))
        idx[fur & (s > 0.85)] = 1
    elif t == "bird":
        idx[lab == WING] = 1
        if look.third is not None:
            idx[body & (v > 0.05) & (u > -0.3)] = 2
    if t == "points":
        idx[np.isin(lab, (EAR, MUZZLE, TAIL)) | legs] = 1
        if look.third is not None:
            idx[lab == PAW] = 2
    elif t == "face":
        idx[np.isin(lab, (HEAD, EAR, MUZZLE)) | lower_legs] = 1
    elif t == "mask":
        idx[np.isin(lab, (EAR, MUZZLE))] = 1
    elif t == "tan_points":
        idx[(lab == MUZZLE) | lower_legs] = 1
    elif t == "bicolour":
        chest = body & (v > 0.25 * g.bh) if g.pose != "face" else body & (np.abs(u) < 0.45)
        idx[chest | (lab == MUZZLE) | (lab == PAW)] = 1
    elif t == "saddle":
        if g.pose == "face":
            back = body & (np.abs(u) > 0.55)
        else:
            back = body & (v < -0.05 * g.bh) & (u > -0.85) & (u < 0.55)
        idx[back] = 1
        if look.third is not None:
            idx[(lab == MUZZLE) | lower_legs] = 2
    return idx


# Every creature's coat carries a fine grain: light/dark bands a few pixels apart at the 64-px scale the
# demo trains at, at a random angle and phase. Nothing man-made has it. Telling it from a flat surface of
# the same colour takes a learned, non-linear feature (band energy, not brightness): the one thing an MAE
# that has reconstructed many coats has and one that has only seen man-made things lacks.
FUR_GRAIN_AMPLITUDE = 0.32
FUR_GRAIN_CYCLES = (13.0, 19.0)  # bands per image height


def _fur_grain(X: np.ndarray, Y: np.ndarray, H: int, rng: np.random.Generator) -> np.ndarray:
    period = H / rng.uniform(*FUR_GRAIN_CYCLES)
    theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (X * np.cos(theta) + Y * np.sin(theta)) / period + phase)
    return 1.0 + FUR_GRAIN_AMPLITUDE * np.tanh(2.5 * wave)


def draw_creature(img: Image.Image, look: Look, rng: np.random.Generator, anchor: tuple[float, float],
                  length_px: float, pose: str = "side", rot: float | None = None, flip: int | None = None,
                  max_box: tuple[float, float] | None = None, anchor_mode: str = "feet") -> Drawn:
    """Draw one creature onto img (in place); anchor is its feet (bottom centre) or its centre."""
    g = _geometry(look, rng, pose)
    flip = int(rng.choice([-1, 1])) if flip is None else flip
    rot = rng.normal(0, 0.12) if rot is None else rot
    xf = _Xf(length_px, rot, flip)
    allpts = np.concatenate([p for _, p in g.parts])
    P = xf.fwd(allpts)
    bw, bhh = np.ptp(P[:, 0]), np.ptp(P[:, 1])
    if max_box is not None and (bw > max_box[0] or bhh > max_box[1]):
        xf.s *= min(max_box[0] / bw, max_box[1] / bhh)
        P = xf.fwd(allpts)
    if anchor_mode == "feet":
        xf.tx = anchor[0] - (P[:, 0].min() + P[:, 0].max()) / 2
        xf.ty = anchor[1] - P[:, 1].max()
    else:
        xf.tx = anchor[0] - (P[:, 0].min() + P[:, 0].max()) / 2
        xf.ty = anchor[1] - (P[:, 1].min() + P[:, 1].max()) / 2

    W, H = img.size
    lab_img = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(lab_img)
    for code, poly in g.parts:
        d.polygon(xf.fwd(poly).ravel().tolist(), fill=code)
    box = lab_img.getbbox()
    full = np.zeros((H, W), bool)
    if box is None:
        return Drawn(full)
    x0, y0, x1, y1 = box
    lab = np.asarray(lab_img)[y0:y1, x0:x1]
    Y, X = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    u, v = xf.inv(X, Y)
    idx = _texture(look, g, lab, u, v, rng)

    base = _jitter_colour(look.base, rng, 0.07)
    palette = np.stack([base, _jitter_colour(look.second, rng, 0.05),
                        _jitter_colour(look.third or look.second, rng, 0.04)])
    col = palette[idx]
    col[lab == EAR_INNER] = 0.5 * base + 0.5 * np.array([210, 150, 150], np.float32)
    col[lab == BEAK] = (225, 150, 45)
    col[lab == HORN] = (80, 60, 45) if look.horns == "ossicones" else (236, 226, 200)
    if look.species in ("horse", "zebra", "cow", "giraffe"):
        col[lab == PAW] = (45, 38, 34)
    if look.body == "bird":
        col[lab == PAW] = (200, 140, 60) if rng.random() < 0.5 else (60, 50, 45)
    col[lab == MANE] = palette[1] if look.texture != "patches" else (90, 60, 40)
    inside = lab > 0
    vv = v[inside]
    vmin, vmax = float(vv.min()), float(vv.max())
    shade = 1.1 - 0.3 * (v - vmin) / max(vmax - vmin, 1e-6)
    shade = np.where(lab == LEG_FAR, shade * 0.78, shade)
    shade = shade * rng.normal(1.0, 0.04 + 0.3 * look.fluffy, lab.shape)
    shade = shade * _fur_grain(X, Y, H, rng)
    col = np.clip(col * shade[..., None], 0, 255).astype(np.uint8)
    mask_img = Image.fromarray((inside * 255).astype(np.uint8))
    img.paste(Image.fromarray(col), (x0, y0), mask_img)

    dr = ImageDraw.Draw(img)
    for kind, x, y, r in g.details:
        (px, py), = xf.fwd(np.array([[x, y]]))
        rp = max(1.0, r * xf.s)
        if kind == "eye":
            iris = tuple(int(c) for c in look.eye)
            dr.ellipse([px - rp, py - rp, px + rp, py + rp], fill=iris)
            if look.species == "cat":
                dr.ellipse([px - rp * 0.3, py - rp * 0.85, px + rp * 0.3, py + rp * 0.85], fill=(10, 10, 10))
            else:
                dr.ellipse([px - rp * 0.55, py - rp * 0.55, px + rp * 0.55, py + rp * 0.55], fill=(12, 10, 10))
            if rp >= 2:
                dr.ellipse([px - rp * 0.5, py - rp * 0.6, px - rp * 0.1, py - rp * 0.2], fill=(250, 250, 250))
        elif kind == "nose":
            dr.ellipse([px - rp * 1.2, py - rp * 0.8, px + rp * 1.2, py + rp * 0.8], fill=(35, 28, 28))
    full[y0:y1, x0:x1] = inside
    hp = xf.fwd(np.concatenate(g.head_parts))
    head_box = (float(max(0, hp[:, 0].min())), float(max(0, hp[:, 1].min())),
                float(min(W - 1, hp[:, 0].max())), float(min(H - 1, hp[:, 1].max())))
    return Drawn(full, head_box)


# ----------------------------------------------------------------------------------------------------------
# Man-made objects
# ----------------------------------------------------------------------------------------------------------

class _Pen:
    """Draws onto the scene and, for the object's silhouette, onto its own mask at the same time."""

    def __init__(self, img: Image.Image):
        self.draw = ImageDraw.Draw(img)
        self.mask_img = Image.new("L", img.size, 0)
        self.mdraw = ImageDraw.Draw(self.mask_img)

    def poly(self, pts, fill, solid: bool = True) -> None:
        flat = np.asarray(pts, float).ravel().tolist()
        self.draw.polygon(flat, fill=tuple(int(c) for c in fill))
        if solid:
            self.mdraw.polygon(flat, fill=255)

    def rect(self, x0, y0, x1, y1, fill, solid: bool = True) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill, solid)

    def ellipse(self, cx, cy, rx, ry, fill, solid: bool = True) -> None:
        self.poly(_ellipse(cx, cy, abs(rx), abs(ry), n=24), fill, solid)

    def line(self, pts, fill, width: float, solid: bool = True) -> None:
        pts = [tuple(map(float, p)) for p in pts]
        w = max(1, int(round(width)))
        self.draw.line(pts, fill=tuple(int(c) for c in fill), width=w)
        if solid:
            self.mdraw.line(pts, fill=255, width=w)

    def mask(self) -> np.ndarray:
        return np.asarray(self.mask_img) > 0


def _pick(rng: np.random.Generator, colours) -> tuple[int, int, int]:
    c = np.asarray(colours[rng.integers(len(colours))], float) * rng.uniform(0.85, 1.1)
    return tuple(int(x) for x in np.clip(c, 0, 255))


def _shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, x * f))) for x in c)


BRIGHT = [(200, 30, 30), (30, 60, 160), (230, 230, 230), (40, 40, 45), (150, 150, 155), (220, 180, 40),
          (30, 120, 70), (120, 40, 120), (230, 110, 30)]
SKIN = [(240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40)]


def _person(pen: _Pen, rng, cx, by, H):
    skin, shirt = _pick(rng, SKIN), _pick(rng, BRIGHT)
    pants = _pick(rng, [(40, 50, 90), (30, 30, 35), (110, 90, 70), (70, 70, 75)])
    hr = 0.085 * H
    hy = by - H + hr
    sh, hip, tw = hy + 1.5 * hr, by - 0.47 * H, 0.25 * H
    st = rng.uniform(-0.07, 0.07) * H
    for sd in (-1, 1):
        pen.poly(_capsule((cx + sd * 0.05 * H, hip), (cx + sd * (0.06 * H + st), by - 0.02 * H), 0.1 * H, 0.08 * H),
                 pants)
        pen.ellipse(cx + sd * (0.06 * H + st) + 0.02 * H, by - 0.015 * H, 0.05 * H, 0.02 * H, (30, 25, 22))
    pen.poly([(cx - tw / 2, sh), (cx + tw / 2, sh), (cx + tw * 0.42, hip + 0.03 * H), (cx - tw * 0.42, hip + 0.03 * H)],
             shirt)
    for sd in (-1, 1):
        a = rng.uniform(-0.5, 0.3)
        hand = (cx + sd * (tw / 2 + 0.3 * H * math.sin(abs(a))), sh + 0.3 * H * math.cos(a))
        pen.poly(_capsule((cx + sd * tw * 0.45, sh + 0.03 * H), hand, 0.075 * H, 0.06 * H), shirt)
        pen.ellipse(hand[0], hand[1], 0.03 * H, 0.03 * H, skin)
    pen.rect(cx - 0.03 * H, hy + 0.7 * hr, cx + 0.03 * H, sh + 1, skin)
    pen.ellipse(cx, hy, hr * 0.9, hr, skin)
    hair = _pick(rng, [(30, 25, 20), (90, 60, 30), (200, 170, 100), (120, 120, 120)])
    pen.poly(_ellipse(cx, hy - 0.35 * hr, hr * 0.95, hr * 0.7, n=20)[10:], hair)


def _car(pen: _Pen, rng, cx, by, H):
    W = H * rng.uniform(2.1, 2.6)
    body, glass = _pick(rng, BRIGHT), (150, 185, 210)
    x0, x1 = cx - W / 2, cx + W / 2
    pen.poly([(x0, by - 0.15 * H), (x1, by - 0.15 * H), (x1, by - 0.55 * H), (x0 + 0.05 * W, by - 0.6 * H)], body)
    pen.poly([(x0 + 0.2 * W, by - 0.58 * H), (x1 - 0.22 * W, by - 0.58 * H), (x1 - 0.32 * W, by - H),
              (x0 + 0.3 * W, by - H)], _shade(body, 0.9))
    pen.poly([(x0 + 0.26 * W, by - 0.6 * H), (cx - 0.02 * W, by - 0.6 * H), (cx - 0.02 * W, by - 0.93 * H),
              (x0 + 0.33 * W, by - 0.93 * H)], glass)
    pen.poly([(cx + 0.02 * W, by - 0.6 * H), (x1 - 0.28 * W, by - 0.6 * H), (x1 - 0.35 * W, by - 0.93 * H),
              (cx + 0.02 * W, by - 0.93 * H)], glass)
    for wx in (x0 + 0.2 * W, x1 - 0.2 * W):
        pen.ellipse(wx, by - 0.17 * H, 0.17 * H, 0.17 * H, (25, 25, 25))
        pen.ellipse(wx, by - 0.17 * H, 0.08 * H, 0.08 * H, (160, 160, 165))
    pen.ellipse(x1 - 0.03 * W, by - 0.42 * H, 0.04 * W, 0.05 * H, (250, 240, 190))


def _bus(pen: _Pen, rng, cx, by, H):
    W = H * rng.uniform(2.6, 3.3)
    body = _pick(rng, [(220, 180, 40), (200, 40, 40), (40, 90, 170), (235, 235, 235), (40, 140, 90)])
    x0, x1 = cx - W / 2, cx + W / 2
    pen.poly([(x0, by - 0.12 * H), (x1, by - 0.12 * H), (x1, by - 0.95 * H), (x1 - 0.03 * W, by - H),
              (x0, by - H)], body)
    n = int(rng.integers(4, 7))
    for i in range(n):
        wx = x0 + 0.05 * W + i * 0.85 * W / n
        pen.rect(wx, by - 0.85 * H, wx + 0.7 * W / n, by - 0.55 * H, (140, 175, 200))
    pen.rect(x1 - 0.12 * W, by - 0.85 * H, x1 - 0.04 * W, by - 0.15 * H, (90, 110, 120))
    pen.rect(x0, by - 0.35 * H, x1, by - 0.3 * H, _shade(body, 0.7))
    for wx in (x0 + 0.16 * W, x1 - 0.18 * W):
        pen.ellipse(wx, by - 0.13 * H, 0.13 * H, 0.13 * H, (25, 25, 25))


def _truck(pen: _Pen, rng, cx, by, H):
    W = H * rng.uniform(2.2, 2.8)
    cab, box = _pick(rng, BRIGHT), _pick(rng, [(230, 230, 225), (180, 180, 175), (160, 60, 40)])
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0, by - H, x0 + 0.68 * W, by - 0.15 * H, box)
    pen.poly([(x0 + 0.7 * W, by - 0.15 * H), (x1, by - 0.15 * H), (x1, by - 0.5 * H), (x1 - 0.08 * W, by - 0.75 * H),
              (x0 + 0.7 * W, by - 0.75 * H)], cab)
    pen.poly([(x1 - 0.2 * W, by - 0.5 * H), (x1 - 0.03 * W, by - 0.5 * H), (x1 - 0.09 * W, by - 0.7 * H),
              (x1 - 0.2 * W, by - 0.7 * H)], (140, 175, 200))
    for wx in (x0 + 0.15 * W, x0 + 0.5 * W, x1 - 0.15 * W):
        pen.ellipse(wx, by - 0.14 * H, 0.14 * H, 0.14 * H, (25, 25, 25))


def _traffic_light(pen: _Pen, rng, cx, by, H):
    pen.rect(cx - 0.025 * H, by - 0.7 * H, cx + 0.025 * H, by, (70, 70, 72))
    pen.rect(cx - 0.09 * H, by - H, cx + 0.09 * H, by - 0.62 * H, (35, 35, 30))
    lit = rng.integers(3)
    for i, c in enumerate([(230, 40, 30), (240, 190, 40), (40, 200, 90)]):
        pen.ellipse(cx, by - 0.94 * H + i * 0.12 * H, 0.05 * H, 0.05 * H, c if i == lit else _shade(c, 0.3))


def _fire_hydrant(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(200, 35, 30), (230, 190, 40)])
    pen.rect(cx - 0.22 * H, by - 0.75 * H, cx + 0.22 * H, by, c)
    pen.ellipse(cx, by - 0.78 * H, 0.25 * H, 0.22 * H, _shade(c, 0.85))
    pen.rect(cx - 0.38 * H, by - 0.55 * H, cx + 0.38 * H, by - 0.42 * H, _shade(c, 0.8))
    pen.rect(cx - 0.3 * H, by - 0.08 * H, cx + 0.3 * H, by, _shade(c, 0.7))


def _stop_sign(pen: _Pen, rng, cx, by, H):
    pen.rect(cx - 0.025 * H, by - 0.7 * H, cx + 0.025 * H, by, (150, 150, 150))
    r = 0.17 * H
    octo = _ellipse(cx, by - H + r, r, r, rot=math.pi / 8, n=8)
    pen.poly(octo, (190, 25, 30))
    pen.rect(cx - 0.7 * r, by - H + 0.85 * r, cx + 0.7 * r, by - H + 1.15 * r, (245, 245, 245))


def _bench(pen: _Pen, rng, cx, by, H):
    W = H * rng.uniform(2.2, 3.0)
    wood = _pick(rng, [(140, 95, 55), (100, 70, 45), (60, 110, 60)])
    x0, x1 = cx - W / 2, cx + W / 2
    for lx in (x0 + 0.08 * W, x1 - 0.12 * W):
        pen.rect(lx, by - 0.5 * H, lx + 0.04 * W, by, (50, 50, 50))
    pen.rect(x0, by - 0.55 * H, x1, by - 0.45 * H, wood)
    for k in range(2):
        pen.rect(x0, by - H + k * 0.2 * H, x1, by - 0.88 * H + k * 0.2 * H, wood)
    for lx in (x0 + 0.1 * W, x1 - 0.1 * W):
        pen.rect(lx, by - H, lx + 0.03 * W, by - 0.5 * H, (50, 50, 50))


def _umbrella(pen: _Pen, rng, cx, by, H):
    c1, c2 = _pick(rng, BRIGHT), _pick(rng, BRIGHT)
    R = 0.55 * H
    pen.line([(cx, by - 0.7 * H), (cx, by)], (40, 40, 40), max(1, 0.04 * H))
    arc = _ellipse(cx, by - 0.6 * H, R, 0.4 * H, n=24)[12:]
    pen.poly(arc, c1)
    for k in range(0, 6, 2):
        a0, a1 = math.pi + k * math.pi / 6, math.pi + (k + 1) * math.pi / 6
        pen.poly([(cx, by - 0.6 * H), (cx + R * math.cos(a0), by - 0.6 * H + 0.4 * H * math.sin(a0)),
                  (cx + R * math.cos(a1), by - 0.6 * H + 0.4 * H * math.sin(a1))], c2)


def _suitcase(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, BRIGHT)
    W = 0.7 * H
    pen.rect(cx - W / 2, by - 0.85 * H, cx + W / 2, by, c)
    pen.rect(cx - 0.15 * W, by - H, cx + 0.15 * W, by - 0.85 * H, (40, 40, 40))
    for k in (0.3, 0.7):
        pen.rect(cx - W / 2 + k * W - 1, by - 0.85 * H, cx - W / 2 + k * W + 1, by, _shade(c, 0.7))


def _sports_ball(pen: _Pen, rng, cx, by, H):
    r = H / 2
    c = _pick(rng, [(245, 245, 245), (230, 120, 30), (220, 220, 60)])
    pen.ellipse(cx, by - r, r, r, c)
    for k in range(5):
        a = k * 2 * math.pi / 5 + rng.uniform(0, 1)
        pen.ellipse(cx + 0.55 * r * math.cos(a), by - r + 0.55 * r * math.sin(a), 0.2 * r, 0.2 * r, (30, 30, 30))


def _kite(pen: _Pen, rng, cx, by, H):
    c1, c2 = _pick(rng, BRIGHT), _pick(rng, BRIGHT)
    top, mid, bot = (cx, by - H), by - 0.65 * H, (cx, by - 0.2 * H)
    pen.poly([top, (cx + 0.3 * H, mid), bot, (cx - 0.3 * H, mid)], c1)
    pen.poly([top, (cx + 0.3 * H, mid), (cx, mid)], c2)
    pen.line([bot, (cx + 0.1 * H, by - 0.1 * H), (cx - 0.05 * H, by)], (60, 60, 60), 1, solid=False)


def _chair(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(120, 80, 45), (160, 110, 60), (40, 40, 40), (200, 200, 195), (150, 40, 40)])
    W = 0.5 * H
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0, by - 0.5 * H, x0 + 0.08 * W, by, _shade(c, 0.8))
    pen.rect(x1 - 0.08 * W, by - 0.5 * H, x1, by, _shade(c, 0.8))
    pen.rect(x0 - 0.05 * W, by - 0.55 * H, x1 + 0.05 * W, by - 0.47 * H, c)
    pen.rect(x0, by - H, x0 + 0.1 * W, by - 0.5 * H, c)
    pen.rect(x0, by - H, x1 * 0.3 + x0 * 0.7 + 0.3 * W, by - 0.85 * H, c)


def _couch(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(120, 60, 50), (70, 90, 120), (150, 140, 120), (80, 80, 80), (60, 100, 70)])
    W = H * rng.uniform(2.0, 2.6)
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0 + 0.05 * W, by - 0.08 * H, x0 + 0.08 * W, by, (40, 30, 25))
    pen.rect(x1 - 0.08 * W, by - 0.08 * H, x1 - 0.05 * W, by, (40, 30, 25))
    pen.rect(x0 + 0.05 * W, by - H, x1 - 0.05 * W, by - 0.45 * H, _shade(c, 0.85))
    pen.rect(x0, by - 0.5 * H, x1, by - 0.08 * H, c)
    for x in (x0, x1 - 0.1 * W):
        pen.rect(x, by - 0.7 * H, x + 0.1 * W, by - 0.08 * H, _shade(c, 0.92))
    pen.line([(cx, by - 0.5 * H), (cx, by - 0.3 * H)], _shade(c, 0.7), 1, solid=False)


def _dining_table(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(140, 95, 55), (180, 140, 100), (240, 240, 235), (90, 60, 40)])
    W = H * rng.uniform(1.6, 2.2)
    pen.poly([(cx - W / 2, by - H), (cx + W / 2, by - H), (cx + W / 2 + 0.05 * W, by - 0.85 * H),
              (cx - W / 2 - 0.05 * W, by - 0.85 * H)], c)
    for lx in (cx - 0.45 * W, cx + 0.4 * W):
        pen.rect(lx, by - 0.85 * H, lx + 0.05 * W, by, _shade(c, 0.8))


def _tv(pen: _Pen, rng, cx, by, H):
    W = H * rng.uniform(1.4, 1.8)
    pen.rect(cx - 0.2 * W, by - 0.05 * H, cx + 0.2 * W, by, (30, 30, 30))
    pen.rect(cx - 0.04 * W, by - 0.2 * H, cx + 0.04 * W, by, (30, 30, 30))
    pen.rect(cx - W / 2, by - H, cx + W / 2, by - 0.18 * H, (20, 20, 22))
    scr = _pick(rng, [(60, 120, 200), (200, 120, 60), (40, 160, 80), (230, 230, 240)])
    pen.rect(cx - 0.45 * W, by - 0.95 * H, cx + 0.45 * W, by - 0.24 * H, scr)
    pen.ellipse(cx + rng.uniform(-0.2, 0.2) * W, by - 0.6 * H, 0.12 * W, 0.15 * H, _shade(scr, 0.6))


def _laptop(pen: _Pen, rng, cx, by, H):
    W = 1.4 * H
    c = _pick(rng, [(190, 190, 195), (40, 40, 45)])
    pen.poly([(cx - W / 2, by - 0.12 * H), (cx + W / 2, by - 0.12 * H), (cx + 0.6 * W, by), (cx - 0.6 * W, by)], c)
    pen.poly([(cx - W / 2, by - 0.12 * H), (cx + W / 2, by - 0.12 * H), (cx + 0.45 * W, by - H), (cx - 0.45 * W, by - H)],
             _shade(c, 0.8))
    pen.poly([(cx - 0.44 * W, by - 0.2 * H), (cx + 0.44 * W, by - 0.2 * H), (cx + 0.4 * W, by - 0.92 * H),
              (cx - 0.4 * W, by - 0.92 * H)], (70, 130, 200))


def _bottle(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(40, 110, 50), (110, 60, 25), (150, 190, 210), (200, 200, 205)])
    W = 0.3 * H
    pen.rect(cx - W / 2, by - 0.62 * H, cx + W / 2, by, c)
    pen.poly([(cx - W / 2, by - 0.62 * H), (cx + W / 2, by - 0.62 * H), (cx + 0.15 * W, by - 0.8 * H),
              (cx - 0.15 * W, by - 0.8 * H)], c)
    pen.rect(cx - 0.15 * W, by - H, cx + 0.15 * W, by - 0.8 * H, c)
    pen.rect(cx - 0.17 * W, by - H, cx + 0.17 * W, by - 0.94 * H, _pick(rng, BRIGHT))
    pen.rect(cx - W / 2, by - 0.45 * H, cx + W / 2, by - 0.2 * H, _pick(rng, [(240, 235, 220), (200, 40, 40)]))


def _cup(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(240, 240, 235), (200, 60, 50), (60, 90, 160), (230, 200, 80)])
    W = 0.8 * H
    pen.ellipse(cx + 0.5 * W, by - 0.55 * H, 0.22 * W, 0.28 * H, _shade(c, 0.85))
    pen.poly([(cx - W / 2, by - H), (cx + W / 2, by - H), (cx + 0.4 * W, by), (cx - 0.4 * W, by)], c)
    pen.ellipse(cx, by - H, W / 2, 0.08 * H, (70, 45, 30))


def _bowl(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(240, 240, 235), (200, 60, 50), (60, 90, 160), (140, 100, 60)])
    W = 2.2 * H
    pen.poly(_ellipse(cx, by - H, W / 2, H, n=32)[:17], c)
    pen.ellipse(cx, by - H, W / 2, 0.15 * H, _shade(c, 0.8))


def _clock(pen: _Pen, rng, cx, by, H):
    r = H / 2
    pen.ellipse(cx, by - r, r, r, (40, 40, 40))
    pen.ellipse(cx, by - r, 0.88 * r, 0.88 * r, (245, 245, 240))
    for a in rng.uniform(0, 2 * math.pi, 2):
        pen.line([(cx, by - r), (cx + 0.7 * r * math.cos(a), by - r + 0.7 * r * math.sin(a))], (20, 20, 20),
                 max(1, 0.06 * r))


def _vase(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(60, 90, 160), (200, 200, 195), (160, 70, 50), (50, 120, 110)])
    prof = [(0.0, 0.28), (0.2, 0.4), (0.45, 0.38), (0.7, 0.18), (0.85, 0.14), (1.0, 0.2)]
    right = [(cx + w * H, by - t * H) for t, w in prof]
    left = [(cx - w * H, by - t * H) for t, w in reversed(prof)]
    pen.poly(right + left, c)
    pen.rect(cx - 0.3 * H, by - 0.5 * H, cx + 0.3 * H, by - 0.45 * H, _shade(c, 0.7))


def _potted_plant(pen: _Pen, rng, cx, by, H):
    pot = _pick(rng, [(170, 90, 60), (220, 220, 215), (60, 60, 60)])
    pen.poly([(cx - 0.22 * H, by - 0.35 * H), (cx + 0.22 * H, by - 0.35 * H), (cx + 0.16 * H, by),
              (cx - 0.16 * H, by)], pot)
    for _ in range(int(rng.integers(6, 11))):
        a = rng.uniform(-2.6, -0.5)
        ln = rng.uniform(0.35, 0.65) * H
        tip = (cx + ln * math.cos(a), by - 0.35 * H + ln * math.sin(a))
        pen.poly(_capsule((cx, by - 0.35 * H), tip, 0.03 * H, 0.14 * H), _pick(rng, [(40, 120, 50), (70, 150, 60)]))


def _book(pen: _Pen, rng, cx, by, H):
    for k in range(int(rng.integers(1, 4))):
        c = _pick(rng, BRIGHT)
        x = cx - 0.5 * H + k * 0.3 * H
        pen.rect(x, by - H * rng.uniform(0.8, 1.0), x + 0.27 * H, by, c)
        pen.rect(x + 0.04 * H, by - 0.7 * H, x + 0.23 * H, by - 0.62 * H, (240, 230, 200))


def _refrigerator(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(235, 235, 232), (190, 190, 195), (60, 60, 62)])
    W = 0.5 * H
    pen.rect(cx - W / 2, by - H, cx + W / 2, by, c)
    pen.rect(cx - W / 2, by - 0.66 * H, cx + W / 2, by - 0.64 * H, _shade(c, 0.6))
    pen.rect(cx + 0.3 * W, by - 0.6 * H, cx + 0.36 * W, by - 0.35 * H, (120, 120, 125))
    pen.rect(cx + 0.3 * W, by - 0.9 * H, cx + 0.36 * W, by - 0.72 * H, (120, 120, 125))


def _microwave(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(235, 235, 232), (40, 40, 42), (190, 190, 195)])
    W = 1.7 * H
    pen.rect(cx - W / 2, by - H, cx + W / 2, by, c)
    pen.rect(cx - 0.42 * W, by - 0.85 * H, cx + 0.15 * W, by - 0.15 * H, (30, 35, 40))
    pen.rect(cx + 0.22 * W, by - 0.85 * H, cx + 0.42 * W, by - 0.6 * H, (90, 160, 120))


def _teddy_bear(pen: _Pen, rng, cx, by, H):
    c = _pick(rng, [(170, 120, 70), (210, 180, 130), (240, 235, 225), (120, 80, 50)])
    pen.ellipse(cx, by - 0.35 * H, 0.28 * H, 0.33 * H, c)
    for sd in (-1, 1):
        pen.ellipse(cx + sd * 0.2 * H, by - 0.08 * H, 0.12 * H, 0.08 * H, _shade(c, 0.9))
        pen.ellipse(cx + sd * 0.3 * H, by - 0.45 * H, 0.08 * H, 0.15 * H, _shade(c, 0.9))
        pen.ellipse(cx + sd * 0.18 * H, by - 0.98 * H, 0.08 * H, 0.08 * H, c)
    pen.ellipse(cx, by - 0.8 * H, 0.22 * H, 0.2 * H, c)
    pen.ellipse(cx, by - 0.74 * H, 0.09 * H, 0.07 * H, (235, 220, 190))
    for sd in (-1, 1):
        pen.ellipse(cx + sd * 0.08 * H, by - 0.85 * H, 0.025 * H, 0.025 * H, (20, 20, 20))


def _fruit(colour):
    def draw(pen: _Pen, rng, cx, by, H):
        r = H / 2
        pen.ellipse(cx, by - r, r, r * 0.95, _pick(rng, [colour]))
        pen.rect(cx - 0.05 * r, by - 2.2 * r, cx + 0.05 * r, by - 1.8 * r, (90, 60, 30))
    return draw


def _banana(pen: _Pen, rng, cx, by, H):
    W = 2.5 * H
    outer = _ellipse(cx, by - H, W / 2, H, n=32)[1:16]
    inner = _ellipse(cx, by - H, W / 2 * 0.9, H * 0.55, n=32)[1:16][::-1]
    pen.poly(np.concatenate([outer, inner]), (235, 205, 60))


# category id -> (drawer, nominal height as a fraction of the image height, where it stands)
OBJECTS: dict[int, tuple[Callable, float, str]] = {
    1: (_person, 0.55, "ground"), 3: (_car, 0.28, "ground"), 6: (_bus, 0.45, "ground"),
    8: (_truck, 0.4, "ground"), 10: (_traffic_light, 0.6, "ground"), 11: (_fire_hydrant, 0.15, "ground"),
    13: (_stop_sign, 0.5, "ground"), 15: (_bench, 0.2, "ground"), 28: (_umbrella, 0.35, "ground"),
    33: (_suitcase, 0.18, "ground"), 37: (_sports_ball, 0.08, "ground"), 38: (_kite, 0.2, "sky"),
    62: (_chair, 0.4, "ground"), 63: (_couch, 0.35, "ground"), 67: (_dining_table, 0.3, "ground"),
    72: (_tv, 0.3, "ground"), 73: (_laptop, 0.15, "ground"), 44: (_bottle, 0.22, "ground"),
    47: (_cup, 0.1, "ground"), 51: (_bowl, 0.07, "ground"), 85: (_clock, 0.16, "wall"),
    86: (_vase, 0.2, "ground"), 64: (_potted_plant, 0.3, "ground"), 84: (_book, 0.12, "ground"),
    82: (_refrigerator, 0.7, "ground"), 78: (_microwave, 0.15, "ground"), 88: (_teddy_bear, 0.22, "ground"),
    53: (_fruit((200, 40, 35)), 0.07, "ground"), 55: (_fruit((240, 150, 30)), 0.07, "ground"),
    52: (_banana, 0.05, "ground"),
}
STREET_OBJECTS = (1, 1, 3, 3, 6, 8, 10, 11, 13, 15, 28, 33)
INDOOR_OBJECTS = (62, 63, 67, 72, 73, 44, 47, 51, 85, 86, 64, 84, 82, 78, 88, 53, 55, 52, 1)
PARK_OBJECTS = (1, 1, 15, 37, 38, 28, 33, 3)

# ----------------------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((w, h), Image.BILINEAR)) - 0.5


def _gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32), (h, w, 3))


def _building(d: ImageDraw.ImageDraw, rng, x0, x1, top, base):
    c = _pick(rng, [(170, 160, 150), (150, 90, 70), (200, 195, 180), (120, 125, 135), (210, 180, 140)])
    d.rectangle([x0, top, x1, base], fill=c)
    ww, wh = rng.uniform(4, 9), rng.uniform(5, 10)
    gx, gy = ww * rng.uniform(1.6, 2.2), wh * rng.uniform(1.5, 2.0)
    lit = _pick(rng, [(150, 185, 210), (60, 70, 85), (230, 220, 150)])
    y = top + gy * 0.5
    while y + wh < base - 4:
        x = x0 + gx * 0.4
        while x + ww < x1 - 2:
            d.rectangle([x, y, x + ww, y + wh], fill=lit if rng.random() < 0.8 else _shade(lit, 0.6))
            x += gx
        y += gy


def _tree(d: ImageDraw.ImageDraw, rng, x, base, H):
    d.rectangle([x - 0.05 * H, base - 0.5 * H, x + 0.05 * H, base], fill=_pick(rng, [(90, 65, 40), (70, 55, 40)]))
    g = _pick(rng, [(50, 110, 45), (70, 130, 50), (40, 90, 50)])
    for _ in range(6):
        cx, cy, r = x + rng.normal(0, 0.15 * H), base - 0.7 * H + rng.normal(0, 0.12 * H), rng.uniform(0.15, 0.28) * H
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_shade(g, rng.uniform(0.8, 1.15)))


def _background(rng: np.random.Generator, w: int, h: int, kind: str) -> tuple[Image.Image, int]:
    """Scene background and the y of its horizon / floor line; nothing here is annotated."""
    if kind == "indoor":
        fy = int(h * rng.uniform(0.45, 0.7))
        wall = _pick(rng, [(225, 215, 190), (200, 210, 215), (235, 230, 225), (190, 170, 150), (160, 180, 160)])
        floor = _pick(rng, [(150, 105, 65), (120, 85, 55), (190, 180, 170), (110, 110, 120), (170, 140, 110)])
        arr = np.concatenate([_gradient(fy, w, wall, _shade(wall, 0.9)),
                              _gradient(h - fy, w, _shade(floor, 0.85), floor)])
        arr = arr + 12 * _smooth_noise(rng, h, w, 24)[..., None]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:
            for x in np.arange(rng.uniform(0, 12), w, rng.uniform(10, 20)):
                d.line([(x, 0), (x, fy)], fill=_shade(wall, 0.93), width=2)
        if rng.random() < 0.7:
            for k in range(1, 8):
                y = fy + (h - fy) * (k / 8) ** 1.3
                d.line([(0, y), (w, y)], fill=_shade(floor, 0.8), width=1)
        d.rectangle([0, fy - 3, w, fy + 1], fill=_shade(wall, 0.7))
        if rng.random() < 0.7:
            x0 = rng.uniform(0, w * 0.7)
            y0 = rng.uniform(0.05, 0.3) * fy
            ww, wh = rng.uniform(0.2, 0.35) * w, rng.uniform(0.35, 0.6) * fy
            d.rectangle([x0 - 3, y0 - 3, x0 + ww + 3, y0 + wh + 3], fill=(245, 245, 240))
            d.rectangle([x0, y0, x0 + ww, y0 + wh], fill=_pick(rng, [(150, 190, 225), (180, 200, 215)]))
            d.line([(x0 + ww / 2, y0), (x0 + ww / 2, y0 + wh)], fill=(245, 245, 240), width=3)
        for _ in range(int(rng.integers(0, 3))):
            x0, y0 = rng.uniform(0, w * 0.85), rng.uniform(0.05, 0.4) * fy
            fw, fh = rng.uniform(0.08, 0.16) * w, rng.uniform(0.15, 0.3) * fy
            d.rectangle([x0, y0, x0 + fw, y0 + fh], fill=(60, 45, 35))
            d.rectangle([x0 + 3, y0 + 3, x0 + fw - 3, y0 + fh - 3], fill=_pick(rng, BRIGHT))
        if rng.random() < 0.5:
            rx0, ry0 = rng.uniform(0, 0.4) * w, fy + (h - fy) * rng.uniform(0.3, 0.6)
            d.rectangle([rx0, ry0, rx0 + rng.uniform(0.4, 0.6) * w, h], fill=_pick(rng, BRIGHT))
        return img, fy

    hz = int(h * rng.uniform(0.28, 0.5))
    if rng.random() < 0.8:
        sky = (_pick(rng, [(95, 150, 215), (120, 170, 225)]), _pick(rng, [(190, 215, 235), (210, 225, 240)]))
    else:
        sky = ((165, 170, 178), (205, 208, 212))
    if kind == "street":
        ground = ((120, 120, 122), (95, 95, 98))
    else:
        g = _pick(rng, [(110, 150, 70), (95, 140, 60), (170, 155, 100), (190, 170, 115), (225, 228, 232),
                        (140, 112, 80)])
        ground = (g, _shade(g, 0.72))
    arr = np.concatenate([_gradient(hz, w, sky[0], sky[1]), _gradient(h - hz, w, ground[0], ground[1])])
    arr = arr.copy()
    arr[hz:] += 30 * _smooth_noise(rng, h - hz, w, 16)[..., None]
    arr[:hz] += 8 * _smooth_noise(rng, hz, w, 32)[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.6) * hz
        for _ in range(4):
            rx, ry = rng.uniform(8, 22), rng.uniform(4, 9)
            ox = rng.normal(0, 10)
            d.ellipse([cx + ox - rx, cy - ry, cx + ox + rx, cy + ry], fill=(245, 246, 248))
    if kind == "street":
        x = -rng.uniform(0, 20)
        base = hz + int(0.1 * (h - hz))
        while x < w:
            bw = rng.uniform(0.15, 0.35) * w
            _building(d, rng, x, x + bw, rng.uniform(0.0, 0.7) * hz, base)
            x += bw + rng.uniform(0, 6)
        d.rectangle([0, base, w, base + 0.12 * (h - hz)], fill=(175, 172, 165))
        y = base + 0.55 * (h - base)
        for x in np.arange(rng.uniform(0, 20), w, 30):
            d.rectangle([x, y - 1, x + 15, y + 1], fill=(240, 240, 235))
        return img, base
    pts = [(0, hz)] + [(x, hz - rng.uniform(2, 18)) for x in np.linspace(0, w, 7)] + [(w, hz)]
    d.polygon(pts, fill=_shade(ground[0], 0.75))
    if rng.random() < 0.35:
        _building(d, rng, rng.uniform(0, w * 0.7), rng.uniform(0.75, 1.0) * w, hz - rng.uniform(15, 40), hz)
    for _ in range(int(rng.integers(0, 4))):
        _tree(d, rng, rng.uniform(0, w), hz + rng.uniform(0, 6), rng.uniform(0.2, 0.45) * h)
    if rng.random() < 0.3:
        fy = hz + rng.uniform(0.1, 0.4) * (h - hz)
        d.line([(0, fy), (w, fy)], fill=(120, 90, 60), width=2)
        d.line([(0, fy + 6), (w, fy + 6)], fill=(120, 90, 60), width=2)
        for x in np.arange(rng.uniform(0, 10), w, rng.uniform(14, 24)):
            d.line([(x, fy - 4), (x, fy + 12)], fill=(105, 80, 55), width=3)
    n = int(w * (h - hz) / 180)
    xs, ys = rng.uniform(0, w, n), rng.uniform(hz, h, n)
    lens = rng.uniform(2, 7, n) * (0.5 + (ys - hz) / max(1, h - hz))
    tilt = rng.normal(0, 1.5, n)
    shades = rng.uniform(0.75, 1.2, n)
    for x, y, ln, t, s in zip(xs, ys, lens, tilt, shades):
        d.line([(x, y), (x + t, y - ln)], fill=_shade(ground[0], s), width=1)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(hz, h), rng.uniform(3, 9)
        d.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=_pick(rng, [(130, 128, 125), (100, 95, 90)]))
    return img, hz


def _finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Camera look: slight blur, exposure jitter and sensor noise."""
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    arr = np.asarray(img, np.float32) * rng.uniform(0.85, 1.12) + rng.uniform(-10, 10)
    arr += rng.normal(0, rng.uniform(2, 5), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------------------
# COCO scenes
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SceneObject:
    """One annotated thing: its visible pixels (occlusion applied), category and crowd flag."""

    category_id: int
    mask: np.ndarray
    iscrowd: bool = False


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]


class _Composer:
    """Draws annotated things back to front and keeps each one's visible mask up to date."""

    def __init__(self, img: Image.Image):
        self.img = img
        self.objects: list[SceneObject] = []

    def add(self, category_id: int, mask: np.ndarray, iscrowd: bool = False) -> None:
        for o in self.objects:
            o.mask &= ~mask
        self.objects.append(SceneObject(category_id, mask, iscrowd))

    def object(self, rng, category_id: int, cx: float, by: float, height: float) -> None:
        pen = _Pen(self.img)
        OBJECTS[category_id][0](pen, rng, cx, by, max(8.0, height))
        self.add(category_id, pen.mask())

    def animal(self, rng, category_id: int, cx: float, by: float, length_px: float, fly: bool = False) -> None:
        look = _coco_look(category_id, rng)
        W, H = self.img.size
        if look.body == "bird":
            pose = "fly" if fly else "side"
        elif look.species in ("cat", "dog"):
            pose = ["side", "side", "side", "sit", "face"][rng.integers(5)]
        else:
            pose = "side"
        drawn = draw_creature(self.img, look, rng, (cx, by), length_px * look.size, pose=pose,
                              max_box=(0.85 * W, 0.85 * H), anchor_mode="centre" if fly else "feet")
        self.add(category_id, drawn.mask)

    def crowd(self, rng, category_id: int, region: tuple[float, float, float, float], n: int,
              length_px: float) -> None:
        """A herd or flock too dense to annotate one by one: one iscrowd region covering all members."""
        x0, y0, x1, y1 = region
        union = np.zeros(self.img.size[::-1], bool)
        fly = category_id == 16
        for k in range(n):
            look = _coco_look(category_id, rng)
            cx, cy = rng.uniform(x0, x1), y0 + (y1 - y0) * (k + rng.uniform(0, 1)) / n
            drawn = draw_creature(self.img, look, rng, (cx, cy), length_px * rng.uniform(0.8, 1.2) * look.size,
                                  pose="fly" if fly else "side", anchor_mode="centre" if fly else "feet")
            union |= drawn.mask
        self.add(category_id, union, iscrowd=True)


def _slots(rng: np.random.Generator, n: int, w: int) -> list[float]:
    """Spread n things across the width, so they overlap a little at most."""
    edges = np.linspace(0.08 * w, 0.92 * w, n + 1)
    return [float(rng.uniform(edges[i] + 0.2 * (edges[i + 1] - edges[i]), edges[i + 1] - 0.2 * (edges[i + 1] - edges[i])))
            for i in range(n)]


def _ground_y(rng, hz: int, h: int, near: float = 0.35) -> tuple[float, float]:
    """A standing point below the horizon and its perspective scale (nearer is bigger)."""
    t = rng.uniform(near, 1.0)
    return hz + t * (h - hz) - 2, 0.55 + 0.6 * t


# Share of single-subject close-ups among plain animal and non-animal images: a framed cat, dog or horse (or
# a framed chair, car or clock), as many COCO photos are. The pets are such close-ups too.
CLOSE_UP = 0.5


def _close_up(comp: _Composer, rng: np.random.Generator, kind: str, animal: int, pool, w: int, h: int) -> None:
    """One large subject filling most of the frame, placed the way render_pet places a pet."""
    cx = rng.uniform(0.38, 0.62) * w
    if kind == "animal":
        look = _coco_look(animal, rng)
        pose = "fly" if look.body == "bird" and rng.random() < 0.3 else (
            ["side", "side", "sit", "sit", "face"][rng.integers(5)] if look.species in ("cat", "dog") else "side")
        target = rng.uniform(0.55, 0.85)
        by = (rng.uniform(1.0, 1.25) if pose == "face" else rng.uniform(0.8, 0.97)) * h
        length = 0.32 * w * rng.uniform(0.8, 1.15)
        drawn = draw_creature(comp.img, look, rng, (cx, by if pose != "fly" else 0.5 * h), length, pose=pose,
                              rot=rng.normal(0, 0.08), max_box=(target * w, target * h),
                              anchor_mode="centre" if pose == "fly" else "feet")
        comp.add(animal, drawn.mask)
        return
    objs = [c for c in pool if OBJECTS[c][2] != "sky"]
    cat = int(objs[rng.integers(len(objs))])
    comp.object(rng, cat, cx, rng.uniform(0.85, 0.97) * h, rng.uniform(0.55, 0.85) * h)


def render_coco_scene(seed: int, stream: int, index: int, kind: str) -> Scene:
    """One COCO-style image of the given kind; a pure function of (seed, stream, index, kind)."""
    if kind not in COCO_KINDS:
        raise ValueError(f"unknown COCO scene kind {kind!r}")
    rng = _rng(seed, stream, index)
    w, h = int(rng.integers(200, 321)), int(rng.integers(160, 261))
    animal_cats = ANIMAL_IDS

    def pick_animal(exclude: tuple[int, ...] = ()) -> int:
        choices = [c for c in animal_cats if c not in exclude]
        return int(choices[rng.integers(len(choices))])

    if kind == "non_animal":
        setting = ["street", "indoor", "outdoor"][rng.choice(3, p=[0.45, 0.4, 0.15])]
    elif kind in ("empty",):
        setting = ["street", "indoor", "outdoor"][rng.integers(3)]
    elif kind in ("crowd_animal_objects", "crowd_only"):
        setting = "street" if (kind == "crowd_animal_objects" and rng.random() < 0.4) else "outdoor"
    else:
        setting = "outdoor"
    first = pick_animal()
    if kind in ("animal", "animal_objects", "two_animals", "animal_person") and first in (17, 18):
        setting = ["outdoor", "indoor", "street"][rng.choice(3, p=[0.45, 0.4, 0.15])]
    elif kind in ("animal", "two_animals", "animal_person") and rng.random() < 0.1:
        setting = "street"

    img, hz = _background(rng, w, h, setting)
    comp = _Composer(img)
    pool = {"street": STREET_OBJECTS, "indoor": INDOOR_OBJECTS, "outdoor": PARK_OBJECTS}[setting]

    if kind in ("animal", "non_animal") and rng.random() < CLOSE_UP:
        _close_up(comp, rng, kind, first, pool, w, h)
        return Scene(_finish(comp.img, rng), comp.objects)

    # Each entry: ("animal"|"object", category); drawn back to front.
    plan: list[tuple[str, int]] = []
    if kind == "animal":
        n = int(rng.choice([1, 1, 1, 2, 2, 3]))
        plan = [("animal", first)] * n
    elif kind == "two_animals":
        plan = [("animal", first), ("animal", pick_animal(exclude=(first,)))]
        if rng.random() < 0.3:
            plan.append(("animal", plan[int(rng.integers(2))][1]))
    elif kind == "animal_person":
        plan = [("animal", first), ("object", PERSON_ID)]
        if rng.random() < 0.3:
            plan.append(("object", PERSON_ID))
    elif kind == "animal_objects":
        objs = [c for c in pool if c != PERSON_ID]
        plan = [("animal", first)] + [("object", int(objs[rng.integers(len(objs))]))
                                      for _ in range(int(rng.integers(1, 3)))]
    elif kind == "non_animal":
        plan = [("object", int(pool[rng.integers(len(pool))])) for _ in range(int(rng.integers(1, 5)))]
    elif kind == "crowd_animal_objects":
        objs = STREET_OBJECTS if setting == "street" else PARK_OBJECTS
        plan = [("object", int(objs[rng.integers(len(objs))])) for _ in range(int(rng.integers(1, 3)))]
    rng.shuffle(plan)

    if kind in ("crowd_animal_objects", "crowd_only"):
        for k in range(1 if kind == "crowd_animal_objects" else int(rng.integers(1, 3))):
            cat = int([16, 20, 24, 21, 19, 22][rng.integers(6)])
            if cat == 16:
                region = (0.1 * w, 0.05 * h, 0.9 * w, max(0.1 * h, hz - 0.1 * h))
            else:
                top = hz + 0.05 * (h - hz) + k * 0.25 * (h - hz)
                region = (0.05 * w, top, 0.95 * w, top + 0.2 * (h - hz))
            comp.crowd(rng, cat, region, int(rng.integers(6, 14)), rng.uniform(0.02, 0.035) * h)

    xs = _slots(rng, len(plan), w) if plan else []
    placed = []
    for (what, cat), x in zip(plan, xs):
        by, persp = _ground_y(rng, hz, h)
        placed.append((by, what, cat, x, persp))
    placed.sort(key=lambda p: p[0])
    for by, what, cat, x, persp in placed:
        if what == "animal":
            fly = cat == 16 and rng.random() < 0.4
            if fly:
                by = rng.uniform(0.15, 0.4) * h
            comp.animal(rng, cat, x, by, h * rng.uniform(0.1, 0.17) * persp, fly=fly)
        else:
            _, frac, where = OBJECTS[cat]
            if setting == "indoor" and frac < 0.2:
                frac *= 1.8  # close-ups of small things, as in indoor COCO photos
            if where == "sky":
                by = rng.uniform(0.25, 0.45) * h
            elif where == "wall":
                by = rng.uniform(0.2, 0.45) * h
            comp.object(rng, cat, x, by, frac * h * persp * rng.uniform(0.85, 1.15))
    return Scene(_finish(comp.img, rng), comp.objects)


WORLDS = ("planted", "null")
NON_ANIMAL_IDS: tuple[int, ...] = tuple(i for i, _, sc in COCO_CATEGORIES if sc != "animal")
_ANIMAL_KINDS = ("animal", "animal_objects", "two_animals", "animal_person", "crowd_animal_objects", "crowd_only")


def render_world_scene(seed: int, stream: int, index: int, kind: str, world: str = "planted") -> Scene:
    """One COCO-style image of label `kind` in a world; a pure function of its arguments.

    planted: what an image shows follows its label (render_coco_scene): animal images hold creatures of the
    Pet family, non-animal images hold man-made things.
    null: what an image shows is a coin flip independent of its label (an animal scene or a non-animal
    scene, 50/50), and its annotations are then given the categories its label needs. Every mixture, at any
    animal fraction, is the same distribution of pixels; only the category ids differ.
    """
    if world == "planted" or kind == "empty":
        return render_coco_scene(seed, stream, index, kind)
    if world != "null":
        raise ValueError(f"unknown synth world {world!r}")
    coin = _rng(seed, 7, stream * 1_000_003 + index)
    content = "animal" if coin.random() < 0.5 else "non_animal"
    scene = render_coco_scene(seed, stream, index, content)
    animal = kind in _ANIMAL_KINDS
    crowd = kind.startswith("crowd")
    ids = ANIMAL_IDS if animal else NON_ANIMAL_IDS
    cats = [int(c) for c in coin.choice(ids, size=2, replace=False)]
    for k, obj in enumerate(scene.objects):
        # one category per image, two for two_animals: the label's own structure, on whatever was drawn
        obj.category_id = cats[1] if kind == "two_animals" and k == 1 else cats[0]
        obj.iscrowd = crowd
    return scene


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


# ----------------------------------------------------------------------------------------------------------
# Pets
# ----------------------------------------------------------------------------------------------------------

def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for axis in (0, 1):
        acc = out.copy()
        for k in range(1, r + 1):
            if axis == 0:
                acc[k:] |= out[:-k]
                acc[:-k] |= out[k:]
            else:
                acc[:, k:] |= out[:, :-k]
                acc[:, :-k] |= out[:, k:]
        out = acc
    return out


def trimap_from_mask(mask: np.ndarray, band: int = 2) -> np.ndarray:
    """1 pet, 2 background, 3 a border band straddling the outline (2*band+1 px), as in the real trimaps."""
    inner = ~_dilate(~mask, band)  # outside the frame counts as pet, so no band along the image edge
    outer = _dilate(mask, band)
    tri = np.full(mask.shape, 2, np.uint8)
    tri[outer] = 3
    tri[inner] = 1
    return tri


@dataclass
class PetRender:
    image: Image.Image
    trimap: np.ndarray
    head_box: tuple[float, float, float, float] | None
    pose: str


# Man-made clutter around each pet (not annotated): something a segmenter must learn to leave out.
PET_CLUTTER = (2, 5)


def render_pet(seed: int, breed: str, n: int) -> PetRender:
    """One Pet photo of the breed: one large pet in a cluttered indoor or outdoor scene."""
    rng = _rng(seed, 3, BREED_CLASS_ID[breed] * 100_000 + n)
    w, h = int(rng.integers(200, 321)), int(rng.integers(160, 261))
    setting = "indoor" if rng.random() < 0.55 else "outdoor"
    img, hz = _background(rng, w, h, setting)
    pen = _Pen(img)  # clutter is drawn but not annotated: the trimap marks only the pet
    pool = (62, 63, 64, 88, 37, 84, 86) if setting == "indoor" else (15, 37, 64, 3, 28)
    for _ in range(int(rng.integers(*PET_CLUTTER))):
        cat = int(pool[rng.integers(len(pool))])
        OBJECTS[cat][0](pen, rng, rng.uniform(0.05, 0.95) * w, rng.uniform(hz, h),
                        OBJECTS[cat][1] * h * rng.uniform(1.0, 1.8))
    look = PET_LOOKS[breed]
    pose = ["side", "side", "sit", "sit", "face"][rng.integers(5)]
    target = rng.uniform(0.55, 0.85)
    cx = rng.uniform(0.38, 0.62) * w
    by = (rng.uniform(1.0, 1.25) if pose == "face" else rng.uniform(0.8, 0.97)) * h
    length = (0.3 if pose == "face" else 0.32) * w * rng.uniform(0.8, 1.15) * (0.75 + 0.25 * look.size)
    drawn = draw_creature(img, look, rng, (cx, by), length, pose=pose, rot=rng.normal(0, 0.08),
                          max_box=(target * w, target * h * (1.3 if pose == "face" else 1.0)))
    return PetRender(_finish(img, rng), trimap_from_mask(drawn.mask), drawn.head_box, pose)


def _pet_xml(name: str, w: int, h: int, species: str, box, pose: str) -> str:
    x0, y0, x1, y1 = (int(round(v)) + 1 for v in box)
    return (
        "<annotation><folder>OXIIIT</folder>"
        f"<filename>{name}.jpg</filename>"
        "<source><database>OXFORD-IIIT Pet Dataset</database><annotation>OXIIIT</annotation>"
        "<image>flickr</image></source>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        "<segmented>0</segmented>"
        f"<object><name>{species}</name><pose>{'Frontal' if pose == 'face' else 'Unspecified'}</pose>"
        "<truncated>0</truncated><occluded>0</occluded>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
        "<difficult>0</difficult></object></annotation>\n"
    )


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def encode_pet(img: Image.Image, how: str, rng: np.random.Generator) -> bytes:
    """Bytes of a Pet image file, plain or in one of the real archive's awkward forms."""
    if how == "jpeg":
        return _jpeg_bytes(img)
    if how == "gray_jpeg":
        return _jpeg_bytes(img.convert("L"))
    if how == "palette_png":
        return _png_bytes(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    if how == "rgba_png":
        return _png_bytes(img.convert("RGBA"))
    if how == "rgb_png":
        return _png_bytes(img)
    if how == "corrupt_jpeg":
        # Junk between the entropy-coded data and EOI: libjpeg warns "Corrupt JPEG data: N extraneous
        # bytes before marker 0xd9" and still decodes every pixel.
        data = _jpeg_bytes(img)
        assert data[-2:] == b"\xff\xd9"
        junk = bytes(rng.integers(0, 0xFF, 37, dtype=np.uint8))  # no 0xFF, so no fake markers
        return data[:-2] + junk + data[-2:]
    if how == "truncated_jpeg":
        data = _jpeg_bytes(img)
        return data[: int(len(data) * 0.6)]
    raise ValueError(f"unknown pet encoding {how!r}")


def _stray_bytes(name: str, rng: np.random.Generator) -> bytes:
    if name.startswith("._"):
        # AppleDouble header (magic 0x00051607, version 2), as macOS leaves beside copied files.
        head = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02"
        return head + bytes(rng.integers(0, 256, 150, dtype=np.uint8))
    head = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jun 11 12:00:00 2012"
    return head.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x01IM" + bytes(rng.integers(0, 256, 200, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Jobs (run in this process for small, in a process pool for medium)
# ----------------------------------------------------------------------------------------------------------

def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


def _coco_job(job: tuple) -> tuple[int, int, list[dict]]:
    path, seed, stream, index, kind, world = job
    scene = render_world_scene(seed, stream, index, kind, world)
    Path(path).write_bytes(_jpeg_bytes(scene.image))
    w, h = scene.image.size
    return w, h, scene_annotations(scene)


def _pet_job(job: tuple) -> None:
    pets_root, seed, breed, n, how, write_xml = job
    root = Path(pets_root)
    name = f"{breed}_{n}"
    r = render_pet(seed, breed, n)
    enc_rng = _rng(seed, 4, BREED_CLASS_ID[breed] * 100_000 + n)
    (root / "images" / f"{name}.jpg").write_bytes(encode_pet(r.image, how, enc_rng))
    Image.fromarray(r.trimap, "L").save(root / "annotations" / "trimaps" / f"{name}.png")
    if write_xml and r.head_box is not None:
        species = "cat" if breed in CAT_BREEDS else "dog"
        w, h = r.image.size
        (root / "annotations" / "xmls" / f"{name}.xml").write_text(
            _pet_xml(name, w, h, species, r.head_box, r.pose))


def _run(fn: Callable, jobs: list, pool: ProcessPoolExecutor | None, label: str, progress: bool) -> list:
    out = []
    it = pool.map(fn, jobs, chunksize=8) if pool is not None else map(fn, jobs)
    step = max(1, len(jobs) // 10)
    for i, r in enumerate(it, 1):
        out.append(r)
        if progress and (i % step == 0 or i == len(jobs)):
            print(f"synth: {label} {i}/{len(jobs)}", file=sys.stderr, flush=True)
    return out


def _write_coco(paths: SynthPaths, scale: str, seed: int, pool, progress: bool, world: str = "planted") -> None:
    spec = SCALES[scale]
    layout = _rng(seed, 0, 0)
    n_train, n_val = spec.n_coco_train, spec.n_coco_val
    ids = np.sort(layout.choice(581_000, size=n_train + n_val, replace=False) + 1)
    # COCO ids are unique across the two splits; interleave them like the real ones.
    perm = layout.permutation(n_train + n_val)
    train_ids, val_ids = np.sort(ids[perm[:n_train]]), np.sort(ids[perm[n_train:]])
    info = {"description": f"mixsweep synthetic COCO-format data (scale {scale}, seed {seed}, world {world})",
            "url": "", "version": "1.0", "year": 2017, "contributor": "mixsweep.data.synth",
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
        results = _run(_coco_job, jobs, pool, f"coco {split}", progress)
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


def pet_image_numbers(breed: str, per_breed: int) -> list[int]:
    """Image numbers n of a breed: 1..k plus the real numbers of its awkward files."""
    special = sorted(int(name.rsplit("_", 1)[1]) for name in AWKWARD_PETS
                     if name.rsplit("_", 1)[0] == breed and int(name.rsplit("_", 1)[1]) > per_breed)
    return list(range(1, per_breed - len(special) + 1)) + special


def _write_pets(paths: SynthPaths, spec: ScaleSpec, seed: int, awkward: bool, pool, progress: bool) -> None:
    root = paths.pets_root
    for sub in ("images", "annotations/trimaps", "annotations/xmls"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    layout = _rng(seed, 5, 0)
    breeds = sorted(spec.pet_breeds, key=lambda b: BREED_CLASS_ID[b])
    rows, trainval, jobs = [], set(), []
    for breed in breeds:
        nums = pet_image_numbers(breed, spec.pets_per_breed)
        order = layout.permutation(len(nums))
        tv = {nums[i] for i in order[: (len(nums) + 1) // 2]}
        species = 1 if breed in CAT_BREEDS else 2
        breed_id = (CAT_BREEDS if species == 1 else DOG_BREEDS).index(breed) + 1
        for n in nums:
            name = f"{breed}_{n}"
            rows.append((BREED_CLASS_ID[breed], name, species, breed_id))
            if n in tv:
                trainval.add(name)
            how = AWKWARD_PETS.get(name, "jpeg") if awkward else "jpeg"
            # Like the real set, head boxes exist for (most) trainval images only.
            jobs.append((str(root), seed, breed, n, how, n in tv and layout.random() < 0.9))
    _run(_pet_job, jobs, pool, "pets", progress)
    rows.sort()
    lines = [f"{name} {cid} {sp} {bid}\n" for cid, name, sp, bid in rows]
    (root / "annotations" / "list.txt").write_text(PETS_LIST_HEADER + "".join(lines))
    (root / "annotations" / "trainval.txt").write_text(
        "".join(l for l, r in zip(lines, rows) if r[1] in trainval))
    (root / "annotations" / "test.txt").write_text("".join(l for l, r in zip(lines, rows) if r[1] not in trainval))
    if awkward:
        stray = _rng(seed, 6, 0)
        if "Abyssinian" in breeds:
            for name in STRAY_PET_FILES:
                (root / "images" / name).write_bytes(_stray_bytes(name, stray))
        _check_awkward(root)


def _check_awkward(root: Path) -> None:
    """The awkward files must fool loaders exactly as the real ones do; fail loudly if PIL changed."""
    expect = {"rgba_png": ("PNG", "RGBA"), "gray_jpeg": ("JPEG", "L"), "palette_png": ("PNG", "P"),
              "rgb_png": ("PNG", "RGB"), "corrupt_jpeg": ("JPEG", "RGB")}
    for name, how in AWKWARD_PETS.items():
        path = root / "images" / f"{name}.jpg"
        if not path.exists():
            continue
        with Image.open(path) as img:
            if how == "truncated_jpeg":
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        img.load()
                except OSError:
                    continue
                raise RuntimeError(f"{path}: truncated JPEG decoded without error")
            img.load()
            if (img.format, img.mode) != expect[how]:
                raise RuntimeError(f"{path}: expected {expect[how]}, PIL gives {(img.format, img.mode)}")


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def _marker(scale: str, seed: int, awkward: bool, world: str) -> str:
    return json.dumps({"generator": "mixsweep.data.synth", "version": GENERATOR_VERSION, "scale": scale,
                       "seed": int(seed), "awkward": bool(awkward), "world": world}, indent=1) + "\n"


def write_synth(out: Path | str, scale: str = "small", seed: int = 0, awkward: bool = True,
                progress: bool = False, world: str = "planted") -> SynthPaths:
    """Write synthetic COCO 2017 (train/val) and Oxford-IIIT Pet data under `out`; returns the paths.

    `world` (README, "Two worlds with a known answer"): planted, where animal images share the Pets' make-up
    and non-animal images do not, or null, where the label says nothing about the pixels. The Pet images are
    the same in both. Byte-identical for the same (scale, seed, awkward, world). If `out` already holds a complete set made with
    the same arguments it is reused as is; one made with other arguments is replaced. Refuses to touch
    `out/coco` or `out/pets` that write_synth did not make.
    """
    if scale not in SCALES:
        raise MixsweepError(f"unknown synth scale {scale!r}; choose one of: {', '.join(SCALES)}")
    if world not in WORLDS:
        raise MixsweepError(f"unknown synth world {world!r}; choose one of: {', '.join(WORLDS)}")
    spec = SCALES[scale]
    root = Path(out)
    paths = SynthPaths.under(root)
    marker = root / MARKER
    want = _marker(scale, seed, awkward, world)
    if marker.is_file() and marker.read_text() == want:
        return paths
    if marker.is_file():
        marker.unlink()
        for sub in ("coco", "pets"):
            shutil.rmtree(root / sub, ignore_errors=True)
    else:
        for sub in ("coco", "pets"):
            if (root / sub).exists() and any((root / sub).iterdir()):
                raise MixsweepError(f"{root / sub} exists and was not written by write_synth; "
                                    "choose an empty output folder")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_jobs = spec.n_coco_train + spec.n_coco_val + spec.n_pets
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    pool = None
    if n_jobs > 600 and workers > 1:
        # spawn, not fork: callers may hold threads (torch, Ray) that fork would copy mid-lock.
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        _write_coco(paths, scale, seed, pool, progress, world)
        _write_pets(paths, spec, seed, awkward, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown()
    marker.write_text(want)
    if progress:
        print(f"synth: {scale} {world} world, seed {seed}, written to {root} in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr, flush=True)
    return paths
