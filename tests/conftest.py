"""Shared fixtures: synthetic data is written once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """The small synthetic COCO-format and Pet-format set (the demo's data)."""
    from mixsweep.data.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth"), scale="small", seed=0)
