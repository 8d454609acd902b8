"""How each creature looks: the 37 Pet breeds and the ten COCO animals (whose cats and dogs are the
breeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixsweep.synth.draw import RGB
from mixsweep.synth.labels import CAT_BREEDS, DOG_BREEDS


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


def coco_look(category_id: int, rng: np.random.Generator) -> Look:
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
