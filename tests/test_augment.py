"""Batched augmentation: crop-box distribution vs torchvision, image/mask alignment, nearest masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import RandomResizedCrop

from mixsweep.data.augment import AugmentConfig, augment_batch, eval_batch, sample_crop_boxes
from mixsweep.data.packed import PackItem
from mixsweep.data.pack_build import build_pack

N = 20_000
KS_BOUND = 0.025  # two-sample KS critical value at alpha=1e-3 for 20k vs 20k is ~0.0195


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (ties handled by evaluating both CDFs at every point)."""
    a, b = np.sort(a), np.sort(b)
    v = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, v, "right") / len(a) - np.searchsorted(b, v, "right") / len(b))))


def tv_boxes(n: int, h: int, w: int, scale, ratio) -> np.ndarray:
    torch.manual_seed(123)
    img = torch.empty(3, h, w)
    out = np.empty((n, 4))
    for k in range(n):
        i, j, hh, ww = RandomResizedCrop.get_params(img, list(scale), list(ratio))
        out[k] = (j, i, j + ww, i + hh)
    return out


def features(boxes: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {"area": bw * bh / (h * w), "aspect": bw / bh,
            "cx": (boxes[:, 0] + boxes[:, 2]) / (2 * w), "cy": (boxes[:, 1] + boxes[:, 3]) / (2 * h)}


def ours(n: int, h: int, w: int, scale, ratio, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return sample_crop_boxes(n, h, w, scale, ratio, generator=g).numpy().astype(np.float64)


@pytest.mark.parametrize("h,w,scale", [(256, 256, (0.2, 1.0)), (100, 300, (0.2, 1.0)), (480, 640, (0.08, 1.0))])
def test_crop_boxes_match_torchvision_distribution(h, w, scale):
    ratio = (3 / 4, 4 / 3)
    a, b = ours(N, h, w, scale, ratio), tv_boxes(N, h, w, scale, ratio)
    # Integer-valued boxes inside the image, like torchvision's.
    assert np.all(a == np.round(a))
    assert np.all((a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] <= w) & (a[:, 3] <= h))
    assert np.all((a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1]))
    fa, fb = features(a, h, w), features(b, h, w)
    for name in fa:
        d = ks(fa[name], fb[name])
        assert d < KS_BOUND, f"{name}: KS {d:.4f}"
        assert abs(fa[name].mean() - fb[name].mean()) < 0.02 * max(1.0, abs(fb[name].mean()))
        qa, qb = np.quantile(fa[name], [0.1, 0.5, 0.9]), np.quantile(fb[name], [0.1, 0.5, 0.9])
        assert np.allclose(qa, qb, rtol=0.05, atol=0.01), (name, qa, qb)


def test_crop_box_test_detects_wrong_parameters():
    h = w = 256
    ref = features(tv_boxes(N, h, w, (0.2, 1.0), (3 / 4, 4 / 3)), h, w)
    wrong_scale = features(ours(N, h, w, (0.3, 1.0), (3 / 4, 4 / 3)), h, w)
    wrong_ratio = features(ours(N, h, w, (0.2, 1.0), (1 / 2, 2.0)), h, w)
    assert ks(wrong_scale["area"], ref["area"]) > KS_BOUND
    assert ks(wrong_ratio["aspect"], ref["aspect"]) > KS_BOUND


def test_crop_box_fallback_is_torchvisions_central_crop():
    # A 1:1 crop of the whole area never fits a 3:1 image, so every sample falls back.
    a = ours(50, 100, 300, (1.0, 1.0), (1.0, 1.0))
    b = tv_boxes(50, 100, 300, (1.0, 1.0), (1.0, 1.0))
    assert np.array_equal(a, b)
    assert np.array_equal(a[0], [100, 0, 200, 100])


def _label_mask(h: int, w: int) -> np.ndarray:
    """Asymmetric shapes: an L (label 0) near the top-left, a triangle (2) at the right, background 1."""
    img = Image.new("L", (w, h), 1)
    d = ImageDraw.Draw(img)
    d.rectangle([w // 10, h // 10, w // 10 + w // 8, h * 7 // 10], fill=0)
    d.rectangle([w // 10, h * 6 // 10, w // 2, h * 7 // 10], fill=0)
    d.polygon([(w * 6 // 10, h // 8), (w * 9 // 10, h // 8), (w * 9 // 10, h // 2)], fill=2)
    d.ellipse([w * 6 // 10, h * 6 // 10, w * 7 // 10, h * 9 // 10], fill=2)
    return np.asarray(img)


@pytest.fixture(scope="module")
def encoded_pack(tmp_path_factory):
    """Images whose pixel value is 80*label, packed with their masks (crop fit from non-square sources)."""
    root = tmp_path_factory.mktemp("align")
    items = []
    for k, (h, w) in enumerate([(120, 160), (160, 120), (140, 140), (130, 200)]):
        m = _label_mask(h, w)
        if k % 2:
            m = np.ascontiguousarray(m[:, ::-1])
        Image.fromarray(np.repeat((80 * m)[..., None], 3, axis=2).astype(np.uint8)).save(root / f"{k}.png")
        Image.fromarray(m).save(root / f"{k}_m.png")
        items.append(PackItem(str(k), str(root / f"{k}.png"), str(root / f"{k}_m.png")))
    return build_pack(items, root / "cache", size=96, fit="crop", workers=1)


def _agreement(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of pixels, away from label edges, where the nearest class by intensity equals the mask."""
    intensity = images[:, 0] * 255.0  # mean 0, std 1 below, so this is the resampled pixel value
    pred = torch.clamp(torch.round(intensity / 80.0), 0, 2).to(torch.int64)
    m = masks
    pad = torch.nn.functional.pad(m.unsqueeze(1).float(), (1, 1, 1, 1), mode="replicate")
    lo = -torch.nn.functional.max_pool2d(-pad, 3, 1).squeeze(1)
    hi = torch.nn.functional.max_pool2d(pad, 3, 1).squeeze(1)
    interior = lo == hi  # the 3x3 neighbourhood has one label: not in the 1-px blend zone
    assert interior.float().mean() > 0.8
    return float((pred == m)[interior].float().mean())


@pytest.mark.parametrize("hflip,vflip", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5)])
def test_image_and_mask_stay_aligned(encoded_pack, hflip, vflip):
    imgs = torch.from_numpy(np.array(encoded_pack.images)).repeat(16, 1, 1, 1)
    msks = torch.from_numpy(np.array(encoded_pack.masks)).repeat(16, 1, 1)
    cfg = AugmentConfig(out_size=64, hflip=hflip, vflip=vflip, mean=(0, 0, 0), std=(1, 1, 1))
    x, m = augment_batch(imgs, msks, cfg, generator=torch.Generator().manual_seed(1))
    assert x.shape == (64, 3, 64, 64) and x.dtype == torch.float32
    assert m.shape == (64, 64, 64) and m.dtype == torch.int64
    assert _agreement(x, m) > 0.99
    # A mask that missed the image's flip must fail the same check (the shapes are asymmetric).
    if hflip == 1.0:
        assert _agreement(x, torch.flip(m, dims=[-1])) < 0.95
    if vflip == 1.0:
        assert _agreement(x, torch.flip(m, dims=[-2])) < 0.95


@pytest.mark.parametrize("dim,field", [(-1, "hflip"), (-2, "vflip")])
def test_flip_really_flips(encoded_pack, dim, field):
    imgs = torch.from_numpy(np.array(encoded_pack.images))
    msks = torch.from_numpy(np.array(encoded_pack.masks))
    base = AugmentConfig(out_size=64, hflip=0.0, vflip=0.0)
    flipped = AugmentConfig(out_size=64, **{"hflip": 0.0, "vflip": 0.0, field: 1.0})
    # Same seed: the same crop boxes, so the flipped output is the mirror image of the plain one.
    x0, m0 = augment_batch(imgs, msks, base, generator=torch.Generator().manual_seed(5))
    x1, m1 = augment_batch(imgs, msks, flipped, generator=torch.Generator().manual_seed(5))
    assert (torch.flip(m0, dims=[dim]) == m1).float().mean() > 0.99
    assert (torch.flip(x0, dims=[dim]) - x1).abs().mean() < 0.05
    assert (m0 != m1).float().mean() > 0.05


def test_masks_use_nearest_and_keep_ignore():
    g = torch.Generator().manual_seed(0)
    masks = torch.tensor([0, 1, 2, 255], dtype=torch.uint8)[torch.randint(0, 4, (8, 48, 48), generator=g)]
    images = torch.randint(0, 256, (8, 48, 48, 3), dtype=torch.uint8, generator=g)
    _, m = augment_batch(images, masks, AugmentConfig(out_size=40, vflip=0.5), generator=g)
    assert set(m.unique().tolist()) <= {0, 1, 2, 255}
    assert 255 in m.unique().tolist()
    _, me = eval_batch(images, masks, out_size=40)
    assert set(me.unique().tolist()) <= {0, 1, 2, 255}


def test_channels_first_equals_channels_last_and_seed_repeats():
    g = torch.Generator().manual_seed(3)
    nhwc = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=g)
    nchw = nhwc.permute(0, 3, 1, 2).contiguous()
    cfg = AugmentConfig(out_size=24)
    a, _ = augment_batch(nhwc, None, cfg, generator=torch.Generator().manual_seed(9))
    b, _ = augment_batch(nchw, None, cfg, generator=torch.Generator().manual_seed(9))
    c, _ = augment_batch(nhwc, None, cfg, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    bf, _ = augment_batch(nhwc, None, cfg, generator=torch.Generator().manual_seed(9), dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and torch.allclose(bf.float(), a, atol=0.05)


def test_eval_batch_is_deterministic_resize_and_normalise():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 3, (3, 32, 32), dtype=torch.uint8, generator=g)
    x, m = eval_batch(images, masks, out_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    want = (images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(x, want, atol=1e-5)
    assert torch.equal(m, masks.long())
    x2, m2 = eval_batch(images, masks, out_size=16)
    assert x2.shape == (3, 3, 16, 16) and m2.shape == (3, 16, 16)
    # nearest-exact 2x downscale picks pixel (2i+1, 2j+1)... of each 2x2 block, never a blend.
    assert torch.equal(m2, masks.long()[:, 1::2, 1::2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_on_gpu_has_no_host_sync():
    dev = torch.device("cuda")
    images = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8, device=dev)
    masks = torch.randint(0, 3, (64, 64, 64), dtype=torch.uint8, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, m = augment_batch(images, masks, AugmentConfig(out_size=32), generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda" and m.shape == (64, 32, 32)
