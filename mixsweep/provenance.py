"""What made a result: the code version in every stage key, and the versions and device each stage trained with.

A finished key never runs again, so a change to the code that decides results must change the keys, or old
results are silently reused. CODE_VERSION is that part of every key. It is bumped by hand, and a forgotten
bump is caught by the test suite: `code_version.lock` (beside this file) holds CODE_VERSION and a hash of
each result-deciding source file, and `tests/test_provenance.py` fails as soon as one of them differs. The
way out is a decision, made once per change:

    python -m mixsweep.provenance lock            # after bumping CODE_VERSION: every key changes
    python -m mixsweep.provenance lock --neutral  # the change cannot change a result (say why in the commit)

Synthetic worlds are guarded the same way by mixsweep.synth's GENERATOR_VERSION.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

# Part of every stage key. Bump when a change to the code can change a result: every key changes, all reruns.
# 2: fine-tune recipe.schedule (fixed_steps by default), scratch baseline without layer decay, padded eval.
CODE_VERSION = "3"

PACKAGE = Path(__file__).resolve().parent
LOCK_FILE = PACKAGE / "code_version.lock"

# The sources whose change can change a stage's result, per guarded version. Orchestration (Ray, Tune, W&B,
# the store, the report) is left out: it moves results around, it does not make them.
GUARDED = {
    "code": ("models/*.py", "data/*.py", "checkpoint.py", "hashing.py", "sweep/plan.py", "train/config.py",
             "train/finetune.py", "train/loop.py", "train/metrics.py", "train/pretrain.py", "train/recipes.py"),
    "synth": ("synth/*.py",),
}


def guarded_versions() -> dict[str, str]:
    from mixsweep.synth.output import GENERATOR_VERSION

    return {"code": CODE_VERSION, "synth": str(GENERATOR_VERSION)}


def source_hashes(group: str, root: Path = PACKAGE) -> dict[str, str]:
    """sha256 of each guarded file of `group`, by its path under the package (line endings normalised)."""
    files = sorted({p for pattern in GUARDED[group] for p in root.glob(pattern) if p.is_file()})
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
            for p in files}


def source_digest(root: Path = PACKAGE) -> str:
    """One hash of every guarded file: recorded with each result, to tell two builds of one version apart."""
    h = hashlib.sha256()
    for group in sorted(GUARDED):
        for name, digest in source_hashes(group, root).items():
            h.update(f"{name}:{digest}\n".encode())
    return h.hexdigest()[:16]


def lock_problems(root: Path = PACKAGE, lock_file: Path | None = None,
                  versions: dict[str, str] | None = None) -> list[str]:
    """Why the lock does not match the sources and versions, one line each; empty when it does."""
    lock_file = lock_file or root / LOCK_FILE.name
    versions = versions or guarded_versions()
    if not lock_file.is_file():
        return [f"{lock_file}: missing; run `python -m mixsweep.provenance lock`"]
    lock = json.loads(lock_file.read_text())
    problems = []
    for group, version in versions.items():
        held = lock.get(group, {})
        now = source_hashes(group, root)
        changed = sorted(name for name in set(now) | set(held.get("files", {}))
                         if now.get(name) != held.get("files", {}).get(name))
        what = "CODE_VERSION" if group == "code" else "GENERATOR_VERSION"
        if held.get("version") != version:
            problems.append(f"{what} is {version} but {lock_file.name} was written for {held.get('version')}: "
                            "run `python -m mixsweep.provenance lock` to record the bump")
        elif changed:
            problems.append(
                f"{', '.join(changed)} changed since {what} {version} was locked, and a finished key is never run "
                f"again: bump {what} (every {group} key changes) and run `python -m mixsweep.provenance lock`, or, "
                f"if no result can change, run `python -m mixsweep.provenance lock --neutral` and say why in the commit")
    return problems


def write_lock(root: Path = PACKAGE, neutral: bool = False, lock_file: Path | None = None,
               versions: dict[str, str] | None = None) -> Path:
    """Record the versions and the guarded files' hashes. A change under an unbumped version needs `neutral`."""
    lock_file = lock_file or root / LOCK_FILE.name
    versions = versions or guarded_versions()
    old = json.loads(lock_file.read_text()) if lock_file.is_file() else {}
    for group, version in versions.items():
        held = old.get(group, {})
        if held and held.get("version") == version and held.get("files") != source_hashes(group, root) and not neutral:
            raise SystemExit(f"{group} sources changed but its version is still {version}: bump it, or pass "
                             "--neutral if no result can change")
    lock = {group: {"version": version, "files": source_hashes(group, root)} for group, version in versions.items()}
    lock_file.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return lock_file


# --- what a stage trained with -------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _static_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"mixsweep_version": _own_version(), "git_commit": _git_commit(),
            "code_version": CODE_VERSION, "source_digest": source_digest(),
            "python_version": platform.python_version(), "torch_version": installed("torch"),
            "ray_version": installed("ray"), "timm_version": installed("timm")}


def _own_version() -> str:
    """mixsweep.__version__, read from this package's file: on a cluster node whose working folder holds a
    `mixsweep/` checkout, `import mixsweep` can find that folder as a namespace package without it."""
    match = re.search(r'^__version__ = "([^"]+)"', (PACKAGE / "__init__.py").read_text(), re.M)
    return match.group(1) if match else "unknown"


def _git_commit() -> str | None:
    """The checkout's commit, with `+dirty` when guarded sources differ from it; None outside a git checkout
    (a wheel, a cluster node synced without .git, an install inside some other repository's ignored venv)."""
    try:
        run = functools.partial(subprocess.run, cwd=PACKAGE, capture_output=True, text=True, timeout=10)
        if run(["git", "ls-files", "--error-unmatch", Path(__file__).name]).returncode != 0:
            return None  # this file is not tracked there: the commit would describe other code
        head = run(["git", "rev-parse", "HEAD"])
        if head.returncode != 0:
            return None
        dirty = run(["git", "status", "--porcelain", "--", *GUARDED["code"], *GUARDED["synth"]]).stdout.strip()
        return head.stdout.strip()[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device) -> str:
    """`NVIDIA H200`, or `cpu (<processor>)`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()})"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_info(device) -> dict[str, str | None]:
    """The versions and the device one process trains with: what result.json records for its stage."""
    return {**_static_versions(), "device": device_name(device)}


RUNTIME_FIELDS = ("mixsweep_version", "git_commit", "code_version", "source_digest", "python_version",
                  "torch_version", "ray_version", "timm_version", "device")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mixsweep.provenance",
                                description="Check or write code_version.lock (see this module's docstring).")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 1 and say why if the lock does not match the sources")
    lock = sub.add_parser("lock", help="record the current versions and source hashes")
    lock.add_argument("--neutral", action="store_true",
                      help="the sources changed under an unbumped version and no result can change")
    args = p.parse_args(argv)
    if args.command == "check":
        problems = lock_problems()
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    print(f"wrote {write_lock(neutral=args.neutral)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
