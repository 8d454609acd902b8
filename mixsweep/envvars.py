"""Environment variables set for one block and restored after it: Tune and wandb read their settings from the
process environment, which the rest of the process shares."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set `values` in os.environ for the block; the earlier values (or their absence) come back after it."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
