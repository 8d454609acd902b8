"""Scene backgrounds (street, indoor, outdoor) and their horizon or floor line; nothing here is
annotated."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mixsweep.synth.draw import pick_colour, shade
from mixsweep.synth.objects import BRIGHT


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((w, h), Image.BILINEAR)) - 0.5


def _gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32), (h, w, 3))


def _building(d: ImageDraw.ImageDraw, rng, x0, x1, top, base):
    c = pick_colour(rng, [(170, 160, 150), (150, 90, 70), (200, 195, 180), (120, 125, 135), (210, 180, 140)])
    d.rectangle([x0, top, x1, base], fill=c)
    ww, wh = rng.uniform(4, 9), rng.uniform(5, 10)
    gx, gy = ww * rng.uniform(1.6, 2.2), wh * rng.uniform(1.5, 2.0)
    lit = pick_colour(rng, [(150, 185, 210), (60, 70, 85), (230, 220, 150)])
    y = top + gy * 0.5
    while y + wh < base - 4:
        x = x0 + gx * 0.4
        while x + ww < x1 - 2:
            d.rectangle([x, y, x + ww, y + wh], fill=lit if rng.random() < 0.8 else shade(lit, 0.6))
            x += gx
        y += gy


def _tree(d: ImageDraw.ImageDraw, rng, x, base, H):
    d.rectangle([x - 0.05 * H, base - 0.5 * H, x + 0.05 * H, base], fill=pick_colour(rng, [(90, 65, 40), (70, 55, 40)]))
    g = pick_colour(rng, [(50, 110, 45), (70, 130, 50), (40, 90, 50)])
    for _ in range(6):
        cx, cy, r = x + rng.normal(0, 0.15 * H), base - 0.7 * H + rng.normal(0, 0.12 * H), rng.uniform(0.15, 0.28) * H
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade(g, rng.uniform(0.8, 1.15)))


def background(rng: np.random.Generator, w: int, h: int, kind: str) -> tuple[Image.Image, int]:
    """Scene background and the y of its horizon / floor line; nothing here is annotated."""
    if kind == "indoor":
        fy = int(h * rng.uniform(0.45, 0.7))
        wall = pick_colour(rng, [(225, 215, 190), (200, 210, 215), (235, 230, 225), (190, 170, 150), (160, 180, 160)])
        floor = pick_colour(rng, [(150, 105, 65), (120, 85, 55), (190, 180, 170), (110, 110, 120), (170, 140, 110)])
        arr = np.concatenate([_gradient(fy, w, wall, shade(wall, 0.9)),
                              _gradient(h - fy, w, shade(floor, 0.85), floor)])
        arr = arr + 12 * _smooth_noise(rng, h, w, 24)[..., None]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:
            for x in np.arange(rng.uniform(0, 12), w, rng.uniform(10, 20)):
                d.line([(x, 0), (x, fy)], fill=shade(wall, 0.93), width=2)
        if rng.random() < 0.7:
            for k in range(1, 8):
                y = fy + (h - fy) * (k / 8) ** 1.3
                d.line([(0, y), (w, y)], fill=shade(floor, 0.8), width=1)
        d.rectangle([0, fy - 3, w, fy + 1], fill=shade(wall, 0.7))
        if rng.random() < 0.7:
            x0 = rng.uniform(0, w * 0.7)
            y0 = rng.uniform(0.05, 0.3) * fy
            ww, wh = rng.uniform(0.2, 0.35) * w, rng.uniform(0.35, 0.6) * fy
            d.rectangle([x0 - 3, y0 - 3, x0 + ww + 3, y0 + wh + 3], fill=(245, 245, 240))
            d.rectangle([x0, y0, x0 + ww, y0 + wh], fill=pick_colour(rng, [(150, 190, 225), (180, 200, 215)]))
            d.line([(x0 + ww / 2, y0), (x0 + ww / 2, y0 + wh)], fill=(245, 245, 240), width=3)
        for _ in range(int(rng.integers(0, 3))):
            x0, y0 = rng.uniform(0, w * 0.85), rng.uniform(0.05, 0.4) * fy
            fw, fh = rng.uniform(0.08, 0.16) * w, rng.uniform(0.15, 0.3) * fy
            d.rectangle([x0, y0, x0 + fw, y0 + fh], fill=(60, 45, 35))
            d.rectangle([x0 + 3, y0 + 3, x0 + fw - 3, y0 + fh - 3], fill=pick_colour(rng, BRIGHT))
        if rng.random() < 0.5:
            rx0, ry0 = rng.uniform(0, 0.4) * w, fy + (h - fy) * rng.uniform(0.3, 0.6)
            d.rectangle([rx0, ry0, rx0 + rng.uniform(0.4, 0.6) * w, h], fill=pick_colour(rng, BRIGHT))
        return img, fy

    hz = int(h * rng.uniform(0.28, 0.5))
    if rng.random() < 0.8:
        sky = (pick_colour(rng, [(95, 150, 215), (120, 170, 225)]),
               pick_colour(rng, [(190, 215, 235), (210, 225, 240)]))
    else:
        sky = ((165, 170, 178), (205, 208, 212))
    if kind == "street":
        ground = ((120, 120, 122), (95, 95, 98))
    else:
        g = pick_colour(rng, [(110, 150, 70), (95, 140, 60), (170, 155, 100), (190, 170, 115), (225, 228, 232),
                              (140, 112, 80)])
        ground = (g, shade(g, 0.72))
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
    d.polygon(pts, fill=shade(ground[0], 0.75))
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
        d.line([(x, y), (x + t, y - ln)], fill=shade(ground[0], s), width=1)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(hz, h), rng.uniform(3, 9)
        d.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=pick_colour(rng, [(130, 128, 125), (100, 95, 90)]))
    return img, hz
