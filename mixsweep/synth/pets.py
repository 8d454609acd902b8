"""The Oxford-IIIT-Pet-format part: pet photos, trimaps, head-box XMLs, list.txt / trainval.txt /
test.txt, and the real archive's awkward and stray files."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixsweep.synth.backgrounds import background
from mixsweep.synth.creatures import draw_creature
from mixsweep.synth.draw import Pen, camera_finish, jpeg_bytes, png_bytes
from mixsweep.synth.jobs import run_jobs, stream_rng
from mixsweep.synth.labels import BREED_CLASS_ID, CAT_BREEDS, DOG_BREEDS
from mixsweep.synth.looks import PET_LOOKS
from mixsweep.synth.objects import OBJECTS
from mixsweep.synth.output import ScaleSpec, SynthPaths


PETS_LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Dog 1:12:Cat\n"
    "#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)

# Awkward files of the real Oxford-IIIT Pet archive (their real names) and how each is stored when awkward=True.
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
    rng = stream_rng(seed, 3, BREED_CLASS_ID[breed] * 100_000 + n)
    w, h = int(rng.integers(200, 321)), int(rng.integers(160, 261))
    setting = "indoor" if rng.random() < 0.55 else "outdoor"
    img, hz = background(rng, w, h, setting)
    pen = Pen(img)  # clutter is drawn but not annotated: the trimap marks only the pet
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
    return PetRender(camera_finish(img, rng), trimap_from_mask(drawn.mask), drawn.head_box, pose)


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


def encode_pet(img: Image.Image, how: str, rng: np.random.Generator) -> bytes:
    """Bytes of a Pet image file, plain or in one of the real archive's awkward forms."""
    if how == "jpeg":
        return jpeg_bytes(img)
    if how == "gray_jpeg":
        return jpeg_bytes(img.convert("L"))
    if how == "palette_png":
        return png_bytes(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    if how == "rgba_png":
        return png_bytes(img.convert("RGBA"))
    if how == "rgb_png":
        return png_bytes(img)
    if how == "corrupt_jpeg":
        # Junk between the entropy-coded data and EOI: libjpeg warns "Corrupt JPEG data: N extraneous
        # bytes before marker 0xd9" and still decodes every pixel.
        data = jpeg_bytes(img)
        assert data[-2:] == b"\xff\xd9"
        junk = bytes(rng.integers(0, 0xFF, 37, dtype=np.uint8))  # no 0xFF, so no fake markers
        return data[:-2] + junk + data[-2:]
    if how == "truncated_jpeg":
        data = jpeg_bytes(img)
        return data[: int(len(data) * 0.6)]
    raise ValueError(f"unknown pet encoding {how!r}")


def _stray_bytes(name: str, rng: np.random.Generator) -> bytes:
    if name.startswith("._"):
        # AppleDouble header (magic 0x00051607, version 2), as macOS leaves beside copied files.
        head = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02"
        return head + bytes(rng.integers(0, 256, 150, dtype=np.uint8))
    head = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jun 11 12:00:00 2012"
    return head.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x01IM" + bytes(rng.integers(0, 256, 200, dtype=np.uint8))


def _pet_job(job: tuple) -> None:
    pets_root, seed, breed, n, how, write_xml = job
    root = Path(pets_root)
    name = f"{breed}_{n}"
    r = render_pet(seed, breed, n)
    enc_rng = stream_rng(seed, 4, BREED_CLASS_ID[breed] * 100_000 + n)
    (root / "images" / f"{name}.jpg").write_bytes(encode_pet(r.image, how, enc_rng))
    Image.fromarray(r.trimap, "L").save(root / "annotations" / "trimaps" / f"{name}.png")
    if write_xml and r.head_box is not None:
        species = "cat" if breed in CAT_BREEDS else "dog"
        w, h = r.image.size
        (root / "annotations" / "xmls" / f"{name}.xml").write_text(
            _pet_xml(name, w, h, species, r.head_box, r.pose))


def pet_image_numbers(breed: str, per_breed: int) -> list[int]:
    """Image numbers n of a breed: 1..k plus the real numbers of its awkward files."""
    special = sorted(int(name.rsplit("_", 1)[1]) for name in AWKWARD_PETS
                     if name.rsplit("_", 1)[0] == breed and int(name.rsplit("_", 1)[1]) > per_breed)
    return list(range(1, per_breed - len(special) + 1)) + special


def write_pets(paths: SynthPaths, spec: ScaleSpec, seed: int, awkward: bool, pool, progress: bool) -> None:
    """Images, trimaps, head-box XMLs and the three lists; the awkward and stray files when awkward."""
    root = paths.pets_root
    for sub in ("images", "annotations/trimaps", "annotations/xmls"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    layout = stream_rng(seed, 5, 0)
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
    run_jobs(_pet_job, jobs, pool, "pets", progress)
    rows.sort()
    lines = [f"{name} {cid} {sp} {bid}\n" for cid, name, sp, bid in rows]
    (root / "annotations" / "list.txt").write_text(PETS_LIST_HEADER + "".join(lines))
    (root / "annotations" / "trainval.txt").write_text(
        "".join(l for l, r in zip(lines, rows) if r[1] in trainval))
    (root / "annotations" / "test.txt").write_text("".join(l for l, r in zip(lines, rows) if r[1] not in trainval))
    if awkward:
        stray = stream_rng(seed, 6, 0)
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
