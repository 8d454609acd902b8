"""Painting a creature into an image: placement, coat pattern and colours, the fur grain, eyes and nose."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mixsweep.synth.bodies import (BEAK, BODY, EAR, EAR_INNER, FUR, HEAD, HORN, LEG_FAR, LEG_NEAR, MANE, MUZZLE,
                                   PAW, TAIL, WING, Geometry, body_geometry)
from mixsweep.synth.draw import RGB
from mixsweep.synth.looks import Look


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


def _texture(look: Look, g: Geometry, lab: np.ndarray, u: np.ndarray, v: np.ndarray,
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
    g = body_geometry(look, rng, pose)
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
