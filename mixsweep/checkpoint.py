"""Reading checkpoint files: one safe reader (weights_only) whose failures are one line naming the file, and
the one rule for the name prefixes that DDP and torch.compile add to state-dict keys."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mixsweep.errors import MixsweepError

STATE_FILE = "state.pt"  # a mixsweep checkpoint folder's training state (mixsweep.train.loop writes it)
# Prefixes that wrappers add to parameter names: DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: str | Path) -> object:
    """What a checkpoint file (or a checkpoint folder's STATE_FILE) holds, loaded on the CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise MixsweepError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a text file, a pickle with foreign objects, ...
        reason = " ".join(str(e).split())[:120]
        raise MixsweepError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason})") from None


def strip_wrappers(name: str) -> str:
    """A state-dict key without the wrapper prefixes, which can stack (module._orig_mod.)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def clean_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {strip_wrappers(str(k)): v for k, v in sd.items()}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Model weights from a file holding {"model": sd} or a bare sd, wrapper prefixes stripped."""
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise MixsweepError(f"{path}: not a readable checkpoint (no state dict of tensors inside)")
    return clean_state_dict(obj)
