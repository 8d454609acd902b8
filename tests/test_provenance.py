"""No stale result: a change to the code that decides results fails the suite until its version is bumped or the
change is declared result-neutral; every result records the versions and device that made it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mixsweep import provenance


def test_the_code_version_lock_matches_the_result_deciding_sources():
    """If this fails, read its message: bump CODE_VERSION (or GENERATOR_VERSION), or declare the change neutral."""
    assert provenance.lock_problems() == []


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the package with a lock of its own, for changing sources without touching the real ones."""
    root = tmp_path / "mixsweep"
    shutil.copytree(provenance.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    provenance.write_lock(root)
    return root


def test_a_changed_result_source_fails_until_a_version_decision(package):
    versions = provenance.guarded_versions()
    assert provenance.lock_problems(package) == []
    loop = package / "train" / "loop.py"
    loop.write_text(loop.read_text().replace("return values", "return values * 2", 1))
    (problem,) = provenance.lock_problems(package)
    assert problem.startswith("train/loop.py changed since CODE_VERSION") and "--neutral" in problem
    with pytest.raises(SystemExit, match="bump it, or pass --neutral"):
        provenance.write_lock(package)  # no silent re-lock
    # Decision 1: the version is bumped. The suite says so until the lock records it.
    bumped = {**versions, "code": versions["code"] + "-next"}
    (problem,) = provenance.lock_problems(package, versions=bumped)
    assert "was written for " + versions["code"] in problem
    provenance.write_lock(package, versions=bumped)
    assert provenance.lock_problems(package, versions=bumped) == []
    # Decision 2: a later change declared result-neutral.
    pretrain = package / "train" / "pretrain.py"
    pretrain.write_text(pretrain.read_text() + "\n# a comment\n")
    assert provenance.lock_problems(package, versions=bumped)
    provenance.write_lock(package, neutral=True, versions=bumped)
    assert provenance.lock_problems(package, versions=bumped) == []


def test_synthetic_worlds_and_only_result_sources_are_guarded(package):
    draw = package / "synth" / "draw.py"
    draw.write_text(draw.read_text() + "\n")
    (problem,) = provenance.lock_problems(package)
    assert problem.startswith("synth/draw.py changed since GENERATOR_VERSION")
    draw.write_text(draw.read_text()[:-1])
    for orchestration in ("report/plots.py", "sweep/run.py", "tracking.py", "train/launch.py"):
        path = package / orchestration
        path.write_text(path.read_text() + "\n# moved results around, made none\n")
    assert provenance.lock_problems(package) == []


def test_runtime_info_names_versions_commit_and_device():
    import torch

    info = provenance.runtime_info(torch.device("cpu"))
    assert set(info) == set(provenance.RUNTIME_FIELDS)
    assert info["code_version"] == provenance.CODE_VERSION and info["device"].startswith("cpu (")
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.PACKAGE, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit, marked when guarded sources differ from it
        assert info["git_commit"].startswith(head.stdout.strip()[:12])
