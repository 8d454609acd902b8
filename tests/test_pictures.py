"""Example pictures: valid PNGs of the expected size, norm-pix predictions shown in pixel space."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mixsweep.models import build_mae
from mixsweep.report.pictures import (
    CELL_PX,
    SEG_PALETTE,
    colorize,
    reconstruct_pixels,
    save_reconstructions,
    save_segmentations,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_save_reconstructions(tmp_path):
    torch.manual_seed(0)
    model = build_mae("tiny").eval()
    imgs = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        _, pred, mask = model(imgs, 0.75)
    out = save_reconstructions(tmp_path / "sub" / "recon.png", imgs, pred, mask, model, MEAN, STD, n=3)
    assert out.exists()
    assert _png_size(out) == (3 * CELL_PX, 4 * CELL_PX)
    # n larger than the batch is clamped to the batch.
    out = save_reconstructions(tmp_path / "all.png", imgs, pred, mask, model, MEAN, STD, n=8)
    assert _png_size(out) == (5 * CELL_PX, 4 * CELL_PX)


def test_save_segmentations(tmp_path):
    imgs = torch.randn(4, 3, 32, 32)
    target = torch.randint(0, 3, (4, 32, 32))
    target[:, :4] = 255
    logits = torch.randn(4, 3, 32, 32)
    out = save_segmentations(tmp_path / "seg.png", imgs, target, logits, MEAN, STD, n=2)
    assert _png_size(out) == (3 * CELL_PX, 2 * CELL_PX)
    out = save_segmentations(tmp_path / "seg4.png", imgs, target, logits.argmax(1), MEAN, STD)
    assert _png_size(out) == (3 * CELL_PX, 4 * CELL_PX)


def test_colorize_palette_and_ignore_black():
    rgb = colorize(torch.tensor([[[0, 1, 2, 255]]]))
    assert np.allclose(rgb[0, 0, :3], np.array(SEG_PALETTE, dtype=np.float32))
    assert np.all(rgb[0, 0, 3] == 0)


def test_norm_pix_prediction_is_shown_in_pixel_space():
    model = build_mae("tiny")
    imgs = torch.randn(2, 3, 64, 64)
    t = model.patchify(imgs)
    perfect = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert torch.allclose(reconstruct_pixels(model, imgs, perfect), imgs, atol=1e-4)
