"""Man-made things, one painter per COCO category drawn; each paints with a Pen, so its mask comes with
it."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mixsweep.synth.draw import Pen, capsule, ellipse, pick_colour, shade


BRIGHT = [(200, 30, 30), (30, 60, 160), (230, 230, 230), (40, 40, 45), (150, 150, 155), (220, 180, 40),
          (30, 120, 70), (120, 40, 120), (230, 110, 30)]
SKIN = [(240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40)]


def _person(pen: Pen, rng, cx, by, H):
    skin, shirt = pick_colour(rng, SKIN), pick_colour(rng, BRIGHT)
    pants = pick_colour(rng, [(40, 50, 90), (30, 30, 35), (110, 90, 70), (70, 70, 75)])
    hr = 0.085 * H
    hy = by - H + hr
    sh, hip, tw = hy + 1.5 * hr, by - 0.47 * H, 0.25 * H
    st = rng.uniform(-0.07, 0.07) * H
    for sd in (-1, 1):
        pen.poly(capsule((cx + sd * 0.05 * H, hip), (cx + sd * (0.06 * H + st), by - 0.02 * H), 0.1 * H, 0.08 * H),
                 pants)
        pen.ellipse(cx + sd * (0.06 * H + st) + 0.02 * H, by - 0.015 * H, 0.05 * H, 0.02 * H, (30, 25, 22))
    pen.poly([(cx - tw / 2, sh), (cx + tw / 2, sh), (cx + tw * 0.42, hip + 0.03 * H), (cx - tw * 0.42, hip + 0.03 * H)],
             shirt)
    for sd in (-1, 1):
        a = rng.uniform(-0.5, 0.3)
        hand = (cx + sd * (tw / 2 + 0.3 * H * math.sin(abs(a))), sh + 0.3 * H * math.cos(a))
        pen.poly(capsule((cx + sd * tw * 0.45, sh + 0.03 * H), hand, 0.075 * H, 0.06 * H), shirt)
        pen.ellipse(hand[0], hand[1], 0.03 * H, 0.03 * H, skin)
    pen.rect(cx - 0.03 * H, hy + 0.7 * hr, cx + 0.03 * H, sh + 1, skin)
    pen.ellipse(cx, hy, hr * 0.9, hr, skin)
    hair = pick_colour(rng, [(30, 25, 20), (90, 60, 30), (200, 170, 100), (120, 120, 120)])
    pen.poly(ellipse(cx, hy - 0.35 * hr, hr * 0.95, hr * 0.7, n=20)[10:], hair)


def _car(pen: Pen, rng, cx, by, H):
    W = H * rng.uniform(2.1, 2.6)
    body, glass = pick_colour(rng, BRIGHT), (150, 185, 210)
    x0, x1 = cx - W / 2, cx + W / 2
    pen.poly([(x0, by - 0.15 * H), (x1, by - 0.15 * H), (x1, by - 0.55 * H), (x0 + 0.05 * W, by - 0.6 * H)], body)
    pen.poly([(x0 + 0.2 * W, by - 0.58 * H), (x1 - 0.22 * W, by - 0.58 * H), (x1 - 0.32 * W, by - H),
              (x0 + 0.3 * W, by - H)], shade(body, 0.9))
    pen.poly([(x0 + 0.26 * W, by - 0.6 * H), (cx - 0.02 * W, by - 0.6 * H), (cx - 0.02 * W, by - 0.93 * H),
              (x0 + 0.33 * W, by - 0.93 * H)], glass)
    pen.poly([(cx + 0.02 * W, by - 0.6 * H), (x1 - 0.28 * W, by - 0.6 * H), (x1 - 0.35 * W, by - 0.93 * H),
              (cx + 0.02 * W, by - 0.93 * H)], glass)
    for wx in (x0 + 0.2 * W, x1 - 0.2 * W):
        pen.ellipse(wx, by - 0.17 * H, 0.17 * H, 0.17 * H, (25, 25, 25))
        pen.ellipse(wx, by - 0.17 * H, 0.08 * H, 0.08 * H, (160, 160, 165))
    pen.ellipse(x1 - 0.03 * W, by - 0.42 * H, 0.04 * W, 0.05 * H, (250, 240, 190))


def _bus(pen: Pen, rng, cx, by, H):
    W = H * rng.uniform(2.6, 3.3)
    body = pick_colour(rng, [(220, 180, 40), (200, 40, 40), (40, 90, 170), (235, 235, 235), (40, 140, 90)])
    x0, x1 = cx - W / 2, cx + W / 2
    pen.poly([(x0, by - 0.12 * H), (x1, by - 0.12 * H), (x1, by - 0.95 * H), (x1 - 0.03 * W, by - H),
              (x0, by - H)], body)
    n = int(rng.integers(4, 7))
    for i in range(n):
        wx = x0 + 0.05 * W + i * 0.85 * W / n
        pen.rect(wx, by - 0.85 * H, wx + 0.7 * W / n, by - 0.55 * H, (140, 175, 200))
    pen.rect(x1 - 0.12 * W, by - 0.85 * H, x1 - 0.04 * W, by - 0.15 * H, (90, 110, 120))
    pen.rect(x0, by - 0.35 * H, x1, by - 0.3 * H, shade(body, 0.7))
    for wx in (x0 + 0.16 * W, x1 - 0.18 * W):
        pen.ellipse(wx, by - 0.13 * H, 0.13 * H, 0.13 * H, (25, 25, 25))


def _truck(pen: Pen, rng, cx, by, H):
    W = H * rng.uniform(2.2, 2.8)
    cab, box = pick_colour(rng, BRIGHT), pick_colour(rng, [(230, 230, 225), (180, 180, 175), (160, 60, 40)])
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0, by - H, x0 + 0.68 * W, by - 0.15 * H, box)
    pen.poly([(x0 + 0.7 * W, by - 0.15 * H), (x1, by - 0.15 * H), (x1, by - 0.5 * H), (x1 - 0.08 * W, by - 0.75 * H),
              (x0 + 0.7 * W, by - 0.75 * H)], cab)
    pen.poly([(x1 - 0.2 * W, by - 0.5 * H), (x1 - 0.03 * W, by - 0.5 * H), (x1 - 0.09 * W, by - 0.7 * H),
              (x1 - 0.2 * W, by - 0.7 * H)], (140, 175, 200))
    for wx in (x0 + 0.15 * W, x0 + 0.5 * W, x1 - 0.15 * W):
        pen.ellipse(wx, by - 0.14 * H, 0.14 * H, 0.14 * H, (25, 25, 25))


def _traffic_light(pen: Pen, rng, cx, by, H):
    pen.rect(cx - 0.025 * H, by - 0.7 * H, cx + 0.025 * H, by, (70, 70, 72))
    pen.rect(cx - 0.09 * H, by - H, cx + 0.09 * H, by - 0.62 * H, (35, 35, 30))
    lit = rng.integers(3)
    for i, c in enumerate([(230, 40, 30), (240, 190, 40), (40, 200, 90)]):
        pen.ellipse(cx, by - 0.94 * H + i * 0.12 * H, 0.05 * H, 0.05 * H, c if i == lit else shade(c, 0.3))


def _fire_hydrant(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(200, 35, 30), (230, 190, 40)])
    pen.rect(cx - 0.22 * H, by - 0.75 * H, cx + 0.22 * H, by, c)
    pen.ellipse(cx, by - 0.78 * H, 0.25 * H, 0.22 * H, shade(c, 0.85))
    pen.rect(cx - 0.38 * H, by - 0.55 * H, cx + 0.38 * H, by - 0.42 * H, shade(c, 0.8))
    pen.rect(cx - 0.3 * H, by - 0.08 * H, cx + 0.3 * H, by, shade(c, 0.7))


def _stop_sign(pen: Pen, rng, cx, by, H):
    pen.rect(cx - 0.025 * H, by - 0.7 * H, cx + 0.025 * H, by, (150, 150, 150))
    r = 0.17 * H
    octo = ellipse(cx, by - H + r, r, r, rot=math.pi / 8, n=8)
    pen.poly(octo, (190, 25, 30))
    pen.rect(cx - 0.7 * r, by - H + 0.85 * r, cx + 0.7 * r, by - H + 1.15 * r, (245, 245, 245))


def _bench(pen: Pen, rng, cx, by, H):
    W = H * rng.uniform(2.2, 3.0)
    wood = pick_colour(rng, [(140, 95, 55), (100, 70, 45), (60, 110, 60)])
    x0, x1 = cx - W / 2, cx + W / 2
    for lx in (x0 + 0.08 * W, x1 - 0.12 * W):
        pen.rect(lx, by - 0.5 * H, lx + 0.04 * W, by, (50, 50, 50))
    pen.rect(x0, by - 0.55 * H, x1, by - 0.45 * H, wood)
    for k in range(2):
        pen.rect(x0, by - H + k * 0.2 * H, x1, by - 0.88 * H + k * 0.2 * H, wood)
    for lx in (x0 + 0.1 * W, x1 - 0.1 * W):
        pen.rect(lx, by - H, lx + 0.03 * W, by - 0.5 * H, (50, 50, 50))


def _umbrella(pen: Pen, rng, cx, by, H):
    c1, c2 = pick_colour(rng, BRIGHT), pick_colour(rng, BRIGHT)
    R = 0.55 * H
    pen.line([(cx, by - 0.7 * H), (cx, by)], (40, 40, 40), max(1, 0.04 * H))
    arc = ellipse(cx, by - 0.6 * H, R, 0.4 * H, n=24)[12:]
    pen.poly(arc, c1)
    for k in range(0, 6, 2):
        a0, a1 = math.pi + k * math.pi / 6, math.pi + (k + 1) * math.pi / 6
        pen.poly([(cx, by - 0.6 * H), (cx + R * math.cos(a0), by - 0.6 * H + 0.4 * H * math.sin(a0)),
                  (cx + R * math.cos(a1), by - 0.6 * H + 0.4 * H * math.sin(a1))], c2)


def _suitcase(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, BRIGHT)
    W = 0.7 * H
    pen.rect(cx - W / 2, by - 0.85 * H, cx + W / 2, by, c)
    pen.rect(cx - 0.15 * W, by - H, cx + 0.15 * W, by - 0.85 * H, (40, 40, 40))
    for k in (0.3, 0.7):
        pen.rect(cx - W / 2 + k * W - 1, by - 0.85 * H, cx - W / 2 + k * W + 1, by, shade(c, 0.7))


def _sports_ball(pen: Pen, rng, cx, by, H):
    r = H / 2
    c = pick_colour(rng, [(245, 245, 245), (230, 120, 30), (220, 220, 60)])
    pen.ellipse(cx, by - r, r, r, c)
    for k in range(5):
        a = k * 2 * math.pi / 5 + rng.uniform(0, 1)
        pen.ellipse(cx + 0.55 * r * math.cos(a), by - r + 0.55 * r * math.sin(a), 0.2 * r, 0.2 * r, (30, 30, 30))


def _kite(pen: Pen, rng, cx, by, H):
    c1, c2 = pick_colour(rng, BRIGHT), pick_colour(rng, BRIGHT)
    top, mid, bot = (cx, by - H), by - 0.65 * H, (cx, by - 0.2 * H)
    pen.poly([top, (cx + 0.3 * H, mid), bot, (cx - 0.3 * H, mid)], c1)
    pen.poly([top, (cx + 0.3 * H, mid), (cx, mid)], c2)
    pen.line([bot, (cx + 0.1 * H, by - 0.1 * H), (cx - 0.05 * H, by)], (60, 60, 60), 1, solid=False)


def _chair(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(120, 80, 45), (160, 110, 60), (40, 40, 40), (200, 200, 195), (150, 40, 40)])
    W = 0.5 * H
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0, by - 0.5 * H, x0 + 0.08 * W, by, shade(c, 0.8))
    pen.rect(x1 - 0.08 * W, by - 0.5 * H, x1, by, shade(c, 0.8))
    pen.rect(x0 - 0.05 * W, by - 0.55 * H, x1 + 0.05 * W, by - 0.47 * H, c)
    pen.rect(x0, by - H, x0 + 0.1 * W, by - 0.5 * H, c)
    pen.rect(x0, by - H, x1 * 0.3 + x0 * 0.7 + 0.3 * W, by - 0.85 * H, c)


def _couch(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(120, 60, 50), (70, 90, 120), (150, 140, 120), (80, 80, 80), (60, 100, 70)])
    W = H * rng.uniform(2.0, 2.6)
    x0, x1 = cx - W / 2, cx + W / 2
    pen.rect(x0 + 0.05 * W, by - 0.08 * H, x0 + 0.08 * W, by, (40, 30, 25))
    pen.rect(x1 - 0.08 * W, by - 0.08 * H, x1 - 0.05 * W, by, (40, 30, 25))
    pen.rect(x0 + 0.05 * W, by - H, x1 - 0.05 * W, by - 0.45 * H, shade(c, 0.85))
    pen.rect(x0, by - 0.5 * H, x1, by - 0.08 * H, c)
    for x in (x0, x1 - 0.1 * W):
        pen.rect(x, by - 0.7 * H, x + 0.1 * W, by - 0.08 * H, shade(c, 0.92))
    pen.line([(cx, by - 0.5 * H), (cx, by - 0.3 * H)], shade(c, 0.7), 1, solid=False)


def _dining_table(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(140, 95, 55), (180, 140, 100), (240, 240, 235), (90, 60, 40)])
    W = H * rng.uniform(1.6, 2.2)
    pen.poly([(cx - W / 2, by - H), (cx + W / 2, by - H), (cx + W / 2 + 0.05 * W, by - 0.85 * H),
              (cx - W / 2 - 0.05 * W, by - 0.85 * H)], c)
    for lx in (cx - 0.45 * W, cx + 0.4 * W):
        pen.rect(lx, by - 0.85 * H, lx + 0.05 * W, by, shade(c, 0.8))


def _tv(pen: Pen, rng, cx, by, H):
    W = H * rng.uniform(1.4, 1.8)
    pen.rect(cx - 0.2 * W, by - 0.05 * H, cx + 0.2 * W, by, (30, 30, 30))
    pen.rect(cx - 0.04 * W, by - 0.2 * H, cx + 0.04 * W, by, (30, 30, 30))
    pen.rect(cx - W / 2, by - H, cx + W / 2, by - 0.18 * H, (20, 20, 22))
    scr = pick_colour(rng, [(60, 120, 200), (200, 120, 60), (40, 160, 80), (230, 230, 240)])
    pen.rect(cx - 0.45 * W, by - 0.95 * H, cx + 0.45 * W, by - 0.24 * H, scr)
    pen.ellipse(cx + rng.uniform(-0.2, 0.2) * W, by - 0.6 * H, 0.12 * W, 0.15 * H, shade(scr, 0.6))


def _laptop(pen: Pen, rng, cx, by, H):
    W = 1.4 * H
    c = pick_colour(rng, [(190, 190, 195), (40, 40, 45)])
    pen.poly([(cx - W / 2, by - 0.12 * H), (cx + W / 2, by - 0.12 * H), (cx + 0.6 * W, by), (cx - 0.6 * W, by)], c)
    pen.poly([(cx - W / 2, by - 0.12 * H), (cx + W / 2, by - 0.12 * H), (cx + 0.45 * W, by - H), (cx - 0.45 * W, by - H)],
             shade(c, 0.8))
    pen.poly([(cx - 0.44 * W, by - 0.2 * H), (cx + 0.44 * W, by - 0.2 * H), (cx + 0.4 * W, by - 0.92 * H),
              (cx - 0.4 * W, by - 0.92 * H)], (70, 130, 200))


def _bottle(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(40, 110, 50), (110, 60, 25), (150, 190, 210), (200, 200, 205)])
    W = 0.3 * H
    pen.rect(cx - W / 2, by - 0.62 * H, cx + W / 2, by, c)
    pen.poly([(cx - W / 2, by - 0.62 * H), (cx + W / 2, by - 0.62 * H), (cx + 0.15 * W, by - 0.8 * H),
              (cx - 0.15 * W, by - 0.8 * H)], c)
    pen.rect(cx - 0.15 * W, by - H, cx + 0.15 * W, by - 0.8 * H, c)
    pen.rect(cx - 0.17 * W, by - H, cx + 0.17 * W, by - 0.94 * H, pick_colour(rng, BRIGHT))
    pen.rect(cx - W / 2, by - 0.45 * H, cx + W / 2, by - 0.2 * H, pick_colour(rng, [(240, 235, 220), (200, 40, 40)]))


def _cup(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(240, 240, 235), (200, 60, 50), (60, 90, 160), (230, 200, 80)])
    W = 0.8 * H
    pen.ellipse(cx + 0.5 * W, by - 0.55 * H, 0.22 * W, 0.28 * H, shade(c, 0.85))
    pen.poly([(cx - W / 2, by - H), (cx + W / 2, by - H), (cx + 0.4 * W, by), (cx - 0.4 * W, by)], c)
    pen.ellipse(cx, by - H, W / 2, 0.08 * H, (70, 45, 30))


def _bowl(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(240, 240, 235), (200, 60, 50), (60, 90, 160), (140, 100, 60)])
    W = 2.2 * H
    pen.poly(ellipse(cx, by - H, W / 2, H, n=32)[:17], c)
    pen.ellipse(cx, by - H, W / 2, 0.15 * H, shade(c, 0.8))


def _clock(pen: Pen, rng, cx, by, H):
    r = H / 2
    pen.ellipse(cx, by - r, r, r, (40, 40, 40))
    pen.ellipse(cx, by - r, 0.88 * r, 0.88 * r, (245, 245, 240))
    for a in rng.uniform(0, 2 * math.pi, 2):
        pen.line([(cx, by - r), (cx + 0.7 * r * math.cos(a), by - r + 0.7 * r * math.sin(a))], (20, 20, 20),
                 max(1, 0.06 * r))


def _vase(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(60, 90, 160), (200, 200, 195), (160, 70, 50), (50, 120, 110)])
    prof = [(0.0, 0.28), (0.2, 0.4), (0.45, 0.38), (0.7, 0.18), (0.85, 0.14), (1.0, 0.2)]
    right = [(cx + w * H, by - t * H) for t, w in prof]
    left = [(cx - w * H, by - t * H) for t, w in reversed(prof)]
    pen.poly(right + left, c)
    pen.rect(cx - 0.3 * H, by - 0.5 * H, cx + 0.3 * H, by - 0.45 * H, shade(c, 0.7))


def _potted_plant(pen: Pen, rng, cx, by, H):
    pot = pick_colour(rng, [(170, 90, 60), (220, 220, 215), (60, 60, 60)])
    pen.poly([(cx - 0.22 * H, by - 0.35 * H), (cx + 0.22 * H, by - 0.35 * H), (cx + 0.16 * H, by),
              (cx - 0.16 * H, by)], pot)
    for _ in range(int(rng.integers(6, 11))):
        a = rng.uniform(-2.6, -0.5)
        ln = rng.uniform(0.35, 0.65) * H
        tip = (cx + ln * math.cos(a), by - 0.35 * H + ln * math.sin(a))
        pen.poly(capsule((cx, by - 0.35 * H), tip, 0.03 * H, 0.14 * H),
                 pick_colour(rng, [(40, 120, 50), (70, 150, 60)]))


def _book(pen: Pen, rng, cx, by, H):
    for k in range(int(rng.integers(1, 4))):
        c = pick_colour(rng, BRIGHT)
        x = cx - 0.5 * H + k * 0.3 * H
        pen.rect(x, by - H * rng.uniform(0.8, 1.0), x + 0.27 * H, by, c)
        pen.rect(x + 0.04 * H, by - 0.7 * H, x + 0.23 * H, by - 0.62 * H, (240, 230, 200))


def _refrigerator(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(235, 235, 232), (190, 190, 195), (60, 60, 62)])
    W = 0.5 * H
    pen.rect(cx - W / 2, by - H, cx + W / 2, by, c)
    pen.rect(cx - W / 2, by - 0.66 * H, cx + W / 2, by - 0.64 * H, shade(c, 0.6))
    pen.rect(cx + 0.3 * W, by - 0.6 * H, cx + 0.36 * W, by - 0.35 * H, (120, 120, 125))
    pen.rect(cx + 0.3 * W, by - 0.9 * H, cx + 0.36 * W, by - 0.72 * H, (120, 120, 125))


def _microwave(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(235, 235, 232), (40, 40, 42), (190, 190, 195)])
    W = 1.7 * H
    pen.rect(cx - W / 2, by - H, cx + W / 2, by, c)
    pen.rect(cx - 0.42 * W, by - 0.85 * H, cx + 0.15 * W, by - 0.15 * H, (30, 35, 40))
    pen.rect(cx + 0.22 * W, by - 0.85 * H, cx + 0.42 * W, by - 0.6 * H, (90, 160, 120))


def _teddy_bear(pen: Pen, rng, cx, by, H):
    c = pick_colour(rng, [(170, 120, 70), (210, 180, 130), (240, 235, 225), (120, 80, 50)])
    pen.ellipse(cx, by - 0.35 * H, 0.28 * H, 0.33 * H, c)
    for sd in (-1, 1):
        pen.ellipse(cx + sd * 0.2 * H, by - 0.08 * H, 0.12 * H, 0.08 * H, shade(c, 0.9))
        pen.ellipse(cx + sd * 0.3 * H, by - 0.45 * H, 0.08 * H, 0.15 * H, shade(c, 0.9))
        pen.ellipse(cx + sd * 0.18 * H, by - 0.98 * H, 0.08 * H, 0.08 * H, c)
    pen.ellipse(cx, by - 0.8 * H, 0.22 * H, 0.2 * H, c)
    pen.ellipse(cx, by - 0.74 * H, 0.09 * H, 0.07 * H, (235, 220, 190))
    for sd in (-1, 1):
        pen.ellipse(cx + sd * 0.08 * H, by - 0.85 * H, 0.025 * H, 0.025 * H, (20, 20, 20))


def _fruit(colour):
    def draw(pen: Pen, rng, cx, by, H):
        r = H / 2
        pen.ellipse(cx, by - r, r, r * 0.95, pick_colour(rng, [colour]))
        pen.rect(cx - 0.05 * r, by - 2.2 * r, cx + 0.05 * r, by - 1.8 * r, (90, 60, 30))
    return draw


def _banana(pen: Pen, rng, cx, by, H):
    W = 2.5 * H
    outer = ellipse(cx, by - H, W / 2, H, n=32)[1:16]
    inner = ellipse(cx, by - H, W / 2 * 0.9, H * 0.55, n=32)[1:16][::-1]
    pen.poly(np.concatenate([outer, inner]), (235, 205, 60))


# category id -> (drawer, nominal height as a fraction of the image height, where it stands)
OBJECTS: dict[int, tuple[Callable, float, str]] = {
    1: (_person, 0.55, "ground"), 3: (_car, 0.28, "ground"), 6: (_bus, 0.45, "ground"),
    8: (_truck, 0.4, "ground"), 10: (_traffic_light, 0.6, "ground"), 11: (_fire_hydrant, 0.15, "ground"),
    13: (_stop_sign, 0.5, "ground"), 15: (_bench, 0.2, "ground"), 28: (_umbrella, 0.35, "ground"),
    33: (_suitcase, 0.18, "ground"), 37: (_sports_ball, 0.08, "ground"), 38: (_kite, 0.2, "sky"),
    62: (_chair, 0.4, "ground"), 63: (_couch, 0.35, "ground"), 67: (_dining_table, 0.3, "ground"),
    72: (_tv, 0.3, "ground"), 73: (_laptop, 0.15, "ground"), 44: (_bottle, 0.22, "ground"),
    47: (_cup, 0.1, "ground"), 51: (_bowl, 0.07, "ground"), 85: (_clock, 0.16, "wall"),
    86: (_vase, 0.2, "ground"), 64: (_potted_plant, 0.3, "ground"), 84: (_book, 0.12, "ground"),
    82: (_refrigerator, 0.7, "ground"), 78: (_microwave, 0.15, "ground"), 88: (_teddy_bear, 0.22, "ground"),
    53: (_fruit((200, 40, 35)), 0.07, "ground"), 55: (_fruit((240, 150, 30)), 0.07, "ground"),
    52: (_banana, 0.05, "ground"),
}
STREET_OBJECTS = (1, 1, 3, 3, 6, 8, 10, 11, 13, 15, 28, 33)
INDOOR_OBJECTS = (62, 63, 67, 72, 73, 44, 47, 51, 85, 86, 64, 84, 82, 78, 88, 53, 55, 52, 1)
PARK_OBJECTS = (1, 1, 15, 37, 38, 28, 33, 3)
