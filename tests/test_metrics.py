"""Confusion-matrix metrics: hand-computed cases, ignore pixels, whole-split pooling, DDP all-reduce."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from mixsweep.data.pets import LABEL_NAMES
from mixsweep.train.metrics import SegMetrics, confusion_matrix, metrics_from_confusion


def onehot_logits(pred: torch.Tensor, c: int = 3) -> torch.Tensor:
    """Logits (N,C,H,W) whose argmax is `pred` (N,H,W)."""
    return F.one_hot(pred, c).permute(0, 3, 1, 2).float()


def test_confusion_matrix_by_hand():
    target = torch.tensor([[0, 0, 1, 2], [1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 2], [0, 1, 1, 0]])
    cm = confusion_matrix(pred, target, 3, 255)
    assert cm.dtype == torch.int64
    # rows = target, cols = pred; the 255 pixel (pred 0) is not counted
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 1]]


def test_metrics_by_hand():
    cm = torch.tensor([[1, 1, 0], [1, 2, 0], [0, 1, 1]])
    m = metrics_from_confusion(cm)
    assert m["accuracy"] == pytest.approx(4 / 7)
    # pet: tp 1, fp 1, fn 1 -> 1/3; background: tp 2, fp 2, fn 1 -> 2/5; border: tp 1, fp 0, fn 1 -> 1/2
    assert m["iou_pet"] == pytest.approx(1 / 3)
    assert m["iou_background"] == pytest.approx(2 / 5)
    assert m["iou_border"] == pytest.approx(1 / 2)
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 5 + 1 / 2) / 3)
    # binary: pet vs rest -> tp 1, fn 1 (pet->bg), fp 1 (bg->pet) -> 1/3, the same as iou_pet
    assert m["iou_binary"] == pytest.approx(1 / 3)
    assert m["pixels"] == 7


def test_iou_binary_equals_iou_pet_on_random_matrices():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        cm = torch.randint(0, 50, (3, 3), generator=g)
        m = metrics_from_confusion(cm)
        assert m["iou_binary"] == pytest.approx(m["iou_pet"])


def test_miou_skips_absent_classes():
    # No border in target or prediction: its IoU is undefined and miou averages pet and background only.
    cm = torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm)
    assert math.isnan(m["iou_border"])
    assert m["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_ignore_index_excluded_and_loss_mean():
    target = torch.tensor([[[0, 1], [255, 255]]])
    logits = torch.randn(1, 3, 2, 2)
    met = SegMetrics()
    loss_sum = F.cross_entropy(logits, target, ignore_index=255, reduction="sum")
    met.update(logits, target, loss_sum)
    out = met.compute()
    assert out["pixels"] == 2
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, target, ignore_index=255)))
    # Changing the prediction at ignored pixels changes nothing.
    logits2 = logits.clone()
    logits2[0, :, 1, :] = torch.tensor([9.0, -9.0, -9.0])[:, None]
    met2 = SegMetrics()
    met2.update(logits2, target)
    assert met2.cm.tolist() == met.cm.tolist()
    assert math.isnan(met2.compute()["loss"])


def test_whole_split_differs_from_mean_of_images():
    # Image A: a large pet, predicted perfectly. Image B: a tiny pet, entirely missed.
    ta = torch.zeros(1, 10, 10, dtype=torch.int64)
    ta[:, :, 5:] = 1
    tb = torch.ones(1, 10, 10, dtype=torch.int64)
    tb[0, 0, 0] = 0
    pa, pb = ta.clone(), torch.ones_like(tb)
    per_image = []
    split = SegMetrics()
    for t, p in ((ta, pa), (tb, pb)):
        one = SegMetrics()
        one.update(onehot_logits(p), t)
        per_image.append(one.compute()["iou_pet"])
        split.update(onehot_logits(p), t)
    assert per_image == [1.0, 0.0]
    # The split's pet IoU pools pixels: 50 / (50 + 1) -- not the per-image mean 0.5.
    assert split.compute()["iou_pet"] == pytest.approx(50 / 51)
    assert split.compute()["iou_pet"] != pytest.approx(sum(per_image) / 2)


def test_against_torchmetrics():
    import torchmetrics as tm  # a test extra: this check must run, not skip
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 16, 16, generator=g)
    target = torch.randint(0, 3, (4, 16, 16), generator=g)
    target[:, :2] = 255
    met = SegMetrics()
    met.update(logits[:2], target[:2])
    met.update(logits[2:], target[2:])
    out = met.compute()
    pred = logits.argmax(1)
    cm_ref = tm.functional.classification.multiclass_confusion_matrix(pred, target, 3, ignore_index=255)
    assert met.cm.tolist() == cm_ref.tolist()
    iou_ref = tm.functional.classification.multiclass_jaccard_index(pred, target, 3, average="none",
                                                                    ignore_index=255)
    for name, v in zip(LABEL_NAMES, iou_ref.tolist()):
        assert out[f"iou_{name}"] == pytest.approx(v)
    acc_ref = tm.functional.classification.multiclass_accuracy(pred, target, 3, average="micro", ignore_index=255)
    assert out["accuracy"] == pytest.approx(float(acc_ref))
    binary_ref = tm.functional.classification.binary_jaccard_index(
        (pred == 0).long(), torch.where(target == 255, 255, (target == 0).long()), ignore_index=255)
    assert out["iou_binary"] == pytest.approx(float(binary_ref))


def test_all_reduce_without_process_group_is_noop():
    met = SegMetrics()
    met.update(onehot_logits(torch.zeros(1, 2, 2, dtype=torch.int64)), torch.zeros(1, 2, 2, dtype=torch.int64))
    met.all_reduce()
    assert met.cm[0, 0] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        met = SegMetrics()
        # rank 0: 3 pixels of pet predicted pet; rank 1: 2 background pixels, one predicted pet
        if rank == 0:
            t = torch.zeros(1, 1, 3, dtype=torch.int64)
            p = t.clone()
            loss = torch.tensor(0.3)
        else:
            t = torch.tensor([[[1, 1, 255]]])
            p = torch.tensor([[[1, 0, 0]]])
            loss = torch.tensor(1.7)
        met.update(onehot_logits(p), t, loss)
        met.all_reduce()
        results.put((rank, met.cm.tolist(), met.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_all_reduce_gloo_two_processes(monkeypatch):
    mp = torch.multiprocessing.get_context("spawn")
    results = mp.SimpleQueue()
    port = _free_port()
    if "GLOO_SOCKET_IFNAME" not in os.environ:  # loopback: sandboxes may have no routable hostname
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    torch.multiprocessing.start_processes(_worker, args=(2, port, results), nprocs=2, join=True,
                                          start_method="spawn")
    got = sorted(results.get() for _ in range(2))
    for rank, cm, out in got:
        assert cm == [[3, 0, 0], [1, 1, 0], [0, 0, 0]]
        assert out["pixels"] == 5
        assert out["loss"] == pytest.approx(2.0 / 5)
        assert out["iou_pet"] == pytest.approx(3 / 4)


def test_trivial_answers_iou_equals_scoring_those_answers():
    """iou_all_pet / iou_all_background are what a constant prediction would score on the same pixels."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (4, 16, 16), generator=g)
    target[0, :2] = 255  # ignored pixels count in neither
    m = metrics_from_confusion(confusion_matrix(torch.full_like(target, 1), target))
    all_pet = metrics_from_confusion(confusion_matrix(torch.zeros_like(target), target))
    all_bg = metrics_from_confusion(confusion_matrix(torch.ones_like(target), target))
    assert m["iou_all_pet"] == pytest.approx(all_pet["iou_binary"])
    assert m["iou_all_background"] == all_bg["iou_binary"] == 0.0
    assert 0.2 < m["iou_all_pet"] < 0.45
