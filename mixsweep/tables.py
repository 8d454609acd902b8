"""Parquet in and out: byte-deterministic, atomic writes and reads that check what they got."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mixsweep.errors import MixsweepError
from mixsweep.files import atomic_path


def write_table(table: pa.Table, out: Path | str) -> Path:
    """Write Parquet with fixed options (no timestamps, so equal tables give equal bytes), atomically."""
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp, compression="zstd", use_dictionary=True, write_statistics=True)
    except OSError as e:
        raise MixsweepError(f"{out}: cannot write ({e.strerror or e})") from None
    return out


def read_table(path: Path | str, required: tuple[str, ...], what: str, hint: str = "") -> pa.Table:
    """Read a Parquet file, checking it exists and has the `required` columns; `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise MixsweepError(f"{path}: {what} not found{f' ({hint})' if hint else ''}")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise MixsweepError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise MixsweepError(f"{path}: not a {what} (missing columns {', '.join(missing)})")
    return table


def table_metadata(table: pa.Table) -> dict[str, str]:
    """The `mixsweep.*` schema metadata of a table, keys without the prefix."""
    meta = table.schema.metadata or {}
    return {k.decode()[len("mixsweep."):]: v.decode() for k, v in meta.items() if k.startswith(b"mixsweep.")}


def columns_digest(table: pa.Table, columns: list[str]) -> str:
    """Hash of the values of some columns, independent of file encoding and schema metadata."""
    h = hashlib.sha256()
    for name in columns:
        h.update(name.encode())
        h.update(repr(table.column(name).to_pylist()).encode())
    return h.hexdigest()[:16]
