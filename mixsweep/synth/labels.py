"""The real datasets' label tables: COCO 2017 categories and Oxford-IIIT Pet breeds."""

from __future__ import annotations


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
# COCO train2017's published image count per animal category, in ANIMAL_IDS order: a third of its animal
# images show a cat or a dog. The synthetic scenes pick their animals with these weights, cats and dogs
# weighted up (mixsweep.synth.scenes.PET_FAMILY_WEIGHT: the planted effect's strength).
ANIMAL_IMAGE_COUNTS: tuple[int, ...] = (3237, 4114, 4385, 2941, 1529, 1968, 2143, 960, 1916, 2546)
NON_ANIMAL_IDS: tuple[int, ...] = tuple(i for i, _, sc in COCO_CATEGORIES if sc != "animal")
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
