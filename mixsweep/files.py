"""Writing files so that a reader never sees half of one: the one home for atomic writes and writability probes.

Every write goes to a temporary name of its own (process id and a random suffix), then one rename puts it
in place. Two writers of the same path each rename a whole file of their own; a kill leaves at most a
hidden `.name.<pid>-<hex>.tmp` beside the file, never a torn file under its real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from mixsweep.errors import MixsweepError


def temp_name(path: Path) -> Path:
    """A hidden sibling of `path` that no other writer uses."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a folder); on success it replaces `path` in one rename,
    on failure it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # a folder cannot be renamed over a non-empty one
            old = temp_name(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def copy_atomic(src: Path | str, dest: Path | str) -> Path:
    """Copy a file or a folder to `dest`, whole or not at all."""
    src = Path(src)
    with atomic_path(dest) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copy2(src, tmp)
    return Path(dest)


def check_writable(folder: Path | str, what: str) -> Path:
    """Create `folder` if needed and write and remove a probe file there; `what` names it in the one-line error
    (e.g. 'storage', 'run.storage')."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_name(folder / "write-test")
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MixsweepError(f"{what}: {folder} is not writable ({e.strerror or e})") from None
    return folder
