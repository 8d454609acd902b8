"""Batched augmentation: random resized crop + flips + normalise, the same code on CPU and GPU.

A whole batch is cropped, resized and flipped by one `grid_sample` over one affine grid, so a GPU does
it in a few kernels. Images are sampled bilinearly and masks with nearest neighbour through the SAME grid,
so an image and its mask stay aligned exactly. Nothing here reads a value back to the host (no `.item()`,
no Python loop over the batch), so on a GPU it never stalls the stream.

The packed images are small (256² by default), so a crop is at most a ~1.15x downscale: plain bilinear,
without antialiasing, is close to torchvision's bicubic RandomResizedCrop there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentConfig:
    """RandomResizedCrop(out_size, scale, ratio) + flips + normalise, as in the MAE recipes."""

    out_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    attempts: int = 10,
) -> Tensor:
    """(n, 4) float boxes x0, y0, x1, y1 in pixels, drawn like torchvision's RandomResizedCrop.get_params.

    Per sample: `attempts` tries of area ~ U(scale)·H·W and log-aspect ~ U(log ratio); the first try whose
    rounded size fits wins, at a uniform integer offset; if none fits, the central crop with the aspect
    clamped to `ratio`. All tries are drawn at once and the first valid one picked with argmax, so there is
    no loop over samples and no host sync.
    """
    if generator is not None and device is None:
        device = generator.device
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, **kw))
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, **kw))
    # torch.round and Python's round both round half to even, so sizes match torchvision's int(round(...)).
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.uint8), dim=1, keepdim=True)  # argmax returns the first maximum
    any_ok = ok.any(dim=1)
    w = torch.gather(w, 1, first).squeeze(1)
    h = torch.gather(h, 1, first).squeeze(1)

    # torchvision's fallback: the central crop, aspect clamped into `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))

    # Uniform integer offsets in [0, size - crop], like torch.randint(0, size - crop + 1).
    u = torch.rand(n, 2, **kw)
    y0 = torch.minimum(torch.floor(u[:, 0] * (height - h + 1)), height - h)
    x0 = torch.minimum(torch.floor(u[:, 1] * (width - w + 1)), width - w)
    y0 = torch.where(any_ok, y0, torch.full_like(y0, (height - fh) // 2))
    x0 = torch.where(any_ok, x0, torch.full_like(x0, (width - fw) // 2))
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1).to(torch.float32)


def _to_nchw_float(images: Tensor, channels_last: bool | None) -> Tensor:
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (B,H,W,3) or (B,3,H,W), got shape {tuple(images.shape)}")
    if channels_last is None:
        channels_last = images.shape[-1] == 3 and images.shape[1] != 3
    if channels_last:
        images = images.permute(0, 3, 1, 2)
    # A channels-last view is fine: grid_sample and interpolate take strided input, and skipping the
    # NCHW copy is faster overall.
    return images.to(torch.float32)


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype) -> Tensor:
    # (x/255 - mean)/std folded into one multiply-add.
    std_t = torch.tensor(std, dtype=torch.float32).to(x.device, non_blocking=True)
    mean_t = torch.tensor(mean, dtype=torch.float32).to(x.device, non_blocking=True)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
    shift = (mean_t / std_t).view(1, -1, 1, 1)
    return torch.addcmul(-shift, x, scale).to(dtype)


def augment_batch(
    images: Tensor,
    masks: Tensor | None = None,
    cfg: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Random resized crop + flips + normalise a batch; returns (images (B,3,out,out), masks (B,out,out) int64).

    `images` is uint8 (B,H,W,3) as stored in a pack, or (B,3,H,W); `channels_last=None` takes a last dim of
    3 as channels-last. `masks` is uint8 (B,H,W); 255 (ignore) and every other value pass through unchanged
    since masks are sampled with nearest neighbour. `generator` must live on the images' device.
    """
    x = _to_nchw_float(images, channels_last)
    b, _, height, width = x.shape
    dev = x.device
    out = cfg.out_size
    boxes = sample_crop_boxes(b, height, width, cfg.scale, cfg.ratio, generator=generator, device=dev)
    r = torch.rand(b, 2, generator=generator, device=dev)
    sign_x = 1.0 - 2.0 * (r[:, 0] < cfg.hflip).to(torch.float32)
    sign_y = 1.0 - 2.0 * (r[:, 1] < cfg.vflip).to(torch.float32)

    # With align_corners=False an output coordinate u in [-1, 1] spans the crop's outer pixel edges:
    # input_norm = u * (crop / size) + (lo + hi) / size - 1; a flip negates u, i.e. the scale. The affine
    # matrix is diagonal (no rotation or shear), so the grid is built separably: F.affine_grid gives the
    # same grid but its batched matmul is 3x slower on a CPU.
    x0, y0, x1, y1 = boxes.unbind(1)
    sx, tx = sign_x * (x1 - x0) / width, (x0 + x1) / width - 1.0
    sy, ty = sign_y * (y1 - y0) / height, (y0 + y1) / height - 1.0
    u = (torch.arange(out, device=dev, dtype=torch.float32) * 2 + 1) / out - 1
    grid = torch.empty(b, out, out, 2, device=dev, dtype=torch.float32)
    grid[..., 0] = (sx[:, None] * u + tx[:, None])[:, None, :]
    grid[..., 1] = (sy[:, None] * u + ty[:, None])[:, :, None]

    # 'border' so edge samples half a pixel outside the crop never blend with zeros.
    img = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    img = _normalise(img, cfg.mean, cfg.std, dtype)
    if masks is None:
        return img, None
    m = F.grid_sample(masks.unsqueeze(1).to(torch.float32), grid, mode="nearest",
                      padding_mode="border", align_corners=False)
    return img, m.squeeze(1).to(torch.int64)


def eval_batch(
    images: Tensor,
    masks: Tensor | None = None,
    out_size: int = 224,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Deterministic resize of whole images to out_size² (antialiased bilinear; masks nearest) + normalise."""
    x = _to_nchw_float(images, channels_last)
    resize = tuple(x.shape[-2:]) != (out_size, out_size)
    if resize:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    img = _normalise(x, mean, std, dtype)
    if masks is None:
        return img, None
    m = masks.to(torch.int64)
    if resize:
        # 'nearest-exact' samples pixel centres (PIL's NEAREST); plain 'nearest' is shifted by half a pixel.
        m = F.interpolate(masks.unsqueeze(1).to(torch.float32), size=(out_size, out_size),
                          mode="nearest-exact").squeeze(1).to(torch.int64)
    return img, m
