"""Where a job's checkpoints live (Ray's storage_path: a local folder or a URI) and how they are found, saved
and resumed from. A run's checkpoints are `<storage>/<name>/checkpoint_<time>` folders, Ray Train's naming,
whether Ray Train or a Tune trial wrote them, so names sort by age."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from mixsweep.files import check_writable


def storage_root(job) -> str:
    """Absolute local path (or URI) for Ray's storage_path; checks a local one is writable now."""
    storage = job.run.storage
    if "://" in storage:
        return storage
    return str(check_writable(Path(storage).expanduser().resolve(), "run.storage"))


def artifact_dir(job, storage: str) -> Path:
    """Pictures, the metrics log and worker placement: run.artifacts, else beside Ray's checkpoints for
    local storage, else ./runs/<name>."""
    if job.run.artifacts:
        return Path(job.run.artifacts).expanduser().resolve()
    return Path(storage) / job.run.name if "://" not in storage else Path("runs").resolve() / job.run.name


def _filesystem(storage: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(storage if "://" in storage else str(Path(storage).resolve()))


def _checkpoint_folders(fs, base: str) -> list[str]:
    """The run's checkpoint folders, oldest first."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))


def resume_checkpoint(storage: str, name: str, registered, rank: int) -> Path | None:
    """A local copy of the checkpoint to resume from: Ray's registered one, or a newer complete one in the
    run folder. A driver killed between a worker's report and the controller's bookkeeping leaves a
    checkpoint Ray never registered; without this, the rerun would start the stage over."""
    import pyarrow.fs as pafs
    import ray.train

    from mixsweep.errors import MixsweepError
    from mixsweep.train.loop import load_state

    fs, root = _filesystem(storage)
    after = Path(registered.path).name if registered is not None else ""
    newer = [p for p in reversed(_checkpoint_folders(fs, f"{root}/{name}")) if Path(p).name > after]
    candidates = [ray.train.Checkpoint(p, filesystem=fs) for p in newer] + ([registered] if registered else [])
    for checkpoint in candidates:
        if isinstance(fs, pafs.LocalFileSystem):
            local = Path(checkpoint.path)  # read in place: only read, and no copy left behind in /tmp
        else:  # a local copy per rank: ranks on one node would otherwise share (and race on) one default folder
            local = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"mixsweep-resume-r{rank}-")))
        if checkpoint is registered:
            return local
        try:
            load_state(local)  # an upload cut short by the kill is skipped
            return local
        except MixsweepError:
            continue
    return None


def local_run_folder(storage: str, name: str) -> Path | None:
    """storage/name when the storage is a local folder (checkpoints can be staged there), else None."""
    return None if "://" in storage else Path(storage).resolve() / name


def save_checkpoint_to_storage(storage: str, name: str, folder: Path, keep: int = 2) -> str:
    """Put a checkpoint folder at storage/name/checkpoint_<time>; keep the newest `keep`. Local storage gets it
    whole or not at all (renamed when it was staged there, else copied); on object storage a cut-short upload
    fails `load_state` and is skipped on resume."""
    import pyarrow.fs as pafs

    from mixsweep.train.loop import place_checkpoint

    fs, root = _filesystem(storage)
    base = f"{root}/{name}"
    dest = f"{base}/checkpoint_{datetime.datetime.now().strftime('%Y-%m-%d_%H-%M-%S.%f')}"
    if isinstance(fs, pafs.LocalFileSystem):
        place_checkpoint(Path(folder), Path(dest))
    else:
        fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(folder), dest, destination_filesystem=fs)
    for old in _checkpoint_folders(fs, base)[:-keep]:
        fs.delete_dir(old)
    return dest


def keep_only(storage: str, name: str, checkpoint: str) -> None:
    """Delete the run's checkpoint folders other than `checkpoint` (a finished run's final one)."""
    fs, root = _filesystem(storage)
    keep = Path(checkpoint).name
    for old in _checkpoint_folders(fs, f"{root}/{name}"):
        if Path(old).name != keep:
            fs.delete_dir(old)


def newest_checkpoint_uri(storage: str, name: str) -> str | None:
    """Where the newest checkpoint of run `name` lives, as a URI (file:// for local storage): what a W&B
    reference artifact points to."""
    fs, root = _filesystem(storage)
    names = _checkpoint_folders(fs, f"{root}/{name}")
    if not names:
        return None
    return Path(names[-1]).as_uri() if "://" not in storage else f"{storage.split('://', 1)[0]}://{names[-1]}"
