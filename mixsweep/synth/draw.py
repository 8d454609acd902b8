"""Low-level drawing shared by the painters: polygon shapes, a pen that records what it covers, colour
helpers, and the camera's finish and file bytes."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


RGB = tuple[int, int, int]


def ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 28,
            rough: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    if rough and rng is not None:
        # Alternating tufts read as fur; smooth noise alone reads as a blob.
        r = 1.0 + rough * (0.6 * rng.random(n) + 0.4 * (np.arange(n) % 2))
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def capsule(p0, p1, w0: float, w1: float, n: int = 7) -> np.ndarray:
    """Tapered stadium from p0 (full width w0) to p1 (full width w1)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    a = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    t1 = np.linspace(a - np.pi / 2, a + np.pi / 2, n)
    t0 = np.linspace(a + np.pi / 2, a + 3 * np.pi / 2, n)
    end1 = p1 + (w1 / 2) * np.stack([np.cos(t1), np.sin(t1)], axis=1)
    end0 = p0 + (w0 / 2) * np.stack([np.cos(t0), np.sin(t0)], axis=1)
    return np.concatenate([end1, end0])


class Pen:
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
        self.poly(ellipse(cx, cy, abs(rx), abs(ry), n=24), fill, solid)

    def line(self, pts, fill, width: float, solid: bool = True) -> None:
        pts = [tuple(map(float, p)) for p in pts]
        w = max(1, int(round(width)))
        self.draw.line(pts, fill=tuple(int(c) for c in fill), width=w)
        if solid:
            self.mdraw.line(pts, fill=255, width=w)

    def mask(self) -> np.ndarray:
        return np.asarray(self.mask_img) > 0


def pick_colour(rng: np.random.Generator, colours) -> tuple[int, int, int]:
    c = np.asarray(colours[rng.integers(len(colours))], float) * rng.uniform(0.85, 1.1)
    return tuple(int(x) for x in np.clip(c, 0, 255))


def shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, x * f))) for x in c)


def camera_finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Camera look: slight blur, exposure jitter and sensor noise."""
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    arr = np.asarray(img, np.float32) * rng.uniform(0.85, 1.12) + rng.uniform(-10, 10)
    arr += rng.normal(0, rng.uniform(2, 5), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
