"""Reading images and trimaps once, robustly, whatever the archive holds.

The real Oxford-IIIT Pet archive (and some COCO copies) hold palette, grayscale and RGBA images, a PNG
saved as .jpg and JPEGs with corrupt data. All of that is resolved here, at indexing or packing time, so
an epoch only ever sees clean RGB uint8 arrays.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Real trimaps and images are small; anything bigger than this is a decompression bomb, not a photo.
Image.MAX_IMAGE_PIXELS = 100_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ImageReadError(Exception):
    """An image that cannot be decoded; `reason` is a short phrase for manifests and warnings."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_file(path: Path) -> bool:
    """True for real image files; skips macOS `._*` resource forks, `.mat` files and hidden files."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def name_problem(name: object) -> str | None:
    """Why `name` (from an annotation file) cannot name a file under a data folder, or None if it can.

    The one rule for names that become paths: a non-empty relative path without `..` parts, so it stays
    under its folder; UTF-8 without lone surrogates, so Parquet and the file system can store it; no control
    characters, so every message naming it stays on one line.
    """
    if not isinstance(name, str):
        return "is not a string"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if _CONTROL.search(name):
        return "holds a control character"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if all(p in ("", ".") for p in parts):
        return "names no file"
    if ".." in parts:
        return "climbs out with '..'"
    return None


def link_escape(folder: Path, name: str) -> str | None:
    """Where folder/name really is when a symlink on the way leads outside `folder`, else None.

    A plain file directly in the folder costs one lstat; only links and nested names are resolved.
    """
    path = folder / name
    if "/" not in name and not path.is_symlink():
        return None
    real, inside = os.path.realpath(path), os.path.realpath(folder)
    return None if os.path.commonpath([real, inside]) == inside else real


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        # Decode fully now: a truncated file fails here, at indexing, not mid-epoch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
        return img
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unidentified format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(path, f"cannot decode ({str(e).splitlines()[0][:80]})") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"too large ({e})") from None


def describe_quirks(path: Path, img: Image.Image) -> str:
    """A short note of what was unusual about the file ('' for a plain RGB file of its own format)."""
    notes = []
    fmt = (img.format or "").upper()
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and fmt and fmt != "JPEG":
        notes.append(f"{fmt.lower()} saved as {suffix}")
    elif suffix == ".png" and fmt and fmt != "PNG":
        notes.append(f"{fmt.lower()} saved as .png")
    if img.mode != "RGB":
        notes.append(f"mode {img.mode}->RGB")
    return "; ".join(notes)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of any PIL mode; transparent pixels of RGBA/LA/P+transparency go on black."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(base, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = max(float(arr.max()), 1.0)
        return Image.fromarray((arr * (255.0 / hi)).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def read_rgb_image(path: Path | str) -> tuple[Image.Image, str]:
    """Open any image as an RGB PIL image; returns (image, quirks). Raises ImageReadError."""
    path = Path(path)
    img = _open(path)
    quirks = describe_quirks(path, img)
    return to_rgb(img), quirks


def read_label_png(path: Path | str) -> np.ndarray:
    """Raw integer values of a label image (trimap), HxW uint8.

    Palette images keep their indices (converting them to L would map through the palette's colours),
    RGB label images use their first channel.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("P", "L", "1"):
        arr = np.asarray(img)
    elif img.mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)[..., 0]
    elif img.mode.startswith("I"):
        arr = np.asarray(img)
    else:
        arr = np.asarray(img.convert("L"))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ImageReadError(path, f"label values outside 0..255 (min {arr.min()}, max {arr.max()})")
    return arr.astype(np.uint8)
