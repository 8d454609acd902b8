"""W&B tracking: one run per stage (plus one per report), as an observer.

Nothing here may stop training: every failure to log becomes one `TrackingWarning` and the call returns None.
The API key is only ever read by wandb itself (from WANDB_API_KEY or netrc); we never pass, store or print it.

Modes: "auto" (online when a key is configured, else offline), "online", "offline", "disabled". Offline runs land in
<root>/wandb/offline-run-*/ and upload later with `sync_command(root)`. An online run whose server check or start
fails is logged offline instead, within `timeout_s`.
"""

from __future__ import annotations

import hashlib
import json
import netrc
import os
import re
import shlex
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field

from mixsweep.envvars import environ
from mixsweep.files import check_writable
from mixsweep.train.config import WandbSettings

if TYPE_CHECKING:
    import pandas as pd

MODES = ("auto", "online", "offline", "disabled")

# Set only around wandb.init: the process environment is shared with training code.
_ENV_LOCK = threading.Lock()
# Per process and credentials: the online check's outcome (None = fine), so a dead server costs one timeout.
_ONLINE_PROBLEM: dict[str, str | None] = {}


class TrackingWarning(UserWarning):
    """W&B could not log something; training is unaffected."""


class Tracker(WandbSettings):
    """Where and how to log: the W&B settings, and the store root that holds offline runs (root/wandb)."""

    root: Path = Field(default_factory=Path.cwd)

    @classmethod
    def of(cls, settings: WandbSettings, root: Path | str) -> Tracker:
        """A tracker for `settings` (a spec's, or a stage's run settings) writing offline runs under `root`."""
        return cls(**settings.model_dump(include=set(WandbSettings.model_fields)), root=Path(root))


def resolve_mode(mode: str) -> str:
    """The mode to use: explicit modes pass through; "auto" is online when an API key is configured, else offline."""
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    # A user's WANDB_MODE=offline/disabled is the usual W&B switch; honour it. (WANDB_MODE=online without a
    # key would make wandb prompt for one, so it does not force online.)
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("offline", "dryrun", "disabled"):
        return "disabled" if env_mode == "disabled" else "offline"
    return "online" if api_key_configured() else "offline"


def api_key_configured() -> bool:
    """True when WANDB_API_KEY is set or netrc has an entry for the W&B host; the key is never read out."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    hosts = {"api.wandb.ai"}
    try:
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL  # moved between wandb versions; the fallback covers it

        hosts.add(urlsplit(DEFAULT_BASE_URL).netloc)
    except Exception:
        pass
    if base := os.environ.get("WANDB_BASE_URL"):
        hosts.add(urlsplit(base).netloc)
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entries = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    return any((auth := entries.authenticators(h)) and auth[2] for h in hosts if h)


def run_id(key: str) -> str:
    """A stable W&B run id for a key: the key itself when it is a valid id, else a slug plus a hash."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return key
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-")[:40]
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}".lstrip("-")


def sync_command(root: Path | str) -> str:
    """The shell line that uploads the offline runs under `root`."""
    return f"wandb sync {shlex.quote(str(Path(root) / 'wandb'))}/offline-run-*"


def log_report(tracker: Tracker, *, group: str, table: pd.DataFrame, plots: list[Path], name: str = "report",
               effects: list[dict] | None = None, sentence: str | None = None,
               curves: dict[str, pd.DataFrame] | None = None) -> Path | None:
    """Log a sweep's report as one run (job_type "report"): the results table, the plots as images, each of
    `curves` (metric -> `analyze.curve_lines` frame) as a native W&B line plot under `curve/<metric>`, and
    `effects` (`mixsweep.report.effect.effect` entries) with their `sentence` in the summary under `effect/ft<fraction>/…`."""
    what = f"report {group}"

    def body(run: Any, wandb: Any) -> None:
        row = {**wandb_images(wandb, plots, "plots", what)}
        try:
            row["results"] = _table(wandb, table)
        except Exception as e:
            warn(f"W&B: {what}: results table skipped: {brief_error(e)}")
        for metric, lines in (curves or {}).items():
            try:
                chart = _table(wandb, lines)
                row[f"curve/{metric}"] = wandb.plot.line(chart, "animal_fraction", metric, stroke="line",
                                                         title=f"{metric} against animal fraction (seed mean)")
            except Exception as e:
                warn(f"W&B: {what}: curve of {metric} skipped: {brief_error(e)}")
        run.log(row, step=0)
        run.summary.update(_effect_summary(effects or [], sentence))

    return _with_run(tracker, what, body, id=run_id(f"report-{group}"), name=name, group=group,
                     job_type="report", config={"sweep": group})


def artifact_inputs(config: dict) -> list[dict]:
    """The input artifacts a run declares (config key `inputs`): {"name": "pt-…:latest"} for a logged one, or
    {"name", "type", "reference"} for one made here by reference (a mixture's image list)."""
    return [dict(i) for i in (config.get("inputs") or []) if isinstance(i, dict) and i.get("name")]


def declare_inputs(run: Any, wandb: Any, inputs: list[dict]) -> None:
    """`run.use_artifact` for each input: online only (wandb refuses it offline; `mixsweep sync` declares those
    after the upload, by resuming the synced run online)."""
    for item in inputs:
        if item.get("reference"):
            artifact = wandb.Artifact(item["name"], type=item.get("type", "dataset"))
            artifact.add_reference(item["reference"], checksum=False)
            run.use_artifact(artifact)
        else:
            run.use_artifact(item["name"])


def run_folders(root: Path | str, run_id: str) -> list[Path]:
    """Every local folder of one run id under root/wandb (one per attempt that logged it), oldest first. wandb
    names a folder `[offline-]run-<date>_<time>-<id>` and adds `-1`, `-2`, ... when an earlier attempt took that
    name within the same second."""
    folder = Path(root) / "wandb"
    if not folder.is_dir():
        return []
    name = re.compile(rf"(offline-)?run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-offline)?(-\d+)?")
    return sorted(p for p in folder.iterdir() if p.is_dir() and name.fullmatch(p.name))


def log_outputs(tracker: Tracker, *, key: str, artifacts: list[dict]) -> Path | None:
    """Add reference artifacts (name, type, reference, aliases, metadata) to a stage's finished run, resumed."""
    def body(run: Any, wandb: Any) -> None:
        log_artifacts(run, wandb, artifacts)

    return _with_run(tracker, f"stage {key} artifacts", body, id=run_id(key), resume="allow") if artifacts else None


def log_artifacts(run: Any, wandb: Any, artifacts: list[dict]) -> None:
    """Log reference artifacts (name, type, reference, aliases, metadata) as outputs of an open run."""
    for a in artifacts:
        artifact = wandb.Artifact(a["name"], type=a["type"], metadata=plain_values(a.get("metadata") or {}))
        artifact.add_reference(a["reference"], checksum=False)  # a reference: no bytes hashed or uploaded
        run.log_artifact(artifact, aliases=list(a.get("aliases") or []))


def log_failure(tracker: Tracker, *, key: str, name: str, group: str, job_type: str, error: str) -> Path | None:
    """Mark a stage's run as failed (exit code 1, the error in its summary): for failures before it trained."""
    def body(run: Any, wandb: Any) -> None:
        run.summary["error"] = error[:1000]

    return _with_run(tracker, f"stage {key}", body, exit_code=1, id=run_id(key), name=name, group=group,
                     job_type=job_type, resume="allow")


def read_offline_run(run_dir: Path | str) -> dict:
    """A finished local run read back through wandb's own transaction-log reader (`wandb leet inspect --json`).

    Returns run_id, name, project, entity, group, job_type, config, history (rows with _step), summary,
    exit_code, tags, artifacts (logged ones: name, type, aliases, references), and visualize: chart key -> W&B panel config of each `wandb.plot` chart the run logged (wandb
    keeps those under the config's `_wandb`, which is left out of `config`).
    """
    out: dict[str, Any] = {"run_id": None, "name": None, "project": None, "entity": None, "group": None,
                           "job_type": None, "config": {}, "history": [], "summary": {}, "exit_code": None,
                           "visualize": {}, "tags": [], "artifacts": []}
    if Path(run_dir).is_dir() and not any(Path(run_dir).glob("*.wandb")):
        return out  # an attempt killed before wandb wrote its log: nothing was recorded
    done = subprocess.run(_inspect_command(Path(run_dir)), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"`wandb leet inspect` failed on {run_dir} (needs wandb >= 0.31): "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        kind = record.get("type")
        body = record.get(kind) or {}
        if kind == "run":
            out.update(run_id=body.get("run_id"), name=body.get("display_name"), project=body.get("project"),
                       entity=body.get("entity") or None, group=body.get("run_group"), job_type=body.get("job_type"),
                       tags=list(body.get("tags") or []))
            _apply(out["config"], body.get("config") or {})
        elif kind == "artifact":  # a logged (output) artifact: name, type, aliases, references
            out["artifacts"].append({"name": body.get("name"), "type": body.get("type"),
                                     "aliases": list(body.get("aliases") or []),
                                     "references": [e.get("ref") for e in (body.get("manifest") or {}).get("contents", [])]})
        elif kind == "config":
            _apply(out["config"], body)
        elif kind == "summary":
            _apply(out["summary"], body)
        elif kind == "history":
            out["history"].append(body.get("item") or {})
        elif kind == "exit":
            out["exit_code"] = body.get("exit_code", 0)
    # A chart's panel arrives as a dotted key ("_wandb.visualize.<chart>"), not nested under "_wandb".
    internal = out["config"].pop("_wandb", None)
    if isinstance(internal, dict):
        out["visualize"].update(internal.get("visualize") or {})
    for key in [k for k in out["config"] if k.startswith("_wandb.")]:
        value = out["config"].pop(key)
        if key.startswith("_wandb.visualize."):
            out["visualize"][key[len("_wandb.visualize."):]] = value
    return out


def read_offline_history(run_dir: Path | str) -> list[dict]:
    """The history rows (dicts with _step and the logged metrics) of a finished local run."""
    return read_offline_run(run_dir)["history"]


def declare_synced_inputs(wandb: Any, tracker: Tracker, run: dict) -> list[str]:
    """Declare an uploaded offline run's input artifacts (config `inputs`) by resuming it online.

    `run` is the run's `read_offline_run` record; its project and entity win over the tracker's. Returns the
    names declared, [] (and nothing started) when it has none. Raises when W&B refuses: the caller retries.
    """
    inputs = artifact_inputs(run.get("config") or {})
    if not inputs:
        return []
    online = tracker.model_copy(update={"project": run.get("project") or tracker.project,
                                        "entity": run.get("entity") or tracker.entity, "mode": "online"})
    live = _init(wandb, online, "online", id=run["run_id"], resume="must")
    try:
        declare_inputs(live, wandb, inputs)
    finally:
        live.finish()
    return [item["name"] for item in inputs]


def _table(wandb: Any, frame: pd.DataFrame) -> Any:
    """A wandb.Table of plain cells. wandb types each column and refuses a row that breaks the type, so a
    column mixing numbers, strings or bools becomes text throughout."""
    columns = [[_cell(v) for v in frame.iloc[:, j].tolist()] for j in range(frame.shape[1])]
    for j, col in enumerate(columns):
        kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str
                 for v in col if v is not None}
        if len(kinds) > 1:
            columns[j] = [None if v is None else str(v) for v in col]
    rows = [list(r) for r in zip(*columns)] if columns else []
    return wandb.Table(columns=[str(c) for c in frame.columns], data=rows)


def _cell(v: Any) -> Any:
    """A number, string, bool or None (for NaN, inf and missing); lists and dicts as JSON, the rest as text."""
    import math

    if hasattr(v, "tolist"):  # numpy scalars and arrays
        v = v.tolist()
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    if type(v).__name__ in ("NAType", "NaTType"):
        return None
    return str(v)


def _effect_summary(effects: list[dict], sentence: str | None) -> dict:
    """`mixsweep.report.effect.effect` entries as flat summary keys: effect/primary/<name>, effect/transfer/<name>, and
    effect/<metric>/ft<fraction, 0_25>/<name> for secondary ones; non-finite numbers as None."""
    out: dict[str, Any] = {}
    for e in effects:
        # no dot in the key: W&B reads dotted summary keys as nesting
        at = (f"effect/{e['role']}" if e.get("role") in ("primary", "transfer") else
              f"effect/{e['metric']}/ft{float(e['finetune_fraction']):g}".replace(".", "_"))
        low, high = e["ci"]
        values = {"metric": e.get("metric"), "finetune_fraction": e.get("finetune_fraction"), "diff": e["diff"],
                  "ci_low": low, "ci_high": high, "p": e.get("p"), "p_holm": e.get("p_holm"),
                  "detected": e["effect"] == "detected", "effect": e["effect"], "direction": e.get("direction"),
                  "declared": e.get("declared"), "n_seeds": e.get("n_seeds"), "n_diverged": e.get("n_diverged"),
                  "mean_low": e.get("mean_low"), "mean_high": e.get("mean_high")}
        if e.get("slope_ci"):
            values.update(slope=e["slope"], slope_ci_low=e["slope_ci"][0], slope_ci_high=e["slope_ci"][1])
        if e.get("fractions"):
            values["fraction_low"], values["fraction_high"] = e["fractions"]
        out.update({f"{at}/{k}": _cell(v) for k, v in values.items() if v is not None or k == "direction"})
    if sentence:
        out["effect/sentence"] = sentence
    return out


# --- internals -------------------------------------------------------------------------------------------------


def _inspect_command(run_dir: Path) -> list[str]:
    """wandb-core's own `leet inspect`, called directly (milliseconds; `python -m wandb leet` starts Python and
    wandb first, about a second), else through the CLI."""
    files = sorted(run_dir.glob("*.wandb")) if run_dir.is_dir() else []
    try:
        from wandb.util import get_core_path

        if files:
            return [get_core_path(), "leet", "inspect", "--no-observability", "--json", "--run-file",
                    str(files[0].resolve()), str(run_dir.resolve().parent)]
    except Exception:
        pass
    return [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)]


def _with_run(tracker: Tracker, what: str, body: Callable[[Any, Any], None], exit_code: int = 0,
              **init_args: Any) -> Path | None:
    try:
        mode = resolve_mode(tracker.mode)
        if mode == "disabled":
            return None
        check_writable(tracker.root / "wandb", "W&B folder")  # else wandb quietly falls back to a temp dir
        import wandb

        run = start_run(wandb, tracker, mode, what, **init_args)
        try:
            body(run, wandb)
        finally:
            run.finish(exit_code=exit_code)
        return Path(run.dir).parent
    except Exception as e:
        warn(f"W&B: {what} not logged: {brief_error(e)}")
        return None


# start_run, wandb_images, plain_values, brief_error and warn are public: mixsweep.train.live builds a stage's
# live run from them.

def start_run(wandb: Any, tracker: Tracker, mode: str, what: str, *, id: str, **init_args: Any) -> Any:
    """wandb.init, online if asked and the server takes our key in time, else offline (one warning)."""
    if mode == "online":
        problem = _online_problem(wandb, tracker)
        if problem is None:
            try:
                return _init(wandb, tracker, "online", id=id, **init_args)
            except Exception as e:
                problem = brief_error(e)
                # wandb-core keeps the failed online run's id busy in this process
                id = f"{id}-offline"
        warn(f"W&B: {what} logged offline ({problem}); upload later with: {sync_command(tracker.root)}")
    return _init(wandb, tracker, "offline", id=id, **init_args)


def _online_problem(wandb: Any, tracker: Tracker) -> str | None:
    """Why online logging will not work (bad key, no server), checked once per process within timeout_s."""
    creds = os.environ.get("WANDB_API_KEY", "") + "|" + os.environ.get("WANDB_BASE_URL", "")
    fingerprint = hashlib.sha256(creds.encode()).hexdigest()
    if fingerprint not in _ONLINE_PROBLEM:
        try:
            wandb.Api(timeout=max(1, int(tracker.timeout_s)))  # verifies the key with the server
            _ONLINE_PROBLEM[fingerprint] = None
        except Exception as e:
            _ONLINE_PROBLEM[fingerprint] = brief_error(e)
    return _ONLINE_PROBLEM[fingerprint]


def _init(wandb: Any, tracker: Tracker, mode: str, **init_args: Any) -> Any:
    fields = getattr(wandb.Settings, "model_fields", {})
    wanted = dict(silent=True, console="off", save_code=False, disable_git=True, x_disable_stats=True,
                  init_timeout=float(tracker.timeout_s), finish_timeout=10.0 * tracker.timeout_s)
    if tracker.flush_s is not None:
        wanted["x_transaction_log_flush_interval"] = float(tracker.flush_s)
    settings = wandb.Settings(**{k: v for k, v in wanted.items() if k in fields})
    # mode="offline" alone may still ask for a key (seen with Ray's setup_wandb); the variable never does.
    with _env(WANDB_MODE=mode):
        _drop_inherited_service()
        return wandb.init(project=tracker.project, entity=tracker.entity, dir=str(tracker.root), mode=mode,
                          reinit="create_new", settings=settings, **init_args)


def _drop_inherited_service() -> None:
    """Forget a wandb-core service another process started (WANDB_SERVICE reached us through the environment, e.g.
    a Ray worker started from a process that used wandb): a stage resumed after a kill would otherwise join it,
    where the killed attempt's stream of the same run id can keep the new one from ever writing."""
    token = os.environ.get("WANDB_SERVICE", "")
    parts = token.split("-")
    if token and not (len(parts) > 2 and parts[1] == str(os.getpid())):
        os.environ.pop("WANDB_SERVICE", None)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    with _ENV_LOCK, environ(**values):  # one wandb.init at a time may see its WANDB_MODE
        yield


def wandb_images(wandb: Any, paths: list[Path], prefix: str, what: str) -> dict[str, Any]:
    images = {}
    for path in map(Path, paths):
        try:
            if not path.is_file():
                raise FileNotFoundError("no such file")
            images[f"{prefix}/{path.stem}"] = wandb.Image(str(path))
        except Exception as e:
            warn(f"W&B: {what}: picture {path} skipped: {brief_error(e)}")
    return images


def plain_values(d: dict) -> dict:
    """JSON-safe copy: Paths, numpy scalars and the like become plain values or strings."""
    return json.loads(json.dumps(d, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _apply(target: dict, change: dict) -> None:
    target.update(change.get("update") or {})
    for key in change.get("remove") or []:
        target.pop(key if isinstance(key, str) else ".".join(key), None)


def brief_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return _scrub(text[:300])


def _scrub(text: str) -> str:
    key = os.environ.get("WANDB_API_KEY", "").strip()
    return text.replace(key, "***") if len(key) >= 8 else text


def warn(message: str) -> None:
    # No source location: Python's default format then prints exactly one line, and nothing dedupes repeats.
    warnings.warn_explicit(_scrub(message), TrackingWarning, filename="mixsweep", lineno=0)
