"""`mixsweep sync SPEC`: upload a spec's W&B offline runs with wandb's own `wandb sync`, then declare each
uploaded run's input artifacts online (an offline run cannot call `use_artifact`).

Idempotent on two markers in each run folder: `run-<id>.wandb.synced`, which wandb-core writes once it has
uploaded that transaction log (and which `wandb sync` itself skips on), and `.mixsweep-inputs-declared`, written
here once the run's inputs are declared (a JSON list of their names). A run's copy on the mirror gets the same
markers, so no copy is sent twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mixsweep import tracking
from mixsweep.sweep.store import Store

DECLARED = ".mixsweep-inputs-declared"


@dataclass
class OfflineRun:
    """One offline run folder (offline-run-<time>-<id>) to send, and the same run's other copies (the mirror)."""

    path: Path
    copies: list[Path] = field(default_factory=list)
    record: dict | None = None  # tracking.read_offline_run, once read
    remote: Store | None = None  # the store, when its mirror is a URI: markers are pushed there too

    @property
    def run_id(self) -> str:
        return (self.record or {}).get("run_id") or self.path.name.split("-", 3)[-1]

    @property
    def display_name(self) -> str:
        return (self.record or {}).get("name") or "-"

    def synced(self) -> bool:
        return any(is_synced(p) for p in (self.path, *self.copies))

    def declared(self) -> bool:
        return any((p / DECLARED).is_file() for p in (self.path, *self.copies))


def _folder_run_id(run_dir: Path) -> str:
    """offline-run-<date>_<time>-<id> -> <id>"""
    return run_dir.name.split("-", 3)[-1]


def is_synced(run_dir: Path) -> bool:
    """wandb's own test (wandb/cli/beta_sync.py `_is_synced`), for every transaction log of the folder."""
    logs = list(run_dir.glob("*.wandb"))
    return bool(logs) and all(log.with_suffix(".wandb.synced").exists() for log in logs)


def offline_runs(folders: list[Path]) -> list[OfflineRun]:
    """The offline run folders (offline-run-* holding a .wandb log) under `folders`, one entry per folder name:
    the first folder's copy is the one sent; the same name under a later folder (a mirror) is its copy."""
    runs: dict[str, OfflineRun] = {}
    for folder in folders:
        for run_dir in sorted(folder.glob("offline-run-*")) if folder.is_dir() else []:
            if not run_dir.is_dir() or run_dir.is_symlink() or not any(run_dir.glob("*.wandb")):
                continue
            if run_dir.name in runs:
                runs[run_dir.name].copies.append(run_dir)
            else:
                runs[run_dir.name] = OfflineRun(run_dir)
    return list(runs.values())


def local_mirror(mirror: str | None) -> Path | None:
    """The mirror's folder when it is a local path (or file://), else None."""
    if not mirror:
        return None
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve()
    return Path(urlsplit(mirror).path) if mirror.startswith("file://") else None


def wandb_folders(store: Store) -> tuple[list[Path], list[str]]:
    """The folders that hold the store's offline runs: <storage>/wandb, and <mirror>/wandb for a local mirror.
    A URI mirror's offline runs that the store lacks are first copied into <storage>/wandb (their names are
    returned)."""
    folders = [store.root / "wandb"]
    mirror = local_mirror(store.mirror)
    if mirror is not None:
        if mirror / "wandb" != folders[0]:
            folders.append(mirror / "wandb")
        return folders, []
    return folders, store.pull_folders("wandb", prefix="offline-run-") if store.mirror else []


def upload(runs: list[OfflineRun], timeout_s: float) -> tuple[list[OfflineRun], str]:
    """`wandb sync` on the runs' folders; returns the runs wandb marked as synced, and the tail of its output.

    Success is read from wandb's markers, not its exit status: `wandb sync` exits 0 when it could not even
    authenticate, and retries an unreachable server for minutes (hence the timeout).
    """
    cmd = [sys.executable, "-m", "wandb", "sync", *(str(r.path) for r in runs)]
    # syncing is online by definition; a leftover WANDB_MODE=offline must not get in the way
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(proc)  # its own session: wandb-core goes with it
        output = (proc.communicate()[0] or "") + f"\n(wandb sync stopped after {timeout_s:g} s)"
    return [r for r in runs if is_synced(r.path)], (output or "").strip()[-2000:]


def declare_pending(runs: list[OfflineRun], wandb: Any, tracker: tracking.Tracker,
                    say: Callable[[str], None] = print) -> tuple[list[OfflineRun], list[tuple[OfflineRun, str]]]:
    """Declare the inputs of each synced, not yet declared run (`tracking.declare_synced_inputs`, which starts
    nothing for a run without inputs), then mark it. Returns the runs that declared some inputs, and (run, why)
    for each W&B refused: those stay unmarked, so the next sync retries them."""
    declared, refused = [], []
    for run in runs:
        if not run.synced() or run.declared():
            continue
        try:
            if run.record is None:
                run.record = tracking.read_offline_run(run.path)
            names = tracking.declare_synced_inputs(wandb, tracker, run.record)
        except Exception as e:
            refused.append((run, tracking.brief_error(e)))
            continue
        _mark(run, DECLARED, json.dumps(names) + "\n")
        if names:
            declared.append(run)
            say(f"inputs declared  {run.run_id}  {', '.join(names)}")
    return declared, refused


def sync_store(store: Store, settings: dict, *, timeout_s: float = 1800.0, dry_run: bool = False,
               say: Callable[[str], None] = print, shout: Callable[[str], None] | None = None) -> int:
    """Upload the store's (and its mirror's) offline runs not yet synced, then declare their inputs.

    `settings`: the spec's wandb section (project, entity: used where a run's record has none). Prints one
    line per run sent and a total, or "nothing to sync". Returns the exit status: 0 done (or nothing to do),
    1 some run not uploaded or its inputs not declared, 2 no API key.
    """
    shout = shout or (lambda line: print(line, file=sys.stderr))
    folders, pulled = wandb_folders(store)
    if pulled:
        say(f"{len(pulled)} offline runs copied from the mirror {store.mirror} into {folders[0]}")
    runs = offline_runs(folders)
    if store.mirror and local_mirror(store.mirror) is None:
        for run in runs:
            run.remote = store
    to_send = [r for r in runs if not r.synced()]
    to_declare = [r for r in runs if r.synced() and not r.declared()]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each read is one `wandb leet` process
        list(pool.map(_read, to_send + to_declare))
    # An unfinished log would be marked synced and never sent again once finished. A log with no exit record that
    # a later attempt of the same run id superseded (a killed attempt) is final: it holds epochs only it has.
    newest = {}
    for r in runs:
        newest[_folder_run_id(r.path)] = max(newest.get(_folder_run_id(r.path), ""), r.path.name)
    superseded = [r for r in to_send + to_declare if r.path.name < newest[_folder_run_id(r.path)]]
    empty = [r for r in superseded if r.record is None or not r.record.get("run_id")]
    for run in empty:  # killed before wandb wrote anything: nothing to send
        say(f"skipped (a killed attempt's empty log)  {run.path}")
    to_send = [r for r in to_send if r not in empty]
    to_declare = [r for r in to_declare if r not in empty]
    later = [r for r in to_send + to_declare if r not in superseded
             and (r.record is None or r.record.get("exit_code") is None)]
    for run in later:
        say(f"left for later (still running, or unreadable: no exit record)  {run.path}")
    to_send = [r for r in to_send if r not in later]
    to_declare = [r for r in to_declare if r not in later]
    no_inputs = [r for r in to_declare if not tracking.artifact_inputs(r.record.get("config") or {})]
    to_declare = [r for r in to_declare if r not in no_inputs]
    if not dry_run:
        for run in no_inputs:  # done with, no server needed
            _mark(run, DECLARED, "[]\n")
    waiting = to_send + to_declare
    if not waiting:
        say("nothing to sync")
        return 0
    if dry_run:
        for run in to_send:
            say(f"would send  {run.run_id}  {run.display_name}  {run.path}")
        for run in to_declare:
            say(f"would declare inputs  {run.run_id}  {run.display_name}  {run.path}")
        say(f"{len(to_send)} offline runs to send, {len(to_declare)} more to declare inputs for")
        return 0
    if not tracking.api_key_configured():
        where = " and ".join(sorted({str(r.path.parent) for r in waiting}))
        shout(f"mixsweep sync: no W&B API key (set WANDB_API_KEY or run `wandb login`); "
              f"{len(waiting)} offline run{' waits' if len(waiting) == 1 else 's wait'} under {where}")
        return 2

    sent, output = upload(to_send, timeout_s) if to_send else ([], "")
    for run in sent:
        for marker in run.path.glob("*.wandb.synced"):
            _mark(run, marker.name, marker.read_text())
        say(f"sent  {run.run_id}  {run.display_name}  {run.path}")
    not_sent = [r for r in to_send if r not in sent]

    import wandb

    tracker = tracking.Tracker(project=settings.get("project") or "mixsweep", entity=settings.get("entity"),
                               mode="online", root=store.root)
    declared, refused = declare_pending(sent + to_declare, wandb, tracker, say)
    say(f"sent {len(sent)} of {len(to_send)} offline runs; inputs declared for {len(declared)} runs")
    for run in not_sent:
        shout(f"mixsweep sync: not uploaded: {run.path}")
    if not_sent:
        shout(f"mixsweep sync: wandb sync said: {' | '.join(output.splitlines()[-6:]) or '(nothing)'}")
    for run, why in refused:
        shout(f"mixsweep sync: inputs of {run.run_id} not declared ({why}); the next sync retries")
    return 1 if not_sent or refused else 0


# --- internals ---------------------------------------------------------------------------------------------


def _read(run: OfflineRun) -> None:
    try:
        run.record = tracking.read_offline_run(run.path)
    except Exception:
        run.record = None


def _mark(run: OfflineRun, name: str, text: str) -> None:
    """Write marker `name` into the run's folder and each copy of it (a URI mirror's copy too)."""
    for folder in (run.path, *run.copies):
        try:
            (folder / name).write_text(text)
        except OSError:
            pass  # a read-only copy: the marker in the first folder still counts
    if run.remote is not None:
        try:
            run.remote.push(run.path / name, f"wandb/{run.path.name}/{name}")
        except Exception:
            pass  # only costs a second upload, should the store ever be pulled back from there


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
