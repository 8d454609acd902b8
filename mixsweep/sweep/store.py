"""The result store: one folder per stage key, a Parquet table of final metrics over all keys.

Layout under the spec's `storage`:
    stages/<key>/result.json      final metrics + grid values; written last and atomically: it IS "done"
    stages/<key>/failed.json      a deterministic failure or a divergence, with its error (retried only when asked)
    stages/<key>/metrics.jsonl    per-epoch history
    stages/<key>/pictures/*.png   reconstructions / segmentations
    stages/<key>/checkpoint/      pre-training only: the weights every child fine-tune starts from
    mixtures/<key>.parquet        the exact images of a pre-training stage
    train/<key>/                  Ray Train's run folder (checkpoints to resume an interrupted stage)
    results.parquet               one row per key, rebuilt from stages/*/result.json
    driver.lock                   held (flock) by the one `mixsweep run` that trains into this store
The store is shared between sweeps: a stage is known by its content key, not by the sweep that ran it.

A result file that cannot be read (a torn copy, a disk error, a hand edit), or whose key is not its folder's,
counts as not done: readers warn and skip it; `mixsweep run` moves it aside (result.json.corrupt) and trains
the stage again. Nothing here ever modifies a readable result.

A mirror (a URI such as s3://bucket/prefix, or a path) gets a copy of every stage folder as it finishes,
of each W&B offline run, and of results.parquet. A store that lost its disk pulls finished stages back
from it before planning, so none of them runs again; `mixsweep sync` pulls the offline runs it lacks.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pyarrow as pa

from mixsweep.errors import MixsweepError
from mixsweep.files import atomic_path, check_writable, copy_atomic, read_jsonl, write_text_atomic
from mixsweep.tables import write_table

RESULT = "result.json"
FAILED = "failed.json"
CORRUPT = ".corrupt"  # suffix of a result file moved aside because it could not be read
STOPPED = ("failed", "diverged")
LOCK = "driver.lock"  # statuses of failed.json: not done, not retried unless asked


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def _describe_holder(path: Path) -> str:
    """'`mixsweep run paper.yaml` (pid 123 on host-a, since 2026-12-05T10:00:00+00:00)' from a lock file."""
    try:
        h = json.loads(path.read_text())
        return f"`{h['command']}` (pid {h['pid']} on {h['host']}, since {h['started_at']})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is between taking the lock and writing it
        return "another mixsweep run"


def read_record(path: Path, key: str) -> tuple[dict | None, str | None]:
    """A stage's result.json / failed.json and why it cannot be trusted: (record, None), (None, problem), or
    (None, None) when there is none."""
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError covers JSON and UTF-8 errors
        return None, f"unreadable ({e})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if record.get("key") != key:
        return None, f"its key {str(record.get('key'))[:40]!r} is not its folder's"
    return record, None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


class Store:
    def __init__(self, root: Path | str, mirror: str | None = None):
        self.root = Path(root).expanduser().resolve()  # Ray wants absolute storage paths
        self.mirror = mirror

    def check_writable(self) -> None:
        check_writable(self.root, "storage")

    def writable(self) -> bool:
        """Whether files can be written here (a read-only mount, another user's copy: no)."""
        try:
            check_writable(self.root, "storage")
        except MixsweepError:
            return False
        return True

    @contextlib.contextmanager
    def driver_lock(self, wait: bool = False, poll_s: float = 2.0,
                    on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold driver.lock while training into this store: a second `mixsweep run` refuses in one line naming
        the holder, or with `wait` waits for it. The kernel drops the lock when its holder dies (an NFS server
        when the client's lease ends), so a dead driver's lock is taken over with nothing to clean up; the
        holder written in the file is only there to be named."""
        self.check_writable()
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _describe_holder(path)
                    if not wait:
                        raise MixsweepError(f"{self.root}: in use by {holder}; wait for it to end (mixsweep run "
                                            "--wait), or give this spec another storage") from None
                    if not told and on_wait is not None:
                        on_wait(f"{self.root} is in use by {holder}; waiting for it to end")
                        told = True
                    time.sleep(poll_s)
            holder = {"host": socket.gethostname(), "pid": os.getpid(),
                      "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            os.fsync(fd)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    def stage_dir(self, key: str) -> Path:
        return self.root / "stages" / key

    def train_dir(self) -> Path:
        return self.root / "train"

    def mixture_path(self, key: str) -> Path:
        return self.root / "mixtures" / f"{key}.parquet"

    def checkpoint(self, key: str) -> Path:
        return self.stage_dir(key) / "checkpoint" / "state.pt"

    def is_done(self, key: str) -> bool:
        return self.result(key) is not None

    def result(self, key: str) -> dict | None:
        """The stage's result.json; None when there is none or it is unreadable (with a warning)."""
        return self._record(key, RESULT)

    def failure(self, key: str) -> dict | None:
        return self._record(key, FAILED)

    def _record(self, key: str, name: str) -> dict | None:
        path = self.stage_dir(key) / name
        record, problem = read_record(path, key)
        if problem is None:
            return record
        warnings.warn(f"{path}: {problem}; the stage counts as not done (`mixsweep run` moves the file aside "
                      f"as {name}{CORRUPT} and trains it again)", stacklevel=3)
        return None

    def set_aside_unreadable(self) -> list[Path]:
        """`run` only: move every unreadable result.json / failed.json aside (name + .corrupt, kept for a look),
        so its stage is planned as pending. Returns the files moved."""
        moved = []
        stages = self.root / "stages"
        for folder in sorted(stages.iterdir()) if stages.is_dir() else []:
            for name in (RESULT, FAILED):
                path = folder / name
                _, problem = read_record(path, folder.name)
                if problem is not None:
                    path.replace(path.with_name(name + CORRUPT))
                    warnings.warn(f"{path}: {problem}; moved aside as {name}{CORRUPT}, the stage runs again",
                                  stacklevel=2)
                    moved.append(path)
        return moved

    def checkpoint_problem(self, key: str) -> str | None:
        """Why a done pre-training's checkpoint cannot be trusted (missing, or not the bytes result.json
        recorded), or None. Results from before the digest was recorded are checked by loading."""
        path, result = self.checkpoint(key), self.result(key) or {}
        if not path.is_file():
            return f"{path}: missing"
        if result.get("checkpoint_sha256"):
            size = path.stat().st_size
            if size != result.get("checkpoint_bytes", size) or file_sha256(path) != result["checkpoint_sha256"]:
                return f"{path}: not the file result.json recorded ({size} bytes, sha256 differs)"
            return None
        from mixsweep.checkpoint import read_checkpoint

        try:
            read_checkpoint(path)
        except Exception as e:  # any reason it cannot be read is a reason to train it again
            return f"{path}: unreadable ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
        return None

    def reopen(self, key: str, why: str, children: list[str] = ()) -> None:
        """`run` only: a done stage whose output cannot be used any more becomes pending again. Its result.json
        is kept beside as result.json.corrupt; `children` that failed (on its output) lose their failed.json
        (kept as failed.json.old) and run again after it."""
        path = self.stage_dir(key) / RESULT
        if path.is_file():
            path.replace(path.with_name(RESULT + CORRUPT))
        for child in children:
            failed = self.stage_dir(child) / FAILED
            if (self.failure(child) or {}).get("status") == "failed":
                failed.replace(failed.with_name(FAILED + ".old"))
        warnings.warn(f"stage {key}: {why}; it runs again", stacklevel=2)

    def history(self, key: str) -> list[dict]:
        return read_jsonl(self.stage_dir(key) / "metrics.jsonl")

    def pictures(self, key: str) -> list[Path]:
        return sorted((self.stage_dir(key) / "pictures").glob("*.png"))

    def record_result(self, key: str, row: dict, run_dir: Path, checkpoint: Path | None) -> dict:
        """Copy a finished stage's artifacts in, then mark it done (result.json last)."""
        folder = self.stage_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copy2(run_dir / "metrics.jsonl", folder / "metrics.jsonl")
        if (run_dir / "pictures").is_dir():
            shutil.copytree(run_dir / "pictures", folder / "pictures", dirs_exist_ok=True)
        row = {**row, "status": "done", "error": ""}
        if checkpoint is not None:
            copy_atomic(Path(checkpoint) / "state.pt" if Path(checkpoint).is_dir() else checkpoint, self.checkpoint(key))
            # What a child checks before it starts from this checkpoint: a torn copy is caught, not trained on.
            row["checkpoint_bytes"] = self.checkpoint(key).stat().st_size
            row["checkpoint_sha256"] = file_sha256(self.checkpoint(key))
        (folder / FAILED).unlink(missing_ok=True)
        _write_json_atomic(folder / RESULT, row)
        return row

    def record_failure(self, key: str, row: dict, error: str, status: str = "failed") -> None:
        """failed.json: `status` failed (an error) or diverged (training went non-finite)."""
        assert status in STOPPED, status
        folder = self.stage_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(folder / FAILED, {**row, "status": status, "error": error})

    def rows(self) -> list[dict]:
        out = []
        stages = self.root / "stages"
        for folder in sorted(stages.iterdir()) if stages.is_dir() else []:
            record = self.result(folder.name) or self.failure(folder.name)
            if record is not None:
                out.append(record)
        return out

    def results_frame(self, keys: list[str] | None = None) -> pd.DataFrame:
        rows = self.rows()
        if keys is not None:
            wanted = set(keys)
            rows = [r for r in rows if r["key"] in wanted]
        return pd.DataFrame(rows)

    def write_results(self, frame: pd.DataFrame | None = None, path: Path | None = None) -> Path:
        frame = self.results_frame() if frame is None else frame
        return write_table(pa.Table.from_pandas(frame, preserve_index=False), path or self.root / "results.parquet")

    # --- the mirror ---------------------------------------------------------------------------------

    def _remote(self):
        import pyarrow.fs as pafs

        uri = self.mirror if "://" in self.mirror else str(Path(self.mirror).expanduser().resolve())
        try:
            fs, base = pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as e:
            raise MixsweepError(f"mirror: {self.mirror}: {str(e).splitlines()[0]}") from None
        return fs, base.rstrip("/")

    def push(self, local: Path, rel: str) -> None:
        """Copy a file or folder to <mirror>/<rel>; any result.json goes last, so a mirrored result.json
        always comes with the rest of its stage."""
        if not self.mirror or not local.exists():
            return
        fs, base = self._remote()
        files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
        files.sort(key=lambda p: (p.name == RESULT, str(p)))
        for f in files:
            dest = f"{base}/{rel}" if local.is_file() else f"{base}/{rel}/{f.relative_to(local).as_posix()}"
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with f.open("rb") as src, fs.open_output_stream(dest) as out:
                shutil.copyfileobj(src, out, 1 << 20)

    def push_stage(self, key: str) -> None:
        self.push(self.stage_dir(key), f"stages/{key}")

    def unmirrored(self) -> list[str]:
        """Finished stages here whose result.json the mirror lacks."""
        if not self.mirror:
            return []
        import pyarrow.fs as pafs

        fs, base = self._remote()
        done = [r["key"] for r in self.rows() if r.get("status") == "done"]
        infos = fs.get_file_info([f"{base}/stages/{k}/{RESULT}" for k in done])
        return [k for k, i in zip(done, infos) if i.type != pafs.FileType.File]

    def pull(self) -> list[str]:
        """Copy down every finished stage the mirror has and this store lacks; returns their keys."""
        pulled = []
        for fs, folder in self._mirror_folders("stages"):
            key = folder.base_name
            if self.is_done(key) or not any(i.base_name == RESULT for i in _files(fs, folder.path, recursive=False)):
                continue
            # result.json last, each file by rename: a stage interrupted here is not done, and is pulled again.
            for info in sorted(_files(fs, folder.path), key=lambda i: (i.base_name == RESULT, i.path)):
                with atomic_path(self.stage_dir(key) / info.path[len(folder.path) + 1:]) as tmp:
                    _copy_file(fs, info.path, tmp)
            pulled.append(key)
        return pulled

    def pull_folders(self, rel: str, prefix: str = "") -> list[str]:
        """Copy down each folder <mirror>/<rel>/<name> (name starting with `prefix`) this store lacks; returns
        their names. Each lands under a temporary name first, so a half-copied folder never looks whole."""
        pulled = []
        for fs, folder in self._mirror_folders(rel):
            dest = self.root / rel / folder.base_name
            if not folder.base_name.startswith(prefix) or dest.exists():
                continue
            with atomic_path(dest) as tmp:
                tmp.mkdir()
                for info in _files(fs, folder.path):
                    _copy_file(fs, info.path, tmp / info.path[len(folder.path) + 1:])
            pulled.append(folder.base_name)
        return pulled

    def _mirror_folders(self, rel: str) -> list:
        """(filesystem, folder info) for each folder under <mirror>/<rel>, by name; none without a mirror."""
        if not self.mirror:
            return []
        import pyarrow.fs as pafs

        fs, base = self._remote()
        try:
            infos = fs.get_file_info(pafs.FileSelector(f"{base}/{rel}", allow_not_found=True))
        except OSError as e:
            raise MixsweepError(f"mirror: cannot list {self.mirror}/{rel} ({str(e).splitlines()[0]})") from None
        return [(fs, i) for i in sorted(infos, key=lambda i: i.base_name) if i.type == pafs.FileType.Directory]


def _files(fs, folder: str, recursive: bool = True) -> list:
    import pyarrow.fs as pafs

    return [i for i in fs.get_file_info(pafs.FileSelector(folder, recursive=recursive)) if i.type == pafs.FileType.File]


def _copy_file(fs, src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(src) as inp, dest.open("wb") as out:
        shutil.copyfileobj(inp, out, 1 << 20)
