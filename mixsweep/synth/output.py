"""What write_synth writes and where: the generator's stamp, the scales and the folder layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixsweep.synth.labels import CAT_BREEDS, DOG_BREEDS


# Written into every set (COCO info, synth.json): the generator's first module path, kept so that sets stay
# byte-identical and ones already on disk are reused.
GENERATOR_NAME = "mixsweep.data.synth"
GENERATOR_VERSION = 4  # 2: close-ups, worlds; 3: animals weighted as in COCO; 4: a larger planted effect
MARKER = "synth.json"  # the stamp: written last, so a folder holding it is complete
# Written first and removed after the stamp: claims coco/ and pets/ as write_synth's own while they are
# unfinished, so a write that was killed is redone instead of refused as someone else's data.
WRITING = "synth.writing.json"

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
