"""Example pictures: MAE reconstructions (paper Fig. 2) and segmentation masks (paper Fig. 4).

Figures are drawn on matplotlib's object API with the Agg canvas, never pyplot, so nothing global
(backend, current figure) changes and it is safe in workers. Each grid cell is CELL_INCHES square at DPI,
so a PNG's pixel size depends only on the number of rows and columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from mixsweep.data.pets import LABEL_NAMES

CELL_INCHES = 1.5
DPI = 100
CELL_PX = int(CELL_INCHES * DPI)

# RGB in [0, 1] for labels 0, 1, 2 (LABEL_NAMES); any other label (IGNORE_LABEL) is black.
SEG_PALETTE = ((0.90, 0.55, 0.10), (0.20, 0.40, 0.75), (0.95, 0.95, 0.60))


def _cpu(t: Tensor) -> Tensor:
    return t.detach().float().cpu()


def _denormalise(imgs: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, 3, H, W) normalised -> (N, H, W, 3) float in [0, 1]."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (imgs * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _mosaic_figure(cells: np.ndarray):
    """(rows, cols, H, W, 3) pictures in [0, 1] as one image, a thin white line between cells, drawn on a single
    axes that fills the figure (one axes per cell made a stage's pictures cost most of a second on a CPU).
    Returns the figure, its axes, and a function giving a cell's top-left corner in the axes' data coordinates."""
    rows, cols, h, w, _ = cells.shape
    gap = max(1, round(0.03 * w))
    canvas = np.ones((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = cells[r, c]
    fig = Figure(figsize=(cols * CELL_INCHES, rows * CELL_INCHES), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    return fig, ax, lambda r, c: (c * (w + gap) - 0.5, r * (h + gap) - 0.5, w, h)


def _label(ax, corner, text: str) -> None:
    # Inside the cell, so the figure keeps its exact size with no outer margin for titles.
    x, y, w, h = corner
    ax.text(x + 0.03 * w, y + 0.03 * h, text, va="top", ha="left", fontsize=7,
            bbox=dict(facecolor="white", alpha=0.75, pad=1.5, linewidth=0))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def save_reconstructions(
    path: str | Path,
    imgs: Tensor,
    pred: Tensor,
    mask: Tensor,
    model,
    mean: Sequence[float],
    std: Sequence[float],
    n: int = 8,
) -> Path:
    """Rows: original, masked, reconstruction, reconstruction with the visible patches pasted; n columns.

    `imgs` are the normalised inputs (N, 3, H, W), `pred` the decoder output (N, L, p·p·3), `mask` (N, L)
    with 1 = masked. A norm-pix model predicts each patch up to its own mean and variance, so, as the
    reference visualisation does, we put back the target patch's statistics before showing it.
    """
    n = min(n, imgs.shape[0])
    imgs, pred, mask = _cpu(imgs[:n]), _cpu(pred[:n]), _cpu(mask[:n])
    recon = reconstruct_pixels(model, imgs, pred)
    pix_mask = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1]))
    rows = {
        "original": _denormalise(imgs, mean, std),
        "masked": _denormalise(imgs, mean, std) * (1 - _hwc(pix_mask)) + 0.5 * _hwc(pix_mask),
        "reconstruction": _denormalise(recon, mean, std),
        "recon. + visible": _denormalise(imgs * (1 - pix_mask) + recon * pix_mask, mean, std),
    }
    fig, ax, corner = _mosaic_figure(np.stack([pics[:n] for pics in rows.values()]))
    for r, name in enumerate(rows):
        _label(ax, corner(r, 0), name)
    return _save(fig, path)


def reconstruct_pixels(model, imgs: Tensor, pred: Tensor) -> Tensor:
    """(N, 3, H, W) image (in the normalised input space) from a patch prediction (N, L, p·p·3).

    Under norm-pix loss the model predicts each patch standardised by its own statistics; undo that with
    the statistics of the true patch, as the reference visualisation does.
    """
    if getattr(model, "norm_pix_loss", False):
        target = model.patchify(imgs)
        mu = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mu
    return model.unpatchify(pred)


def _hwc(x: Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def colorize(labels: Tensor) -> np.ndarray:
    """(N, H, W) integer labels -> (N, H, W, 3) RGB with SEG_PALETTE; other labels black."""
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(SEG_PALETTE)] = SEG_PALETTE
    idx = labels.detach().cpu().long().clamp(0, 255).numpy()
    return lut[idx]


def save_segmentations(
    path: str | Path,
    imgs: Tensor,
    target: Tensor,
    pred_labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    n: int = 8,
) -> Path:
    """Columns: image, ground truth, prediction; one row per sample (n rows).

    `target` and `pred_labels` are (N, H, W) labels (0 pet, 1 background, 2 border, 255 ignore); logits
    (N, C, H, W) are accepted for the prediction and reduced with argmax.
    """
    n = min(n, imgs.shape[0])
    if pred_labels.dim() == 4:
        pred_labels = pred_labels.argmax(dim=1)
    cols = {
        "image": _denormalise(_cpu(imgs[:n]), mean, std),
        "ground truth": colorize(target[:n]),
        "prediction": colorize(pred_labels[:n]),
    }
    fig, ax, corner = _mosaic_figure(np.stack(list(cols.values()), axis=1))
    for c, name in enumerate(cols):
        _label(ax, corner(0, c), name)
    handles = [Patch(color=rgb, label=name) for rgb, name in zip(SEG_PALETTE, LABEL_NAMES)]
    ax.legend(handles=handles, loc="lower right", fontsize=6, framealpha=0.75)  # in the last cell
    return _save(fig, path)
