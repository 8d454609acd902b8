"""What a run's workers leave beside its metrics log: where each rank ran, on what, and how long rank 0's
training loop took. `workers/rank<r>.json` and `workers/loop.json` under the run's artifact folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from mixsweep.files import write_text_atomic


def record_placement(run_dir: Path, rank: int, device) -> None:
    """workers/rank<r>.json: this rank's node, host, process and device, and the versions it trains with (the
    latest attempt wins)."""
    import ray

    from mixsweep.provenance import runtime_info

    info = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "host": socket.gethostname(), **runtime_info(device)}
    write_text_atomic(Path(run_dir) / "workers" / f"rank{rank}.json", json.dumps(info))


def read_placement(run_dir: Path | str) -> list[dict]:
    folder = Path(run_dir) / "workers"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))] if folder.is_dir() else []


def write_loop_timing(run_dir: Path, seconds: float, started_at: float, finished_at: float,
                      diverged: str = "", parts: dict[str, float] | None = None) -> None:
    """workers/loop.json: rank 0's time inside `fit` (and its parts, World.timing), and when it trained (epoch
    seconds), in the attempt that finished (a killed one writes none); `diverged` the message when training
    went non-finite."""
    write_text_atomic(Path(run_dir) / "workers" / "loop.json",
                      json.dumps({"loop_s": seconds, "started_at": started_at, "finished_at": finished_at,
                                  "diverged": diverged, "parts": dict(parts or {})}))


def read_loop_timing(run_dir: Path | str) -> dict:
    """{"loop_s", "started_at", "finished_at", "diverged", "parts"} of the attempt that finished; {} when none did."""
    path = Path(run_dir) / "workers" / "loop.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def clear_loop_timing(run_dir: Path | str) -> None:
    """Before a launch: the timing read afterwards is this launch's, not an earlier one's."""
    (Path(run_dir) / "workers" / "loop.json").unlink(missing_ok=True)
