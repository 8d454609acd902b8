"""The two synthetic worlds (README, "Two worlds with a known answer"): planted, where what an image
shows follows its label, and null, where it does not."""

from __future__ import annotations

from mixsweep.synth.jobs import stream_rng
from mixsweep.synth.labels import ANIMAL_IDS, NON_ANIMAL_IDS
from mixsweep.synth.scenes import Scene, render_coco_scene


WORLDS = ("planted", "null")
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
    coin = stream_rng(seed, 7, stream * 1_000_003 + index)
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
