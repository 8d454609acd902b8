"""Compiled graphs shared between stages. Inductor keeps what it compiles (graphs, generated and built kernels,
Triton's binaries) in an on-disk cache; a stage points that cache at a folder every node sees, one subfolder per
torch version and device, so a stage whose shapes an earlier stage compiled (another seed or fraction of the same
recipe) finds them built, on whichever node it lands. Inductor writes its entries whole (a rename) and takes
file locks where it must: a shared POSIX mount (NFS v4, EFS) serves. A cache folder the user chose
(TORCHINDUCTOR_CACHE_DIR) is left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch


def cache_folder(root: Path | str, device: torch.device) -> Path:
    """root/<torch version>-<device name>: what one build compiles for one device."""
    from mixsweep.provenance import device_name

    name = f"torch-{torch.__version__}-{device_name(device)}"
    return Path(root) / re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def _chosen_elsewhere(folder: str) -> bool:
    """TORCHINDUCTOR_CACHE_DIR names another folder than torch's default (which torch sets on first use)."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if value is None or value == folder:
        return False
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch without it: only a user sets the variable
        return True
    return value != default_cache_dir()


def use_shared_cache(root: Path | str, device: torch.device) -> Path | None:
    """Point this process's Inductor (and Triton) caches at root's folder for this build and device, before its
    first compile; None when the user set TORCHINDUCTOR_CACHE_DIR."""
    folder = cache_folder(root, device)
    if _chosen_elsewhere(str(folder)):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    return folder
