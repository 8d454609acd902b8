"""Writing files so that a reader never sees half of one: the one home for atomic writes and writability probes.

Every write goes to a temporary name of its own (process id and a random suffix), is flushed to disk (fsync),
then one rename puts it in place and the folder's entry is flushed too. Two writers of the same path each
rename a whole file of their own; a kill or a power cut leaves at most a hidden `.name.<pid>-<hex>.tmp` beside
the file, never a torn file under its real name.

Appended logs (metrics.jsonl) cannot be renamed whole; `read_jsonl` drops a torn last line instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
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
        publish(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def publish(tmp: Path | str, path: Path | str) -> Path:
    """Flush `tmp` (a file or a folder written beside `path`, on the same file system) and rename it to `path`
    in one step, replacing what was there."""
    tmp, path = Path(tmp), Path(path)
    _fsync_tree(tmp)
    if tmp.is_dir() and path.is_dir():  # a folder cannot be renamed over a non-empty one
        old = temp_name(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file and folder under a folder, to disk: a rename must never publish data
    that a crash could still lose."""
    if path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                _fsync_file(Path(folder) / name)
            _fsync_dir(Path(folder))
    elif path.is_file():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a file system without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network file systems refuse fsync on a folder; the data itself was flushed
    finally:
        os.close(fd)


def read_jsonl(path: Path | str) -> list[dict]:
    """The records of a JSON-lines log. A torn last line (a kill in the middle of an append) is dropped with
    a warning naming the file; a bad line before the last is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            if all(not rest.strip() for rest in lines[number:]):
                warnings.warn(f"{path}: line {number} is torn (an interrupted write); dropped", stacklevel=2)
                break
            raise MixsweepError(f"{path}: line {number} is not a JSON record ({e})") from None
        records.append(record)
    return records


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


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host: the owner of a temporary name or a claim left behind is gone
    only if not."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


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
