"""A stage's W&B run, logged live by rank 0 while the stage trains.

One run id per stage key, opened with resume="allow": a restarted stage (worker kill, driver kill, Tune retry)
continues the same run. Each epoch is logged once, stepped by epoch: before logging, the run's earlier offline
files (and online, the server's step) tell which epochs W&B already holds; those are not logged again, and
epochs that metrics.jsonl holds but W&B lacks (lost in a kill) are logged first. metrics.jsonl stays the source
of truth.

W&B never stops or slows training: wandb.init, every log call and finish run on one background thread; the
loop only puts rows on a queue. Any W&B failure is one TrackingWarning, and the stage goes on.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Callable

from mixsweep import tracking
from mixsweep.files import check_writable

_STOP = object()


class LiveRun:
    """Logs one stage: `wrap_report` feeds it every epoch; `log_outputs` adds artifacts; `close` finishes it."""

    def __init__(self, settings, run_dir: Path, backlog: list[dict]):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.backlog = backlog  # metrics.jsonl as the attempt starts: epochs up to the checkpoint resumed from
        self.folder: Path | None = None
        self._queue: queue.Queue = queue.Queue()
        # An earlier attempt's pictures are not logged again, unless this attempt rewrites them (a crash after
        # the last epoch's pictures were saved, before it was reported).
        self._pictures = self._picture_files()
        self._thread = threading.Thread(target=self._work, name=f"wandb-{settings.run_id}", daemon=True)
        self._closed = False
        self._thread.start()

    # --- called by the training side: never blocks on W&B ----------------------------------------------

    def wrap_report(self, report: Callable[[dict, Path | None, bool], None]
                    ) -> Callable[[dict, Path | None, bool], None]:
        def live_report(metrics: dict, checkpoint: Path | None, final: bool) -> None:
            report(metrics, checkpoint, final)  # metrics.jsonl and the checkpoint first: they are the record
            new = sorted(self._picture_files() - self._pictures)
            self._pictures.update(new)
            self._queue.put(("log", (int(metrics["epoch"]), dict(metrics), [path for path, _ in new])))

        return live_report

    def log_outputs(self, artifacts: list[dict]) -> None:
        """Reference artifacts to log: dicts with name, type, reference, aliases and metadata."""
        self._queue.put(("outputs", list(artifacts)))

    def close(self, summary: dict | None = None, error: str | None = None) -> Path | None:
        """Finish the run (exit code 1 with `error` in the summary if given); returns its offline folder."""
        if not self._closed:
            self._closed = True
            self._queue.put(("finish", (dict(summary or {}), error)))
            self._queue.put(_STOP)
        # init and finish are each bounded by wandb itself; this bounds the whole in case it hangs anyway
        self._thread.join(timeout=12.0 * self.settings.timeout_s)
        if self._thread.is_alive():
            tracking.warn(f"W&B: stage run {self.settings.run_id} did not finish in time; the stage goes on")
        return self.folder

    # --- the W&B thread ------------------------------------------------------------------------------

    def _picture_files(self) -> set[tuple[Path, int]]:
        folder = self.run_dir / "pictures"
        return {(p, p.stat().st_mtime_ns) for p in folder.glob("*.png")} if folder.is_dir() else set()

    def _tracker(self) -> tracking.Tracker:
        return tracking.Tracker.of(self.settings, self.settings.root)

    def _open(self) -> tuple[Any, Any, set[int]]:
        s = self.settings
        tracker = self._tracker()
        mode = tracking.resolve_mode(tracker.mode)
        if mode == "disabled":  # (before importing wandb: a host may train without it installed)
            return None, None, set()
        import wandb

        check_writable(tracker.root / "wandb", "W&B folder")  # else wandb quietly falls back to a temp dir
        earlier = tracking.run_folders(tracker.root, s.run_id)
        run = tracking.start_run(wandb, tracker, mode, f"stage {s.run_id}", id=s.run_id, name=s.name, group=s.group,
                              job_type=s.job_type, tags=list(s.tags), config=tracking.plain_values(s.config),
                              resume="allow")
        self.folder = Path(run.dir).parent
        logged: set[int] = set()
        for folder in earlier:
            if folder != self.folder:
                logged |= {int(r["_step"]) for r in tracking.read_offline_history(folder) if "_step" in r}
        if not run.offline:
            logged |= set(range(int(run.starting_step)))  # the server ignores steps below its own
            tracking.declare_inputs(run, wandb, tracking.artifact_inputs(s.config))
        for row in self.backlog:
            if "epoch" in row and int(row["epoch"]) not in logged:
                run.log(tracking.plain_values(row), step=int(row["epoch"]), commit=True)
                logged.add(int(row["epoch"]))
        return run, wandb, logged

    def _work(self) -> None:
        what = f"stage {self.settings.run_id}"
        run, wandb, logged = None, None, set()
        try:
            run, wandb, logged = self._open()
        except Exception as e:
            tracking.warn(f"W&B: {what} not logged live: {tracking.brief_error(e)}")
        failed = False
        while (item := self._queue.get()) is not _STOP:
            if run is None or failed:
                continue
            kind, payload = item
            try:
                if kind == "log":
                    step, row, pictures = payload
                    if step in logged:
                        continue
                    images = tracking.wandb_images(wandb, pictures, "pictures", what)
                    # commit: wandb would hold the row until the next step's, a whole epoch late
                    run.log({**tracking.plain_values(row), **images}, step=step, commit=True)
                    logged.add(step)
                elif kind == "outputs":
                    tracking.log_artifacts(run, wandb, payload)
                elif kind == "finish":
                    summary, error = payload
                    run.summary.update(tracking.plain_values(summary))
                    if error:
                        run.summary["error"] = error[:1000]
                    run.finish(exit_code=1 if error else 0)
                    run = None
            except Exception as e:  # one warning, then this run logs nothing more
                failed = True
                tracking.warn(f"W&B: {what}: logging stopped: {tracking.brief_error(e)}")
        if run is not None:
            try:
                run.finish()
            except Exception as e:
                tracking.warn(f"W&B: {what}: finish failed: {tracking.brief_error(e)}")


def open_live_run(job, world) -> LiveRun | None:
    """The stage's live run on rank 0 when the job names one (job.tracking), else None."""
    from mixsweep.train.loop import read_metrics

    if getattr(job, "tracking", None) is None or not world.is_main:
        return None
    return LiveRun(job.tracking, world.run_dir, read_metrics(world.run_dir))
