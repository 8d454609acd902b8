"""Creature outlines: a look and a pose become labelled polygons (body, head, ears, legs, tail, ...) in
units of the body's half-length."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mixsweep.synth.draw import capsule, ellipse
from mixsweep.synth.looks import Look


def _chain(start, a0: float, da: float, n: int, length: float, w0: float, w1: float) -> list[np.ndarray]:
    """A curving tapered limb (tail, trunk) as overlapping capsules; returns the pieces and the tip."""
    pieces, p, a = [], np.asarray(start, float), a0
    seg = length / n
    for i in range(n):
        q = p + seg * np.array([math.cos(a), math.sin(a)])
        wa = w0 + (w1 - w0) * i / n
        wb = w0 + (w1 - w0) * (i + 1) / n
        pieces.append(capsule(p, q, wa, wb, n=5))
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
class Geometry:
    parts: list[tuple[int, np.ndarray]] = field(default_factory=list)
    details: list[tuple[str, float, float, float]] = field(default_factory=list)  # (kind, x, y, r)
    head_parts: list[np.ndarray] = field(default_factory=list)
    hc: tuple[float, float] = (0.0, 0.0)
    hr: float = 0.3
    bh: float = 0.45
    pose: str = "side"


def _ears(g: Geometry, look: Look, hc: np.ndarray, r: float, rng: np.random.Generator, frontal: bool) -> None:
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
                e = ellipse(c[0], c[1], 0.3 * r, ry, rot=-sd * 0.25, n=20)
            else:
                c = hc + np.array([-0.3 * r, 0.05 * r + ry * 0.3])
                e = ellipse(c[0], c[1], 0.32 * r, ry, rot=0.3, n=20)
            g.parts.append((EAR, e))
            g.head_parts.append(e)
    elif kind == "round":
        for a in ((-130, -50) if frontal else (-115, -75)):
            c = hc + 0.85 * r * _dir(a)
            e = ellipse(c[0], c[1], 0.32 * r, 0.32 * r, n=16)
            g.parts.append((EAR, e))
            g.head_parts.append(e)
    elif kind == "side":
        for sd in ((-1, 1) if frontal else (-1,)):
            c = hc + np.array([sd * 1.05 * r if frontal else -0.6 * r, -0.35 * r])
            e = ellipse(c[0], c[1], 0.45 * r, 0.17 * r, rot=(0.3 * sd if frontal else -0.4), n=16)
            g.parts.append((EAR, e))
            g.head_parts.append(e)


def _tail(g: Geometry, look: Look, start: np.ndarray, rng: np.random.Generator, sitting: bool) -> None:
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
        g.parts.append((MANE, ellipse(tip[0], tip[1], 0.06, 0.1, n=10)))


def _quadruped(look: Look, rng: np.random.Generator, pose: str) -> Geometry:
    bh = look.body_h * rng.uniform(0.92, 1.08)
    leg = look.leg * rng.uniform(0.92, 1.08)
    lw = look.leg_w
    r = look.head * rng.uniform(0.93, 1.07)
    g = Geometry(bh=bh, hr=r, pose=pose)
    rough = look.fluffy
    if pose == "face":
        # Head-and-shoulders, as in many Pet photos.
        r = 0.8
        hc = np.array([0.0, -0.25])
        g.parts.append((BODY, ellipse(0.0, 0.95, 1.0, 0.8, n=36, rough=rough, rng=rng)))
        for sd in (-1, 1):
            g.parts.append((LEG_NEAR, capsule((sd * 0.38, 1.1), (sd * 0.42, 1.85), 0.32, 0.28)))
            g.parts.append((PAW, ellipse(sd * 0.44, 1.85, 0.2, 0.11, n=12)))
        _ears(g, look, hc, r, rng, frontal=True)
        head = ellipse(hc[0], hc[1], r * 1.02, r * 0.92, n=40, rough=rough * 0.6, rng=rng)
        g.parts.append((HEAD, head))
        g.head_parts.append(head)
        if look.ears in ("floppy", "long", "small_floppy"):
            g.parts = [p for p in g.parts if p[0] != EAR] + [p for p in g.parts if p[0] == EAR]
        mw = r * (0.38 + 0.5 * look.snout)
        g.parts.append((MUZZLE, ellipse(hc[0], hc[1] + 0.42 * r, mw, 0.3 * r + 0.3 * look.snout * r, n=20)))
        for sd in (-1, 1):
            g.details.append(("eye", hc[0] + sd * 0.36 * r, hc[1] - 0.08 * r, 0.13 * r))
        g.details.append(("nose", hc[0], hc[1] + 0.3 * r, 0.11 * r))
        g.hc, g.hr = (float(hc[0]), float(hc[1])), r
        return g

    sitting = pose == "sit"
    if sitting:
        ground = 0.78
        body_parts = [ellipse(0.0, 0.05, 0.78, bh * 1.15, rot=-0.9, n=36, rough=rough, rng=rng),
                      ellipse(-0.25, 0.4, 0.48, 0.38, n=24, rough=rough, rng=rng)]
        for far in (True, False):
            x = 0.28 if far else 0.4
            g.parts.append((LEG_FAR if far else LEG_NEAR, capsule((x, 0.0), (x + 0.04, ground), lw * 1.1, lw)))
            g.parts.append((PAW, ellipse(x + 0.08, ground, lw * 1.0, lw * 0.5, n=12)))
        g.parts.append((PAW, ellipse(0.02, ground, 0.22, 0.08, n=12)))
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
                piece = (LEG_FAR if far else LEG_NEAR, capsule(top, bot, lw * 1.25, lw * 0.85))
                paw = (PAW, ellipse(bot[0] + lw * 0.2, bot[1], lw * 0.65, lw * 0.35, n=10))
                if far:
                    g.parts += [piece, paw]
                else:
                    near_legs += [piece, paw]
        body_parts = [ellipse(0.0, 0.0, 1.0, bh, n=40, rough=rough, rng=rng)]
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
        g.parts.append((NECK, capsule(nb, hc, bh * 1.1, r * 1.3)))
        if look.mane:
            side = np.array([-0.35 * bh, -0.25 * bh])
            g.parts.append((MANE, capsule(nb + side, hc + side * 0.4, 0.12, 0.08)))
    else:
        g.parts.append((NECK, capsule((0.75, -bh * 0.35) if not sitting else (0.35, -0.45), hc, r * 1.2, r)))
    if not sitting:
        g.parts += near_legs
    head = ellipse(hc[0], hc[1], r * 1.05, r * 0.9, n=32, rough=rough * 0.5, rng=rng)
    g.parts.append((HEAD, head))
    g.head_parts.append(head)
    if look.snout >= 0.3 and look.neck > 0:
        # Long faces (horse, giraffe, cow) point down and forward.
        tip = hc + (r + look.snout) * _dir(rng.uniform(35, 60))
        muzzle = capsule(hc, tip, r * 1.4, r * 1.0)
        nose_at = tip
    else:
        mc = hc + np.array([0.7 * r + 0.45 * look.snout, 0.3 * r])
        muzzle = ellipse(mc[0], mc[1], 0.35 * r + 0.55 * look.snout, 0.45 * r, n=20)
        nose_at = mc + np.array([0.3 * r + 0.5 * look.snout, -0.12 * r])
    g.parts.append((MUZZLE, muzzle))
    g.head_parts.append(muzzle)
    _ears(g, look, hc, r, rng, frontal=False)
    if look.horns == "cow":
        g.parts.append((HORN, capsule(hc + np.array([0.0, -0.8 * r]), hc + np.array([0.25 * r, -1.5 * r]),
                                      0.1 * r * 3, 0.05)))
    elif look.horns == "ossicones":
        for dx in (-0.25, 0.1):
            g.parts.append((HORN, capsule(hc + np.array([dx * r, -0.7 * r]), hc + np.array([dx * r, -1.5 * r]),
                                          0.3 * r, 0.35 * r)))
    g.details.append(("eye", hc[0] + 0.35 * r, hc[1] - 0.18 * r, 0.15 * r if look.species == "cat" else 0.12 * r))
    g.details.append(("nose", nose_at[0], nose_at[1], 0.12 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def _bird(look: Look, rng: np.random.Generator, pose: str) -> Geometry:
    g = Geometry(bh=0.5, hr=look.head, pose=pose)
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
            g.parts.append((PAW, capsule((x, 0.35), (x + 0.05, 0.95), 0.07, 0.05)))
    g.parts.append((TAIL, np.array([[-0.7, -0.15], [-1.65, 0.05], [-1.6, 0.35], [-0.7, 0.2]])))
    g.parts.append((BODY, ellipse(0.0, 0.0, 1.0, 0.52, rot=tilt, n=32)))
    head = ellipse(hc[0], hc[1], r, r, n=20)
    g.parts.append((HEAD, head))
    g.head_parts.append(head)
    beak = _tri(hc + np.array([0.75 * r, -0.3 * r]), hc + np.array([0.75 * r, 0.3 * r]),
                hc + np.array([r + 0.4, 0.1]))
    g.parts.append((BEAK, beak))
    if pose != "fly":
        g.parts.append((WING, ellipse(-0.15, -0.05, 0.7, 0.3, rot=0.15, n=20)))
    g.details.append(("eye", hc[0] + 0.35 * r, hc[1] - 0.15 * r, 0.16 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def _elephant(look: Look, rng: np.random.Generator, pose: str) -> Geometry:
    bh, r, lw, leg = look.body_h, look.head, look.leg_w, look.leg * rng.uniform(0.92, 1.08)
    g = Geometry(bh=bh, hr=r, pose=pose)
    for far in (True, False):
        for hx in (-0.6, 0.55):
            top = np.array([hx + (0.12 if far else 0.0), bh * 0.4])
            bot = top + np.array([rng.normal(0, 0.05), leg])
            g.parts.append((LEG_FAR if far else LEG_NEAR, capsule(top, bot, lw, lw * 0.95)))
    _tail(g, look, np.array([-0.97, -bh * 0.2]), rng, False)
    g.parts.append((BODY, ellipse(0.0, 0.0, 1.0, bh, n=40)))
    hc = np.array([1.0, -0.35])
    head = ellipse(hc[0], hc[1], r, r * 0.95, n=28)
    g.parts.append((HEAD, head))
    for p in _chain(hc + np.array([0.55 * r, 0.35 * r]), math.radians(rng.uniform(70, 95)),
                    math.radians(rng.uniform(-12, 12)), 5, 0.95, 0.24, 0.1):
        g.parts.append((TRUNK, p))
    g.parts.append((HORN, capsule(hc + np.array([0.5 * r, 0.55 * r]), hc + np.array([0.95 * r, 0.95 * r]),
                                  0.08, 0.04)))
    ear = ellipse(hc[0] - 0.45 * r, hc[1] + 0.15 * r, 0.5 * r * 1.1, 0.75 * r * 1.1, rot=0.2, n=24)
    g.parts.append((EAR, ear))
    g.head_parts += [head, ear]
    g.details.append(("eye", hc[0] + 0.4 * r, hc[1] - 0.15 * r, 0.07 * r))
    g.hc, g.hr = (float(hc[0]), float(hc[1])), r
    return g


def body_geometry(look: Look, rng: np.random.Generator, pose: str) -> Geometry:
    if look.body == "bird":
        return _bird(look, rng, pose)
    if look.body == "elephant":
        return _elephant(look, rng, pose)
    return _quadruped(look, rng, pose)
