"""The result store: one folder per stage key, a Parquet table of final metrics over all keys.

Layout under the spec's `storage`:
    stages/<key>/result.json      final metrics + grid values; written last and atomically: it IS "done"
    stages/<key>/failed.json      a deterministic failure, with its error (retried only when asked)
    stages/<key>/metrics.jsonl    per-epoch history
    stages/<key>/pictures/*.png   reconstructions / segmentations
    stages/<key>/checkpoint/      pre-training only: the weights every child fine-tune starts from
    mixtures/<key>.parquet        the exact images of a pre-training stage
    train/<key>/                  Ray Train's run folder (checkpoints to resume an interrupted stage)
    results.parquet               one row per key, rebuilt from stages/*/result.json
The store is shared between sweeps: a stage is known by its content key, not by the sweep that ran it.

A mirror (a URI such as s3://bucket/prefix, or a path) gets a copy of every stage folder as it finishes,
of each W&B offline run, and of results.parquet. A store that lost its disk pulls finished stages back
from it before planning, so none of them runs again; `mixsweep sync` pulls the offline runs it lacks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa

from mixsweep.errors import MixsweepError
from mixsweep.files import atomic_path, check_writable, copy_atomic, write_text_atomic
from mixsweep.tables import write_table

RESULT = "result.json"
FAILED = "failed.json"


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


class Store:
    def __init__(self, root: Path | str, mirror: str | None = None):
        self.root = Path(root).expanduser().resolve()  # Ray wants absolute storage paths
        self.mirror = mirror

    def check_writable(self) -> None:
        check_writable(self.root, "storage")

    def stage_dir(self, key: str) -> Path:
        return self.root / "stages" / key

    def train_dir(self) -> Path:
        return self.root / "train"

    def mixture_path(self, key: str) -> Path:
        return self.root / "mixtures" / f"{key}.parquet"

    def checkpoint(self, key: str) -> Path:
        return self.stage_dir(key) / "checkpoint" / "state.pt"

    def is_done(self, key: str) -> bool:
        return (self.stage_dir(key) / RESULT).is_file()

    def result(self, key: str) -> dict | None:
        path = self.stage_dir(key) / RESULT
        return json.loads(path.read_text()) if path.is_file() else None

    def failure(self, key: str) -> dict | None:
        path = self.stage_dir(key) / FAILED
        return json.loads(path.read_text()) if path.is_file() else None

    def history(self, key: str) -> list[dict]:
        path = self.stage_dir(key) / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

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
        if checkpoint is not None:
            copy_atomic(Path(checkpoint) / "state.pt" if Path(checkpoint).is_dir() else checkpoint, self.checkpoint(key))
        (folder / FAILED).unlink(missing_ok=True)
        row = {**row, "status": "done", "error": ""}
        _write_json_atomic(folder / RESULT, row)
        return row

    def record_failure(self, key: str, row: dict, error: str) -> None:
        folder = self.stage_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(folder / FAILED, {**row, "status": "failed", "error": error})

    def rows(self) -> list[dict]:
        out = []
        stages = self.root / "stages"
        for folder in sorted(stages.iterdir()) if stages.is_dir() else []:
            for name in (RESULT, FAILED):
                if (folder / name).is_file():
                    out.append(json.loads((folder / name).read_text()))
                    break
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
