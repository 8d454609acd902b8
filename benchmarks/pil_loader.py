"""The plain PIL data path that the packed loader is measured against (benchmarks/data_throughput.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch

from mixsweep.data.augment import IMAGENET_MEAN, IMAGENET_STD
from mixsweep.data.imread import ImageReadError, read_rgb_image
from mixsweep.errors import MixsweepError


class FileImageDataset(torch.utils.data.Dataset):
    """The plain PIL path, for comparison: decode + RandomResizedCrop(bicubic) + hflip + ToTensor + Normalize.

    An unreadable file is skipped with one warning (per worker process) and the next readable file is
    returned instead, so an epoch never fails on a bad file.
    """

    def __init__(self, paths: Sequence[Path | str], out_size: int = 224, scale: tuple[float, float] = (0.2, 1.0),
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        from torchvision import transforms as T

        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise MixsweepError("FileImageDataset: no image paths given")
        self.transform = T.Compose([
            T.RandomResizedCrop(out_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.paths)
        for k in range(n):
            path = self.paths[(i + k) % n]
            try:
                img, _ = read_rgb_image(path)
            except ImageReadError as e:
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping unreadable image {path}: {e.reason}", stacklevel=2)
                continue
            return self.transform(img)
        raise MixsweepError(f"FileImageDataset: none of the {n} images is readable")
