"""Segmentation metrics from one confusion matrix per split.

Every figure over a split (pixel accuracy, per-class IoU, mIoU, binary IoU, loss) comes from a single
confusion matrix and loss sum accumulated over all its pixels, never from a mean of per-image values:
per-image means overweight small pets and make the figure depend on batch composition.

Convention: `cm[t, p]` counts pixels with target class t predicted as p. Labels: 0 pet, 1 background,
2 border; pixels equal to `ignore_index` (and any label outside [0, C)) are not counted.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from mixsweep.data.pets import IGNORE_LABEL, LABEL_NAMES


def _valid_flat_index(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """target*C + pred for counted pixels, C*C (a spill bin) for the rest; shape (P,)."""
    target = target.reshape(-1).to(torch.int64)
    pred = pred.reshape(-1).to(torch.int64)
    # A spill bin instead of boolean indexing: masking out pixels would need nonzero(), a host sync.
    valid = (target >= 0) & (target < num_classes)
    spill = num_classes * num_classes
    return torch.where(valid, target * num_classes + pred, torch.full_like(target, spill))


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int = len(LABEL_NAMES),
                     ignore_index: int = IGNORE_LABEL) -> Tensor:
    """(C, C) int64 matrix of target (rows) vs predicted (columns) classes over non-ignored pixels.

    `pred` holds class indices (any shape), `target` the same shape; `ignore_index` pixels, and any other
    label outside [0, C), are left out. No host sync, so it is safe inside a CUDA training step.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes {num_classes})")
    idx = _valid_flat_index(pred, target, num_classes)
    # index_add_ into a fixed-size vector: torch.bincount on CUDA reads the input's max back to the host
    # to size its output, which would stall the stream.
    counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.int64, device=idx.device)
    counts.index_add_(0, idx, torch.ones_like(idx))
    return counts[:-1].view(num_classes, num_classes)


def _iou(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    union = tp + fp + fn
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def metrics_from_confusion(cm: Tensor) -> dict[str, float]:
    """accuracy, iou_<class>, miou and iou_binary from a (C, C) confusion matrix (rows = target).

    - accuracy: correct pixels / counted pixels (a fraction, not a percentage).
    - iou_<name>: TP / (TP + FP + FN) per class; NaN for a class absent from both target and prediction.
    - miou: mean IoU over the classes present in the target or the prediction (those with a non-empty
      union), so a split without border pixels is not dragged down by an undefined 0/0.
    - iou_binary: the paper's "IoU (binary)", pet vs everything else (border counted as background).
    - iou_all_pet / iou_all_background: iou_binary of the constant answers (all pet; all background = 0).
    Class names come from LABEL_NAMES when C == 3, else iou_0, iou_1, ...
    """
    cm = cm.detach().to("cpu", torch.float64)
    c = cm.shape[0]
    if cm.shape != (c, c):
        raise ValueError(f"confusion matrix must be square, got shape {tuple(cm.shape)}")
    total = cm.sum()
    tp = cm.diagonal()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    iou = _iou(tp, fp, fn)
    names = LABEL_NAMES if c == len(LABEL_NAMES) else tuple(str(i) for i in range(c))
    out: dict[str, float] = {"accuracy": float(tp.sum() / total) if total > 0 else math.nan}
    for name, v in zip(names, iou.tolist()):
        out[f"iou_{name}"] = v
    present = (tp + fp + fn) > 0
    out["miou"] = float(iou[present].mean()) if present.any() else math.nan

    # Binarise: class 0 (pet) vs the merged rest. Merging the non-pet classes moves no pixel into or out of
    # pet's row or column, so TP, FP and FN of pet are unchanged and iou_binary == iou_pet exactly; it is
    # computed from the binarised matrix anyway so that it stays correct if the label set changes.
    b = torch.stack([
        torch.stack([cm[0, 0], cm[0, 1:].sum()]),
        torch.stack([cm[1:, 0].sum(), cm[1:, 1:].sum()]),
    ])
    out["iou_binary"] = float(_iou(b[0, 0], b[1, 0], b[0, 1]))
    # The trivial answers' iou_binary on the same pixels, to read a model's figure against: every pixel
    # called background scores 0; every pixel called pet scores the pet share of the pixels.
    out["iou_all_background"] = 0.0 if total > 0 else math.nan
    out["iou_all_pet"] = float(b[0].sum() / total) if total > 0 else math.nan
    out["pixels"] = float(total)
    return out


class SegMetrics:
    """Accumulates one confusion matrix and the loss sum over a split, on the device, without host syncs.

    Call `update` per batch, `all_reduce` once (under DDP) after the last update, then `compute`.
    """

    def __init__(self, num_classes: int = len(LABEL_NAMES), ignore_index: int = IGNORE_LABEL,
                 device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self.cm = torch.zeros(c, c, dtype=torch.int64, device=self.device)
        # float64 for the loss sum: ~1e9 float32 additions would lose the low digits.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_pixels = torch.zeros((), dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor, loss_sum: Tensor | None = None) -> None:
        """Add a batch: logits (N,C,H,W), target (N,H,W) int64; `loss_sum` is the summed (not mean)
        cross-entropy over this batch's counted pixels, e.g. F.cross_entropy(..., reduction="sum")."""
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (N,{self.num_classes},H,W), got {tuple(logits.shape)}")
        pred = logits.argmax(1)
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.device)
        self.cm += cm
        if loss_sum is not None:
            self.loss_sum += loss_sum.detach().to(self.device, torch.float64)
            self.loss_pixels += cm.sum()

    def all_reduce(self) -> None:
        """Sum the state over all ranks when torch.distributed is initialised; a no-op otherwise.

        Call it once per evaluation: a second call would count every rank's pixels again.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        c2 = self.num_classes * self.num_classes
        # One collective for all state; float64 holds integer counts exactly up to 2**53.
        buf = torch.cat([self.cm.reshape(-1).to(torch.float64), self.loss_sum.view(1),
                         self.loss_pixels.view(1).to(torch.float64)])
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.cm = buf[:c2].round().to(torch.int64).view(self.num_classes, self.num_classes)
        self.loss_sum = buf[c2].clone()
        self.loss_pixels = buf[c2 + 1].round().to(torch.int64)

    def compute(self) -> dict[str, float]:
        """loss (mean cross-entropy per counted pixel; NaN if no loss was given), accuracy, iou_pet,
        iou_background, iou_border, miou, iou_binary, pixels. The only host sync of this class."""
        out = metrics_from_confusion(self.cm)
        n = int(self.loss_pixels.item())
        out = {"loss": float(self.loss_sum.item()) / n if n > 0 else math.nan, **out}
        return out
