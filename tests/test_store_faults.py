"""A shared store under faults, without Ray: two writers of one file, two drivers, torn and unreadable files, a
diverged stage. (The same faults inside a real Ray sweep: tests/test_sweep.py, at its end.)"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import pretrain_config
from mixsweep.errors import Diverged, MixsweepError
from mixsweep.files import read_jsonl, write_text_atomic
from mixsweep.sweep.stages import Plan, Stage
from mixsweep.sweep.store import Store

WRITES = 400


def _writer(path: str, who: int, barrier, out) -> None:
    """Write the file WRITES times (a table of one writer's value), reading it back after each write."""
    from mixsweep.tables import write_table

    errors = bad_reads = 0
    table = pa.table({"who": [who] * 500, "x": np.arange(500)})
    barrier.wait()
    for _ in range(WRITES):
        try:
            write_table(table, path)
            write_text_atomic(path + ".json", json.dumps({"who": who, "pad": "x" * 4000}))
        except Exception:
            errors += 1
        try:
            got = pq.read_table(path)
            ok = got.num_rows == 500 and len(set(got.column("who").to_pylist())) == 1
            ok = ok and json.loads(open(path + ".json").read())["pad"] == "x" * 4000
        except Exception:
            ok = False
        bad_reads += not ok
    out.put((errors, bad_reads))


def test_two_processes_writing_one_store_file_never_fail_or_tear_it(tmp_path):
    """Every write goes to a temporary name of its own, then one rename: two writers of the same Parquet and
    JSON file, 400 writes each, get no error, and no read between them ever finds a partial file."""
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "results.parquet"), i, barrier, out)) for i in (0, 1)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert results == [(0, 0), (0, 0)]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no leftover temporary file


HOLDER = textwrap.dedent("""
    import sys, time
    from mixsweep.sweep.store import Store
    with Store(sys.argv[1]).driver_lock():
        print("held", flush=True)
        time.sleep(600)
""")


def _spec(tmp_path, store, **extra) -> str:
    import yaml

    spec = {"name": "locked", "grid": {"animal_fractions": [0.0, 1.0], "finetune_fractions": [1.0], "seeds": [0]},
            "data": {"synth": {"scale": "small", "seed": 0}}, "preset": "tiny", "storage": str(store),
            "wandb": {"mode": "disabled"}, **extra}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "s.yaml")


def test_a_second_driver_refuses_or_waits_and_a_dead_drivers_lock_is_taken_over(tmp_path, capsys):
    """One `mixsweep run` trains into a store at a time. A second refuses in one line naming the holder, before
    reading any data; with --wait it waits. A holder killed with SIGKILL leaves its lock file behind, and the
    waiting driver takes it over (the kernel dropped the lock with the process)."""
    from mixsweep.cli import main

    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", _spec(tmp_path, store)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and "in use by" in err and "--wait" in err
        assert sorted(p.name for p in store.iterdir()) == ["driver.lock"]  # refused before planning: no data written

        waited: list[str] = []
        with pytest.raises(MixsweepError):  # the holder is alive: no wait, no lock
            with Store(store).driver_lock():
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert (store / "driver.lock").is_file()  # left behind by the dead driver
        with Store(store).driver_lock(wait=True, poll_s=0.05, on_wait=waited.append):
            assert json.loads((store / "driver.lock").read_text())["pid"] == os.getpid()
        assert waited == []  # nobody held it any more: taken over without waiting
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_driver_starts_when_the_first_one_ends(tmp_path):
    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waited: list[str] = []

        def end_holder(line: str) -> None:  # called once, when the waiter finds the store taken
            waited.append(line)
            holder.terminate()

        with Store(store).driver_lock(wait=True, poll_s=0.05, on_wait=end_holder):
            assert holder.poll() is not None  # it got the lock only once the holder had ended
        assert len(waited) == 1 and f"pid {holder.pid}" in waited[0] and "waiting" in waited[0]
    finally:
        holder.kill()
        holder.wait()


# --- torn and unreadable files ----------------------------------------------------------------------

def test_a_torn_last_line_is_dropped_with_a_warning_and_a_bad_middle_line_is_one_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epo')
    with pytest.warns(UserWarning, match=rf"{path}: line 3 is torn"):
        assert read_jsonl(path) == [{"epoch": 0}, {"epoch": 1}]
    path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(MixsweepError, match=rf"{path}: line 2 is not a JSON record"):
        read_jsonl(path)


def test_a_run_with_a_torn_metrics_line_resumes(train_inputs, tmp_path):
    """A kill in the middle of appending an epoch's line: the rerun drops the torn line (naming the file) and
    resumes from the checkpoint; each epoch is logged once."""
    from mixsweep.train.launch import run_local
    from mixsweep.train.config import parse_job
    from mixsweep.train.loop import read_metrics

    cfg = pretrain_config(train_inputs, tmp_path, "torn", checkpoint_every=1)
    cfg["recipe"]["epochs"] = 2
    job = parse_job(cfg)
    run_local(job)
    log = tmp_path / "torn" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"epoch": 2, "train_lo')
    for ckpt in (tmp_path / "torn" / "checkpoints").glob("checkpoint_epoch0001"):
        ckpt.rename(ckpt.with_name("gone"))  # so that epoch 1 trains again
    with pytest.warns(UserWarning, match=f"{log}: line 3 is torn"):
        run_local(job)
    assert [m["epoch"] for m in read_metrics(tmp_path / "torn")] == [0, 1]


def _done(store: Store, key: str, **row) -> None:
    store.record_result(key, {"key": key, "kind": "finetune", "method": "mae", **row}, store.root, None)


def test_an_unreadable_or_misplaced_result_is_not_done_and_run_moves_it_aside(tmp_path):
    store = Store(tmp_path / "store")
    for key in ("ft-a", "ft-b", "ft-c"):
        _done(store, key, seed=0)
    (store.stage_dir("ft-a") / "result.json").write_text('{"key": "ft-a", "st')  # torn
    (store.stage_dir("ft-b") / "result.json").write_bytes(b"\xff\xfe\x00")  # not even text
    (store.stage_dir("ft-c") / "result.json").write_text(json.dumps({"key": "ft-zzz", "status": "done"}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.rows() == []  # report and results leave them out, without a traceback
        assert not any(store.is_done(k) for k in ("ft-a", "ft-b", "ft-c"))
    text = "\n".join(str(w.message) for w in caught)
    assert "ft-a/result.json: unreadable" in text and "ft-b/result.json: unreadable" in text
    assert "ft-c/result.json: its key 'ft-zzz' is not its folder's" in text
    moved = store.set_aside_unreadable()
    assert sorted(p.parent.name for p in moved) == ["ft-a", "ft-b", "ft-c"]
    for key in ("ft-a", "ft-b", "ft-c"):  # kept for a look, out of the way of the rerun
        assert (store.stage_dir(key) / "result.json.corrupt").is_file()
        assert not (store.stage_dir(key) / "result.json").exists()


def test_a_torn_parent_checkpoint_reruns_the_parent_and_its_failed_children(tmp_path):
    """A pre-training's checkpoint that is not the file its result.json recorded (a torn copy, a disk fault):
    `run` makes the pre-training pending again and retries the fine-tunes that failed on it."""
    from mixsweep.sweep.run import _reopen_unusable_parents

    store = Store(tmp_path / "store")
    ckpt = tmp_path / "state.pt"
    ckpt.write_bytes(os.urandom(4096))
    store.record_result("pt-a", {"key": "pt-a", "kind": "pretrain"}, tmp_path, ckpt)
    store.record_result("pt-b", {"key": "pt-b", "kind": "pretrain"}, tmp_path, ckpt)
    store.record_failure("ft-a", {"key": "ft-a", "kind": "finetune"}, "MixsweepError: state.pt: truncated")
    assert store.checkpoint_problem("pt-a") is None
    with open(store.checkpoint("pt-a"), "r+b") as f:
        f.truncate(1000)

    def stage(key, kind, parent=None):
        return Stage(key, kind, "mae", 0, 1.0, None if kind == "pretrain" else 1.0, parent, "tiny", 1, 1)

    plan = Plan("t", "d", [stage("pt-a", "pretrain"), stage("pt-b", "pretrain"), stage("ft-a", "finetune", "pt-a"),
                           stage("ft-b", "finetune", "pt-b")])
    from mixsweep.sweep.plan import refresh_statuses

    refresh_statuses(plan, store)
    with pytest.warns(UserWarning, match="stage pt-a: .*state.pt: not the file result.json recorded"):
        _reopen_unusable_parents(plan, store)
    assert {s.key: s.status for s in plan.stages} == {"pt-a": "pending", "pt-b": "done", "ft-a": "pending",
                                                       "ft-b": "pending"}
    assert (store.stage_dir("pt-a") / "result.json.corrupt").is_file()
    assert (store.stage_dir("ft-a") / "failed.json.old").is_file()


# --- diverged is not done ---------------------------------------------------------------------------

def test_a_non_finite_training_loss_stops_the_stage_in_that_epoch(train_inputs, tmp_path, capsys):
    """A learning rate that blows the weights up: training stops in the epoch the loss went non-finite, one line
    through the CLI, and nothing of that epoch is logged or checkpointed (a resume never starts from NaN)."""
    import yaml

    from mixsweep.cli import main
    from mixsweep.train.loop import read_metrics

    cfg = pretrain_config(train_inputs, tmp_path, "nan")
    cfg["recipe"].update(blr=1e30, epochs=3, warmup_epochs=0)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "pretrain", str(path), "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train_loss is nan in epoch" in err and "diverged" in err
    epoch = int(err.split("in epoch ")[1].split()[0])
    assert [m["epoch"] for m in read_metrics(tmp_path / "nan")] == list(range(epoch))
    assert all(math.isfinite(m["train_loss"]) for m in read_metrics(tmp_path / "nan"))
    assert len(list((tmp_path / "nan" / "checkpoints").glob("*"))) == epoch


def test_endpoint_metrics_decide_divergence():
    from mixsweep.sweep.stages import divergence

    assert divergence("finetune", {"train_loss": 0.3, "test_loss": 0.4, "test_iou_binary": 0.5,
                                   "test_iou_border": math.nan}) == ""  # a class with no pixels is not a divergence
    assert divergence("finetune", {"train_loss": 0.3, "test_loss": math.inf, "test_iou_binary": math.nan}) == (
        "test_loss is inf, test_iou_binary is nan after the last epoch: the stage diverged")
    assert "train_loss is nan" in divergence("pretrain", {"train_loss": math.nan, "val_loss": 1.0})


def test_children_of_a_diverged_stage_never_start():
    from mixsweep.sweep.run import StageSearcher

    configs = [{"key": "pt", "parent": None, "row": {"kind": "pretrain"}},
               {"key": "ft", "parent": "pt", "row": {"kind": "finetune"}}]
    searcher = StageSearcher(configs, done=set())
    assert searcher.suggest("t1")["key"] == "pt"
    assert searcher.suggest("t2") is None  # waits for its parent
    searcher.on_trial_complete("t1", {"key": "pt", "status": "diverged", "error": "Diverged: train_loss is nan"})
    assert searcher.suggest("t3") == StageSearcher.FINISHED


def _world_with_diverged_seeds() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        for f in (0.0, 1.0):
            rows.append({"key": f"ft{seed}{f}", "kind": "finetune", "method": "mae", "status": "done", "seed": seed,
                         "animal_fraction": f, "finetune_fraction": 1.0,
                         "test_iou_binary": 0.5 + 0.05 * f + rng.normal(0, 0.005)})
    rows[-1].update(status="diverged", test_iou_binary=math.nan)  # seed 4, F=1: the fine-tune diverged
    rows[-3]["test_iou_binary"] = math.nan  # seed 3, F=1: an old result with a NaN endpoint
    rows.append({"key": "pt", "kind": "pretrain", "method": "mae", "status": "diverged", "seed": 2,
                 "animal_fraction": 0.0, "finetune_fraction": math.nan})
    return pd.DataFrame([r for r in rows if not (r["seed"] == 2 and r["animal_fraction"] == 0.0
                                                 and r["kind"] == "finetune")])


def test_the_verdict_counts_and_names_diverged_seeds(tmp_path):
    from mixsweep.report.effect import effect, effect_sentence
    from mixsweep.report.build import write_report

    results = _world_with_diverged_seeds()
    (entry,) = effect(results)
    assert entry["n_seeds"] == 2  # seeds 0 and 1: the others lost one end
    assert entry["n_diverged"] == 3 and entry["diverged"] == [[0.0, 2], [1.0, 3], [1.0, 4]]
    sentence = effect_sentence([entry])
    assert "(3 runs diverged and are left out: F=0 seed 2, F=1 seed 3, F=1 seed 4)" in sentence
    paths = write_report(results, {}, tmp_path, title="t")
    assert json.loads(paths["effect.json"].read_text())[0]["n_diverged"] == 3
    md = paths["results.md"].read_text()
    assert "3 runs diverged" in md.splitlines()[2]  # beside the verdict, not only in a table below


def test_failed_json_records_diverged_and_the_plan_counts_it(tmp_path):
    from mixsweep.sweep.plan import refresh_statuses

    store = Store(tmp_path / "store")
    store.record_failure("pt", {"key": "pt", "kind": "pretrain"}, "Diverged: train_loss is nan", "diverged")
    store.record_failure("ft", {"key": "ft", "kind": "finetune"}, "OSError: disk", "failed")
    plan = Plan("t", "d", [Stage("pt", "pretrain", "mae", 0, 1.0, None, None, "tiny", 1, 1),
                           Stage("ft", "finetune", "mae", 0, 1.0, 1.0, None, "tiny", 1, 1)])
    assert refresh_statuses(plan, store).counts() == {"done": 0, "failed": 1, "diverged": 1, "pending": 0}
    assert {r["key"]: r["status"] for r in store.rows()} == {"pt": "diverged", "ft": "failed"}
    assert issubclass(Diverged, MixsweepError)  # one line, exit 2, and not retried by Tune
