"""`mixsweep sync`: finding a store's W&B offline runs, skipping those wandb marked as synced, the no-key
refusal, the upload's failure path with the real `wandb sync`, and the online declaration of inputs.

No W&B server is reachable here: nothing is ever uploaded. Offline runs are made with the real wandb.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import fixtures
from mixsweep import tracking
from mixsweep.cli import main
from mixsweep.sweep import sync
from mixsweep.sweep.store import Store

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key, valid nowhere


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    """No key, no netrc, no WANDB_MODE and an empty HOME, whatever the machine running the tests has."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setattr(tracking, "_ONLINE_PROBLEM", {})


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory):
    """Two real offline runs, made once: a report run (no inputs) and a stage run with two inputs."""
    root = tmp_path_factory.mktemp("made")
    tracker = tracking.Tracker(project="mixsweep-test", mode="offline", root=root)
    report = tracking.log_report(tracker, group="study", table=pd.DataFrame({"a": [1.0]}), plots=[])
    stage = fixtures.log_stage(
        tracker, key="kstage0123", name="finetune F=0.5 seed 0", group="study", job_type="finetune",
        config={"inputs": [{"name": "pt-abc:latest"},
                           {"name": "mix-xyz", "type": "dataset", "reference": "file:///data/mix.parquet"}]},
        history=[{"epoch": 0, "loss": 1.0}], summary={}, pictures=[])
    assert report is not None and stage is not None
    return {"report": report, "stage": stage}


def _put(run_dir: Path, store_root: Path) -> Path:
    """A copy of a made run in a store's wandb folder."""
    dest = store_root / "wandb" / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


def _mark_synced(run_dir: Path) -> None:
    """The marker wandb-core writes next to a transaction log it uploaded (wandb/cli/beta_sync.py)."""
    for log in run_dir.glob("*.wandb"):
        log.with_name(log.name + ".synced").write_text("")


def _fake_run(folder: Path, run_id: str, synced: bool = False) -> Path:
    run_dir = folder / f"offline-run-20260101_000000-{run_id}"
    run_dir.mkdir(parents=True)
    (run_dir / f"run-{run_id}.wandb").write_bytes(b"not read here")
    if synced:
        _mark_synced(run_dir)
    return run_dir


def test_discovery_skips_synced_runs_and_merges_mirror_copies(tmp_path):
    store, mirror = tmp_path / "store" / "wandb", tmp_path / "mirror" / "wandb"
    a = _fake_run(store, "a")
    _fake_run(store, "b", synced=True)
    mirror_b = _fake_run(mirror, "b")  # its copy unmarked: the store's marker counts
    mirror_a = _fake_run(mirror, "a")
    c = _fake_run(mirror, "c", synced=True)  # only on the mirror, synced there
    e = _fake_run(mirror, "e")  # only on the mirror, not synced
    (store / "offline-run-20260101_000000-nolog" / "files").mkdir(parents=True)  # no .wandb: not a run
    _fake_run(store, "online").rename(store / "run-20260101_000000-online")  # an online run's folder
    (store / "latest-run").symlink_to(a)
    (store / "offline-run-20260101_000000-link").symlink_to(a)  # a link is no run of its own

    runs = sync.offline_runs([store, mirror])
    assert [r.path for r in runs] == [a, store / "offline-run-20260101_000000-b", c, e]
    assert runs[0].copies == [mirror_a] and runs[1].copies == [mirror_b]
    assert [r.run_id for r in runs if not r.synced()] == ["a", "e"]

    # every transaction log of a folder must be marked, as wandb skips per log
    (a / "run-a-resumed.wandb").write_bytes(b"")
    _mark_synced(a)
    (a / "run-a-resumed.wandb.synced").unlink()
    assert not sync.is_synced(a)

    # a local mirror is searched in place; a file:// one too
    spec_store = Store(tmp_path / "store", str(tmp_path / "mirror"))
    assert sync.wandb_folders(spec_store) == ([store, mirror], [])
    assert sync.wandb_folders(Store(tmp_path / "store", f"file://{tmp_path / 'mirror'}"))[0] == [store, mirror]
    assert sync.wandb_folders(Store(tmp_path / "store"))[0] == [store]


def test_mirror_runs_the_store_lacks_are_pulled_whole(tmp_path):
    """The URI-mirror path (Store.pull_folders), on a path mirror: pyarrow's filesystem is the same code."""
    store = Store(tmp_path / "store", str(tmp_path / "mirror"))
    _fake_run(tmp_path / "store" / "wandb", "a")
    _fake_run(tmp_path / "mirror" / "wandb", "a")
    only_there = _fake_run(tmp_path / "mirror" / "wandb", "e", synced=True)
    (only_there / "files").mkdir()
    (only_there / "files" / "config.yaml").write_text("x: 1\n")
    (tmp_path / "mirror" / "wandb" / "debug.log").write_text("")  # a file, not a run folder

    assert store.pull_folders("wandb", prefix="offline-run-") == [only_there.name]
    copied = tmp_path / "store" / "wandb" / only_there.name
    assert (copied / "files" / "config.yaml").read_text() == "x: 1\n" and sync.is_synced(copied)
    assert sorted(p.name for p in (tmp_path / "store" / "wandb").iterdir()) == [
        "offline-run-20260101_000000-a", only_there.name]  # no temporary folder left
    assert store.pull_folders("wandb", prefix="offline-run-") == []


def test_cli_without_a_key_says_so_in_one_line(made_runs, tmp_path, capsys):
    """`mixsweep sync SPEC` with one offline run waiting and no key anywhere: one line on stderr, status 2."""
    root = tmp_path / "store"
    run_dir = _put(made_runs["report"], root)
    spec = tmp_path / "study.yaml"
    spec.write_text(f"name: study\ngrid: {{animal_fractions: [0.0, 1.0], seeds: [0]}}\n"
                    f"data: {{synth: {{scale: small}}}}\npreset: tiny\nstorage: {root}\n"
                    "wandb: {project: mixsweep-test, mode: offline}\n")

    assert main(["sync", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would send  report-study  report  {run_dir}" in out and "1 offline runs to send" in out

    assert main(["sync", str(spec)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"mixsweep sync: no W&B API key (set WANDB_API_KEY or run `wandb login`); 1 offline run waits under "
        f"{root / 'wandb'}"]
    assert captured.out == ""
    assert sorted(p.name for p in run_dir.iterdir() if p.is_file()) == ["run-report-study.wandb"]  # unmarked


def test_synced_runs_are_not_sent_again(made_runs, tmp_path):
    """Once wandb marked a run, a sync finds nothing to do: it does not even need a key."""
    root = tmp_path / "store"
    run_dir = _put(made_runs["report"], root)
    broken = _fake_run(root / "wandb", "broken")  # an unreadable log (a run still being written)
    _mark_synced(run_dir)
    lines: list[str] = []
    assert sync.sync_store(Store(root), {"project": "mixsweep-test"}, say=lines.append) == 0
    assert lines == [f"left for later (still running, or unreadable: no exit record)  {broken}", "nothing to sync"]
    assert json.loads((run_dir / sync.DECLARED).read_text()) == []  # no inputs: done with, no server needed
    lines.clear()
    shutil.rmtree(broken)
    assert sync.sync_store(Store(root), {"project": "mixsweep-test"}, say=lines.append) == 0
    assert lines == ["nothing to sync"]


def test_failed_upload_marks_nothing(made_runs, tmp_path, monkeypatch):
    """The real `wandb sync` against a server that isn't there retries for minutes and exits 0 when it can't
    authenticate; success is read from its markers, so this is 'not uploaded', status 1, nothing marked."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    root = tmp_path / "store"
    run_dir = _put(made_runs["stage"], root)
    lines, errors = [], []
    status = sync.sync_store(Store(root), {"project": "mixsweep-test"}, timeout_s=2, say=lines.append,
                             shout=errors.append)
    assert status == 1
    assert lines == ["sent 0 of 1 offline runs; inputs declared for 0 runs"]
    assert errors[0] == f"mixsweep sync: not uploaded: {run_dir}" and "stopped after 2 s" in errors[1]
    assert not sync.is_synced(run_dir) and not (run_dir / sync.DECLARED).exists()
    assert FAKE_KEY not in "\n".join(lines + errors)


class StandInWandb:
    """Records the wandb calls of the online declaration. The one stand-in in these tests: no W&B server is
    reachable here, so this branch is tested up to the calls it makes into wandb, not against W&B."""

    class Settings:
        model_fields: dict = {}

        def __init__(self, **kwargs):
            pass

    def __init__(self, refuse: bool = False):
        self.calls: list[tuple] = []
        self.refuse = refuse
        outer = self

        class Artifact:
            def __init__(self, name, type):
                self.name, self.type, self.references = name, type, []

            def add_reference(self, uri, checksum=True):
                self.references.append((uri, checksum))

        class Run:
            def use_artifact(self, artifact):
                outer.calls.append(("use_artifact", artifact if isinstance(artifact, str) else
                                    (artifact.name, artifact.type, artifact.references)))

            def finish(self):
                outer.calls.append(("finish",))

        self.Artifact, self._Run = Artifact, Run

    def init(self, **kwargs):
        self.calls.append(("init", {**kwargs, "env_mode": os.environ.get("WANDB_MODE")}))
        if self.refuse:
            raise RuntimeError("permission denied")
        return self._Run()


def test_inputs_are_declared_online_once(made_runs, tmp_path):
    root = tmp_path / "store"
    stage = _put(made_runs["stage"], root)
    report = _put(made_runs["report"], root)
    runs = sync.offline_runs([root / "wandb"])
    tracker = tracking.Tracker(project="spec-project", entity="team-x", mode="online", root=root)

    # not uploaded yet: nothing declared
    wandb = StandInWandb()
    assert sync.declare_pending(runs, wandb, tracker) == ([], []) and wandb.calls == []

    _mark_synced(stage)
    _mark_synced(report)
    refusing = StandInWandb(refuse=True)
    declared, refused = sync.declare_pending(runs, refusing, tracker)
    assert declared == [] and [(r.path, why) for r, why in refused] == [(stage, "RuntimeError: permission denied")]
    assert not (stage / sync.DECLARED).exists()  # retried next time
    assert json.loads((report / sync.DECLARED).read_text()) == []  # no inputs: nothing started for it

    said: list[str] = []
    declared, refused = sync.declare_pending(runs, wandb, tracker, said.append)
    assert [r.path for r in declared] == [stage] and refused == []
    (init, kwargs), *rest = wandb.calls
    assert init == "init" and kwargs["id"] == "kstage0123" and kwargs["resume"] == "must"
    assert kwargs["mode"] == "online" and kwargs["env_mode"] == "online"
    assert kwargs["project"] == "mixsweep-test" and kwargs["entity"] == "team-x"  # the run's own project
    assert rest == [("use_artifact", "pt-abc:latest"),
                    ("use_artifact", ("mix-xyz", "dataset", [("file:///data/mix.parquet", False)])),
                    ("finish",)]
    assert said == ["inputs declared  kstage0123  pt-abc:latest, mix-xyz"]
    assert json.loads((stage / sync.DECLARED).read_text()) == ["pt-abc:latest", "mix-xyz"]

    again = StandInWandb()
    assert sync.declare_pending(sync.offline_runs([root / "wandb"]), again, tracker) == ([], [])
    assert again.calls == []


def test_sync_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as done:
        main(["sync", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("wandb sync", "Idempotent", "run-<id>.wandb.synced", "declare", "API key", "status 2",
                  "--dry-run", "--timeout"):
        assert words in text, words


def test_a_killed_attempt_superseded_by_a_later_one_is_sent(tmp_path):
    """A killed attempt's log never gets an exit record, but holds epochs only it has: once a later attempt of the
    same run id exists it is final, and goes out; an empty one (killed before wandb wrote) is skipped."""
    import time

    import wandb

    root = tmp_path / "store"
    tracker = tracking.Tracker(project="mixsweep-test", mode="offline", root=root, flush_s=0.1)
    run = tracking._init(wandb, tracker, "offline", id="pt-k", resume="allow")
    run.log({"loss": 1.0}, step=0, commit=True)
    live = Path(run.dir).parent
    deadline = time.time() + 60
    while not tracking.read_offline_run(live)["history"]:
        assert time.time() < deadline, "wandb never wrote the committed step"
        time.sleep(0.1)
    killed = root / "wandb" / "offline-run-20200101_000000-pt-k"  # older than the live folder's name
    shutil.copytree(live, killed)  # a copy taken mid-run: history, no exit record
    run.finish()
    empty = _fake_run(root / "wandb", "pt-k")  # 20260101: older too, and unreadable
    copied = tracking.read_offline_run(killed)
    assert copied["exit_code"] is None and [r["_step"] for r in copied["history"]] == [0]
    lines: list[str] = []
    assert sync.sync_store(Store(root), {"project": "mixsweep-test"}, say=lines.append, dry_run=True) == 0
    text = "\n".join(lines)
    assert f"skipped (a killed attempt's empty log)  {empty}" in text
    assert f"{killed}" in text and f"{live}" in text and "left for later" not in text
