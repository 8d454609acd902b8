"""Sweeps: content keys and plans (no Ray), then real Ray Tune runs that reuse, extend and survive a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import HEAD_RESOURCE, node_ids, synth_data_section
from mixsweep.spec import load_spec
from mixsweep.sweep.plan import build_plan
from mixsweep.sweep.store import Store


def write_spec(path, storage, fractions=(0.0, 1.0), finetune=(0.5, 1.0), seeds=(0,), baselines=(), **extra):
    spec = {
        "name": "t",
        "grid": {"animal_fractions": list(fractions), "finetune_fractions": list(finetune), "seeds": list(seeds)},
        "baselines": list(baselines),
        "data": {"synth": {"scale": "small", "seed": 0}},
        "preset": "tiny",
        "mixture": {"pack_size": 64},
        "pretrain": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "blr": 1.5e-3},
        "finetune": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "blr": 1e-2},
        "resources": {"pretrain": {"num_workers": 1, "cpus_per_worker": 1},
                      "finetune": {"num_workers": 1, "cpus_per_worker": 1},
                      # TorchTrainer drivers on the head, as on a real cluster; a one-CPU-worker stage trains in
                      # its trial, which then asks for the worker's CPU instead (so it lands on a worker node).
                      "trial_resources": {HEAD_RESOURCE: 1}},
        "storage": str(storage),
        "wandb": {"mode": "offline", "project": "mixsweep-test"},
        "checkpoint_every": 1,
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def result_times(store: Store) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (store.root / "stages").glob("*/result.json")}


# --- plans and keys: no Ray -------------------------------------------------------------------------

def test_one_pretraining_feeds_every_finetune(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", tmp_path / "store", baselines=["supervised_mae"]))
    plan = build_plan(spec, Store(spec.storage))
    kinds = [(s.kind, s.method) for s in plan.stages]
    assert kinds.count(("pretrain", "mae")) == 2  # 2 fractions × 1 seed, not 2 × 2 fine-tune sizes
    assert kinds.count(("finetune", "mae")) == 4 and kinds.count(("finetune", "supervised_mae")) == 2
    pre = {s.key for s in plan.stages if s.kind == "pretrain"}
    assert {s.parent for s in plan.stages if s.method == "mae" and s.kind == "finetune"} == pre
    assert len({s.key for s in plan.stages}) == len(plan.stages)
    assert all(s.status == "pending" for s in plan.stages)


def test_keys_are_stable_and_extension_adds_only_new_keys(tmp_path):
    store = tmp_path / "store"
    base = build_plan(load_spec(write_spec(tmp_path / "a.yaml", store)), Store(store))
    again = build_plan(load_spec(write_spec(tmp_path / "b.yaml", store)), Store(store))
    assert [s.key for s in base.stages] == [s.key for s in again.stages]
    wider = build_plan(load_spec(write_spec(tmp_path / "c.yaml", store, fractions=(0.0, 0.5, 1.0))), Store(store))
    new = {s.key for s in wider.stages} - {s.key for s in base.stages}
    assert {s.key for s in base.stages} <= {s.key for s in wider.stages}
    kinds = sorted(s.kind for s in wider.stages if s.key in new)
    assert kinds == ["finetune", "finetune", "pretrain"]
    # What changes the result changes the key: the recipe, the seed.
    other = write_spec(tmp_path / "d.yaml", store, seeds=(1,))
    assert not {s.key for s in build_plan(load_spec(other), Store(store)).stages} & {s.key for s in base.stages}
    spec = yaml.safe_load((tmp_path / "a.yaml").read_text())
    spec["finetune"]["epochs"] = 3
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(spec))
    changed = build_plan(load_spec(tmp_path / "e.yaml"), Store(store))
    assert [s.key for s in changed.stages if s.kind == "pretrain"] == [s.key for s in base.stages if s.kind == "pretrain"]
    assert not {s.key for s in changed.stages if s.kind == "finetune"} & {s.key for s in base.stages}


def test_plan_json_has_totals(tmp_path, capsys):
    from mixsweep.cli import main

    path = write_spec(tmp_path / "s.yaml", tmp_path / "store", baselines=["resnet50"])
    assert main(["plan", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["stages"] == len(data["stages"]) == 2 + 4 + 2
    assert data["totals"]["pending"] == 8 and data["totals"]["gpu_hours_total"] > 0
    assert 0 < data["totals"]["pack_images"] == data["totals"]["mixture_rows"]  # F=0 and F=1 share no image


def test_a_trial_asks_for_its_worker_or_for_a_driver_slot(tmp_path):
    """One CPU worker: the trial is the worker and asks for its resources (not the drivers' head resource).
    Several workers or a GPU: the trial drives a TorchTrainer and asks for trial_cpus + trial_resources."""
    from mixsweep.sweep.run import trial_request
    from mixsweep.train.config import ScalingSettings

    spec = load_spec(write_spec(tmp_path / "s.yaml", tmp_path / "store"))
    one = ScalingSettings(num_workers=1, cpus_per_worker=2, resources={"fast_disk": 1})
    assert trial_request(one, spec.resources) == {"CPU": 2, "fast_disk": 1}
    assert trial_request(ScalingSettings(num_workers=2), spec.resources) == {HEAD_RESOURCE: 1}
    assert trial_request(ScalingSettings(num_workers=1, use_gpu=True), spec.resources) == {HEAD_RESOURCE: 1}
    bare = spec.resources.model_copy(update={"trial_resources": {}})
    assert trial_request(ScalingSettings(num_workers=2), bare) == {"CPU": 0.01}


def test_a_trial_tune_gave_up_on_is_recorded_by_the_driver(tmp_path):
    """An in-trial stage whose process died on every attempt wrote no failed.json; the driver's callback does,
    and leaves alone one the trial wrote itself."""
    from types import SimpleNamespace

    from mixsweep.sweep.run import StageProgress

    store = Store(tmp_path / "store")
    error = tmp_path / "error.txt"
    error.write_text("Failure # 2\nray.exceptions.ActorDiedError: The actor died unexpectedly\n")
    trial = SimpleNamespace(config={"key": "ft-1", "row": {"key": "ft-1", "kind": "finetune"}}, trial_id="t1",
                            error_file=str(error), run_metadata=SimpleNamespace(num_failures=2), last_result={})
    progress = StageProgress(total=1, done=0, names={}, store=store)
    progress.on_trial_start(0, [], trial)
    progress.on_trial_error(0, [], trial)
    failure = store.failure("ft-1")
    assert failure["status"] == "failed" and failure["trial_id"] == "t1" and failure["kind"] == "finetune"
    assert failure["error"] == ("the trial failed 2 time(s); last: "
                                "ray.exceptions.ActorDiedError: The actor died unexpectedly")
    store.record_failure("ft-1", {"key": "ft-1", "trial_id": "t1"}, "ValueError: from the trial itself")
    progress.on_trial_error(0, [], trial)
    assert store.failure("ft-1")["error"] == "ValueError: from the trial itself"


# --- real sweeps on a local Ray instance ------------------------------------------------------------

def packs(store: Store) -> list[str]:
    return sorted(p.name for p in (store.root / "cache").iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    """The 2 × 2 × 1 sweep, run once for the tests below."""
    from mixsweep.sweep.run import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    path = write_spec(root / "s.yaml", root / "store", mirror=f"file://{root / 'mirror'}")
    plan = run_sweep(load_spec(path), str(path))
    return root, path, plan


def test_sweep_runs_every_stage_once_and_logs_it(ray_local, swept):
    root, path, plan = swept
    store = Store(root / "store")
    assert plan.counts() == {"done": 6, "failed": 0, "diverged": 0, "pending": 0}
    rows = store.results_frame()
    # One-CPU-worker stages train inside their Tune trial: each trial runs on a worker node (never the CPU-less
    # head) and is its own worker.
    nodes = node_ids(ray_local)
    assert rows["in_trial"].all()
    assert set(rows["trial_node"]) <= nodes["workers"]
    assert (rows["worker_nodes"] == rows["trial_node"]).all()
    # What a stage cost beyond its training loop is recorded per stage (its figures: README, "Measured").
    assert (rows["loop_s"] > 0).all() and (rows["queued_s"] >= 0).all()
    assert ((rows["stage_wall_s"] - rows["loop_s"]) - rows["overhead_s"]).abs().max() < 1e-6
    # Why that overhead is small: trial processes are reused. Six stages ran in fewer processes than six (the two
    # worker nodes hold four one-CPU trials at once), so some stage found torch and the model code imported.
    pids = {json.loads((store.train_dir() / k / "workers" / "rank0.json").read_text())["pid"] for k in rows["key"]}
    assert len(pids) < len(rows)
    # Each row says what made it: the versions and the device, as the worker saw them.
    from importlib.metadata import version

    from mixsweep.provenance import CODE_VERSION

    assert set(rows["torch_version"]) == {version("torch")} and set(rows["timm_version"]) == {version("timm")}
    assert set(rows["code_version"]) == {CODE_VERSION} and rows["device"].str.startswith("cpu (").all()
    assert rows["ray_version"].notna().all() and rows["source_digest"].nunique() == 1
    from mixsweep.sweep.run import overhead_line

    assert overhead_line(store, list(rows["key"])).startswith("median overhead ")
    # The loop's parts the cost model calibrates on, each inside the loop's time.
    parts = rows[["first_step_s", "eval_s", "checkpoint_s"]]
    assert (parts > 0).all().all() and (parts.sum(axis=1) < rows["loop_s"]).all()
    # A finished stage keeps one checkpoint, its weights only, and no half-written folder.
    from mixsweep.train.loop import load_state

    for key in rows["key"]:
        (folder,) = [p for p in (store.train_dir() / key).iterdir() if p.name.startswith(("checkpoint_", ".staging"))]
        assert folder.name.startswith("checkpoint_") and "optimizer" not in load_state(folder), key
    assert (rows["kind"] == "pretrain").sum() == 2 and (rows["kind"] == "finetune").sum() == 4
    # Both pre-trainings read one pack of the grid's union; the fine-tunes one Pet pack.
    assert len(packs(store)) == 2
    for s in plan.stages:
        history = store.history(s.key)
        assert [m["epoch"] for m in history] == [0, 1], s.key
        if s.kind == "finetune":
            assert 0 <= store.result(s.key)["test_miou"] <= 1
            assert store.checkpoint(s.parent).is_file()
    # One live offline W&B run per stage (in-trial stages: one file each), read through wandb's own reader.
    from mixsweep import tracking

    assert len(list((store.root / "wandb").glob("offline-run-*"))) == 6
    by_kind = {}
    for s in plan.stages:
        (folder,) = tracking.run_folders(store.root, tracking.run_id(s.key))
        run = tracking.read_offline_run(folder)
        assert [r["_step"] for r in run["history"]] == [0, 1] and run["exit_code"] == 0, s.key
        assert f"s{s.seed}" in run["tags"] and run["config"]["stage_key"] == s.key
        by_kind.setdefault(s.kind, []).append((s, run))
    for s, run in by_kind["pretrain"]:  # lineage: the checkpoint as a reference model artifact
        assert run["name"] == f"pre f{s.animal_fraction:.2f} s{s.seed}"
        (art,) = run["artifacts"]
        assert art["name"] == s.key and art["type"] == "model" and f"f{s.animal_fraction:.2f}" in art["aliases"]
        assert art["references"] == [store.checkpoint(s.key).as_uri()]
        assert run["config"]["inputs"][0]["reference"] == store.mixture_path(s.key).as_uri()
    for s, run in by_kind["finetune"]:
        assert run["config"]["parent_artifact"] == f"{s.parent}:latest"
        assert run["name"] == f"ft f{s.animal_fraction:.2f} n{s.finetune_fraction:.2f} s{s.seed}"
        assert run["summary"]["test_miou"] == pytest.approx(store.result(s.key)["test_miou"])


def test_rerun_runs_nothing(swept):
    from mixsweep.sweep.run import run_sweep

    root, path, _ = swept
    store = Store(root / "store")
    before, experiments = result_times(store), sorted((store.root / "tune").iterdir())
    plan = run_sweep(load_spec(path), str(path))
    assert plan.counts()["done"] == 6 and result_times(store) == before
    assert sorted((store.root / "tune").iterdir()) == experiments  # no Tune run at all: no trial started


def test_extending_the_grid_runs_only_the_new_points(swept):
    from mixsweep.sweep.run import run_sweep

    root, _, _ = swept
    store = Store(root / "store")
    before, packed = result_times(store), packs(store)
    wider = write_spec(root / "wider.yaml", root / "store", fractions=(0.0, 0.5, 1.0))
    plan = run_sweep(load_spec(wider), str(wider))
    after = result_times(store)
    assert packs(store) == packed, "F=0.5 lies inside the union of F=0 and F=1: no new pack"
    assert {k: after[k] for k in before} == before, "a finished stage ran again"
    new = set(after) - set(before)
    assert sorted(plan.by_key()[k].kind for k in new) == ["finetune", "finetune", "pretrain"]


def test_report_has_a_row_per_key_and_plots(swept):
    from mixsweep.cli import main

    root, path, plan = swept
    assert main(["report", str(path)]) == 0
    out = Store(root / "store").root / "reports" / "t"
    import pandas as pd

    table = pd.read_parquet(out / "results.parquet")
    assert set(table["key"]) == {s.key for s in plan.stages}
    for s in plan.stages:
        row = table[table["key"] == s.key].iloc[0]
        assert row["seed"] == s.seed and row["kind"] == s.kind
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert "| " in (out / "results.md").read_text()


def _files(root) -> dict[str, tuple[int, int]]:
    # wandb/ is left out: W&B's service process may still be flushing the previous test's report run.
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.relative_to(root).parts[0] != "wandb"}


def _device(root) -> str:
    (device,) = set(Store(root / "store").results_frame()["device"])
    return device


def test_a_process_renders_a_planned_world_once(tmp_path):
    """Plans of a store without its synthetic data read one set per world and process (a notebook that plans
    again renders nothing), render it again if that folder went away, and `run` copies it into the store."""
    from mixsweep.sweep import plan as planning
    from mixsweep.synth import synth_is_written

    spec = load_spec(write_spec(tmp_path / "s.yaml", tmp_path / "store"))
    world = (spec.data.synth.scale, spec.data.synth.seed, spec.data.synth.world)
    keys = {s.key for s in build_plan(spec, Store(spec.storage)).stages}
    held = Path(planning._PLAN_SYNTH[world].name)
    stamp = (held / "synth.json").stat().st_mtime_ns
    again = load_spec(write_spec(tmp_path / "t.yaml", tmp_path / "other-store"))
    assert {s.key for s in build_plan(again, Store(again.storage)).stages} == keys
    assert (held / "synth.json").stat().st_mtime_ns == stamp  # read, not rendered again
    assert not (tmp_path / "store").exists() and not (tmp_path / "other-store").exists()
    shutil.rmtree(held)
    assert {s.key for s in build_plan(again, Store(again.storage)).stages} == keys
    held = Path(planning._PLAN_SYNTH[world].name)
    assert synth_is_written(held, scale=world[0], seed=world[1], world=world[2])
    # `run` after a plan in the same process copies that set into the store instead of rendering it again.
    planning.write_spec_data(again, Store(again.storage))
    written = planning.synth_root(again, Store(again.storage))
    assert synth_is_written(written, scale=world[0], seed=world[1], world=world[2])
    files = sorted(p.relative_to(held) for p in held.rglob("*") if p.is_file() and p.name != "synth.json")
    assert files and files == sorted(p.relative_to(written) for p in written.rglob("*")
                                     if p.is_file() and p.name != "synth.json")
    for name in files[:: max(1, len(files) // 20)]:  # copied: same bytes, and the times of the copy's source
        assert (written / name).read_bytes() == (held / name).read_bytes()
        assert (written / name).stat().st_mtime_ns == (held / name).stat().st_mtime_ns


def test_plan_is_a_dry_run(swept, tmp_path, capsys):
    """`mixsweep plan` reads the data and the store and writes nothing: not into a store that ran, and not even
    the folder of one that does not exist yet (its synthetic world is generated elsewhere, for this process only)."""
    from mixsweep.cli import main

    root, path, plan = swept
    before = _files(root / "store")
    assert main(["plan", str(path), "--format", "json"]) == 0
    assert _files(root / "store") == before
    ran = json.loads(capsys.readouterr().out)
    statuses = {s["key"]: s["status"] for s in ran["stages"]}
    assert {k: statuses[k] for k in (s.key for s in plan.stages)} == {s.key: "done" for s in plan.stages}
    # Costs come from the stages the store holds, per method: measured loop, its parts and the overhead.
    assert sorted(ran["totals"]["cost_sources"]) == [
        "2 stages: pretrain tiny: measured on 2 finished stages (" + _device(root) + ")",
        "4 stages: mae tiny: measured on 4 finished stages (" + _device(root) + ")"]
    estimated = sum(r["gpu_hours"] * 3600 for r in ran["stages"])
    measured = sum(Store(root / "store").result(k)["stage_wall_s"] for k in statuses)
    assert 0.5 < estimated / measured < 2  # sums of medians against the sum: same stages, same machine
    from mixsweep.sweep.cost import estimate
    from mixsweep.sweep.run import estimate_line

    store = Store(root / "store")
    line = estimate_line(store, list(statuses), estimate(plan, load_spec(path), store).total(statuses))
    assert line.startswith("6 of 6 stages ran for ") and "estimated before the run" in line
    fresh = write_spec(tmp_path / "fresh.yaml", tmp_path / "new-store")
    assert main(["plan", str(fresh), "--format", "json"]) == 0
    assert not (tmp_path / "new-store").exists()
    out = json.loads(capsys.readouterr().out)
    rows = out["stages"]
    assert all("reference rates" in line for line in out["totals"]["cost_sources"])
    assert [r["key"] for r in rows] == [s.key for s in plan.stages]  # keys do not depend on where data lie
    assert {r["status"] for r in rows} == {"pending"}


def test_a_store_that_lost_its_disk_comes_back_from_the_mirror(swept):
    """Every finished stage, its W&B offline run and results.parquet are copied to the mirror as they finish;
    a fresh store with the same mirror pulls them back and runs nothing."""
    from mixsweep.sweep.run import run_sweep

    root, path, swept_plan = swept
    store = Store(root / "store")
    done = {s.key for s in swept_plan.stages}  # (the extension test's stages ran from a spec with no mirror)
    mirror = root / "mirror"
    assert {p.parent.name for p in (mirror / "stages").glob("*/result.json")} == done
    assert len(list((mirror / "stages").glob("pt-*/checkpoint/state.pt"))) == len([k for k in done if k.startswith("pt-")])
    assert (mirror / "results.parquet").is_file()
    assert len(list(mirror.rglob("offline-run-*"))) >= len(done)
    spec = yaml.safe_load(path.read_text())
    spec["storage"] = str(root / "new-disk")
    fresh = root / "fresh.yaml"
    fresh.write_text(yaml.safe_dump(spec))
    plan = run_sweep(load_spec(fresh), str(fresh))
    assert plan.counts() == {"done": 6, "failed": 0, "diverged": 0, "pending": 0}
    assert not (root / "new-disk" / "tune").exists()  # every stage came from the mirror: no trial ran
    new = Store(root / "new-disk")
    for s in plan.stages:
        assert new.result(s.key) == store.result(s.key)
        assert new.history(s.key) == store.history(s.key)


def test_report_reads_a_read_only_store(swept, tmp_path):
    """A store mounted read-only (a colleague's copy, an archive): the report goes to ./mixsweep-reports."""
    import shutil

    root, path, _ = swept
    store = root / "store"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount the store read-only")
    script = (f"mount --bind {store} {store} && mount -o remount,bind,ro {store} || exit 77; "
              f"touch {store}/probe 2>/dev/null && exit 78; cd {tmp_path} && {sys.executable} -m mixsweep.cli report {path}")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if proc.returncode == 77:
        pytest.skip(f"cannot mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert f"note: {store} is read-only; the report goes to {tmp_path / 'mixsweep-reports' / 't'}" in out
    assert (tmp_path / "mixsweep-reports" / "t" / "results.md").is_file()
    assert (tmp_path / "mixsweep-reports" / "t" / "effect.json").is_file()


def test_run_recovers_torn_results_checkpoints_mixtures_and_logs(swept, recwarn):
    """Damage a finished store as a kill, a full disk or a bad copy would, then `run` again: a fine-tune's torn
    result.json, its parent's torn checkpoint, the parent's truncated mixture, a torn line in the fine-tune's
    metrics log. The rerun moves the bad files aside, re-records the parent from its own run folder (nothing is
    trained again), resumes the fine-tune, and touches no other stage."""
    from mixsweep.sweep.run import run_sweep

    root, _, swept_plan = swept
    store = Store(root / "store")
    child = next(s for s in swept_plan.stages if s.kind == "finetune" and s.method == "mae")
    parent = child.parent
    history = store.history(child.key)
    before = result_times(store)
    (store.stage_dir(child.key) / "result.json").write_text('{"key": "' + child.key + '", "test_io')
    with open(store.checkpoint(parent), "r+b") as f:
        f.truncate(4096)
    mixture = store.mixture_path(parent)
    mixture.write_bytes(mixture.read_bytes()[:100])
    log = store.train_dir() / child.key / "metrics.jsonl"
    log.write_text(log.read_text() + '{"epoch": 9, "tra')
    again = write_spec(root / "again.yaml", root / "store")  # the swept spec without its mirror
    plan = run_sweep(load_spec(again), str(again))
    assert plan.counts() == {"done": 6, "failed": 0, "diverged": 0, "pending": 0}
    warned = " ".join(str(w.message) for w in recwarn)
    assert f"{store.stage_dir(child.key) / 'result.json'}: unreadable" in warned
    assert f"stage {parent}: {store.checkpoint(parent)}: not the file result.json recorded" in warned
    assert f"{mixture}: not a readable Parquet file" in warned
    # (the torn line's warning is the trial's: it goes to the trial's log, not this process)
    assert store.checkpoint_problem(parent) is None
    assert (store.stage_dir(child.key) / "result.json.corrupt").is_file()
    assert (store.stage_dir(parent) / "result.json.corrupt").is_file()
    assert store.history(child.key) == history  # every epoch once, the torn line gone
    after = result_times(store)
    assert {k for k in before if after[k] != before[k]} == {child.key, parent}


def test_a_diverged_pretraining_is_recorded_and_its_finetunes_never_start(ray_local, tmp_path, capsys):
    from mixsweep.sweep.run import run_sweep

    path = write_spec(tmp_path / "nan.yaml", tmp_path / "store", fractions=(1.0,), finetune=(1.0,))
    spec = yaml.safe_load(path.read_text())
    spec["pretrain"].update(blr=1e30, warmup_epochs=0)
    path.write_text(yaml.safe_dump(spec))
    plan = run_sweep(load_spec(path), str(path))
    assert plan.counts() == {"done": 0, "failed": 0, "diverged": 1, "pending": 1}
    (pre,) = [s for s in plan.stages if s.kind == "pretrain"]
    record = Store(tmp_path / "store").failure(pre.key)
    assert record["status"] == "diverged" and "train_loss is nan in epoch" in record["error"]
    assert "DIVERGED pretrain F=1.00 seed 0" in " ".join(capsys.readouterr().out.split())
    again = run_sweep(load_spec(path), str(path))
    assert again.counts()["diverged"] == 1
    assert "1 diverged earlier (rerun them with --retry-failed)" in " ".join(capsys.readouterr().out.split())


def test_a_half_copied_stage_is_not_pulled(tmp_path):
    local = Store(tmp_path / "a", mirror=str(tmp_path / "mirror"))
    local.record_result("pt-1", {"key": "pt-1"}, tmp_path, None)
    (local.stage_dir("pt-1") / "metrics.jsonl").write_text('{"epoch": 0}\n')
    local.push_stage("pt-1")
    assert local.unmirrored() == []
    (tmp_path / "mirror" / "stages" / "pt-2").mkdir()
    (tmp_path / "mirror" / "stages" / "pt-2" / "metrics.jsonl").write_text("{}\n")  # no result.json: cut short
    other = Store(tmp_path / "b", mirror=f"file://{tmp_path / 'mirror'}")
    assert other.pull() == ["pt-1"] and other.is_done("pt-1") and not other.stage_dir("pt-2").exists()
    assert other.history("pt-1") == [{"epoch": 0}]
    assert other.pull() == []  # already here


def _wait_for(condition, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _checkpointed_epoch(run_dir) -> int:
    """The newest complete checkpoint's epoch in a stage's run folder, -1 when none."""
    epochs = [json.loads((c / "meta.json").read_text())["epoch"] for c in run_dir.glob("checkpoint_*")
              if (c / "state.pt").is_file() and (c / "meta.json").is_file()]
    return max(epochs, default=-1)


def test_trial_kill_and_driver_kill_resume_the_interrupted_stage(ray_local, synth_small, tmp_path):
    """The fine-tune trains inside its Tune trial. SIGKILL that trial's process in epoch 1: Tune restarts the
    trial (max_failures), which resumes from epoch 0's checkpoint. Then SIGKILL `mixsweep run` in the resumed
    trial's epoch 2: the same command finishes the sweep, runs the finished pre-training 0 times and resumes
    the fine-tune again. Each epoch is in the curve once, each line the one first logged."""
    from mixsweep.sweep.run import run_sweep

    # 6 short epochs: after the driver's kill its trial trains on until Ray reaps it, and must not finish first.
    finetune = {"epochs": 6, "batch_size": 16, "warmup_epochs": 1, "blr": 1e-2}
    path = write_spec(tmp_path / "k.yaml", tmp_path / "store", fractions=(0.25,), finetune=(1.0,), max_failures=1)
    spec = yaml.safe_load(path.read_text())
    spec["finetune"] = finetune
    spec["data"] = synth_data_section(synth_small)  # the driver's process renders no world of its own
    path.write_text(yaml.safe_dump(spec))
    store = Store(tmp_path / "store")
    ft = next(s for s in build_plan(load_spec(path), store).stages if s.kind == "finetune")
    run_dir = store.train_dir() / ft.key
    ft_log, placement = run_dir / "metrics.jsonl", run_dir / "workers" / "rank0.json"
    address = ray_local.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "mixsweep.cli", "run", str(path), "--address", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # 1. Kill the trial's own process once epoch 0 is logged and checkpointed, i.e. during epoch 1.
        _wait_for(lambda: placement.is_file() and _checkpointed_epoch(run_dir) >= 0, "the fine-tune's epoch 0")
        trial_pid = json.loads(placement.read_text())["pid"]
        os.kill(trial_pid, signal.SIGKILL)
        before_trial_kill = ft_log.read_text().splitlines()
        # 2. Tune restarts the trial in a new process, which resumes; kill the driver once epoch 1 is checkpointed.
        _wait_for(lambda: json.loads(placement.read_text())["pid"] != trial_pid and _checkpointed_epoch(run_dir) >= 1,
                  "the restarted trial's epoch 1")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before_driver_kill = ft_log.read_text().splitlines()
    finished = result_times(store)
    assert len(before_trial_kill) == 1 and 2 <= len(before_driver_kill) < 6 and len(finished) == 1, \
        "the kills should land inside the fine-tune"
    plan = run_sweep(load_spec(path), str(path))
    assert plan.counts() == {"done": 2, "failed": 0, "diverged": 0, "pending": 0}
    after = result_times(store)
    assert {k: after[k] for k in finished} == finished, "the finished pre-training ran again"
    # Resumed twice, never restarted: epochs 0 and 1 are the lines logged before the kills.
    history = store.history(ft.key)
    assert [m["epoch"] for m in history] == [0, 1, 2, 3, 4, 5]
    lines = ft_log.read_text().splitlines()
    assert lines[0] == before_trial_kill[0] and lines[1] == before_driver_kill[1]
    result = store.result(ft.key)
    assert result["in_trial"] and result["loop_s"] > 0
    # Its live W&B run: one id over the three attempts, each epoch once (lost rows backfilled from the log).
    from mixsweep import tracking

    runs = [tracking.read_offline_run(f) for f in tracking.run_folders(store.root, tracking.run_id(ft.key))]
    # (a killed attempt's file may hold nothing yet: wandb had not flushed it)
    assert 2 <= len(runs) <= 3 and {r["run_id"] for r in runs} - {None} == {tracking.run_id(ft.key)}
    assert sorted(r["_step"] for run in runs for r in run["history"]) == [0, 1, 2, 3, 4, 5]
    assert runs[-1]["exit_code"] == 0


def _break_animal_images(synth, dest):
    """A copy of the synthetic COCO + Pets in which every animal image in train2017 is garbage bytes."""
    import shutil

    from mixsweep.data.coco import build_coco_index

    shutil.copytree(synth.root, dest)
    index, _ = build_coco_index(synth.coco_train_annotations, synth.coco_train_images)
    broken = [dest / "coco" / "train2017" / f for f in index.filter(index.column("is_animal")).column("file_name").to_pylist()]
    originals = {p: p.read_bytes() for p in broken}
    for p in broken:
        p.write_bytes(b"not a jpeg")
    return originals


def test_deterministic_failure_is_recorded_once_and_retried_only_when_asked(ray_local, synth_small, tmp_path, capsys):
    """Also the sweep's TorchTrainer path: the pre-training has 2 workers, so its trial (on the head) drives a
    TorchTrainer, while the fine-tunes train in their trials."""
    from mixsweep.sweep.run import run_sweep

    originals = _break_animal_images(synth_small, tmp_path / "data")
    path = write_spec(tmp_path / "f.yaml", tmp_path / "store", fractions=(1.0,), finetune=(1.0,),
                      baselines=("supervised_mae",))
    spec = yaml.safe_load(path.read_text())
    spec["data"] = {"coco_annotations": "data/coco/annotations/instances_train2017.json",
                    "coco_images": "data/coco/train2017", "pets_root": "data/pets"}
    spec["resources"]["pretrain"] = {"num_workers": 2, "cpus_per_worker": 1}
    path.write_text(yaml.safe_dump(spec))
    plan = run_sweep(load_spec(path), str(path))
    by_kind = {(s.kind, s.method): s for s in plan.stages}
    pre = by_kind[("pretrain", "mae")]
    # The bad stage fails with its key and a one-line reason; the baseline still ran; the child is pending.
    assert plan.counts() == {"done": 1, "failed": 1, "diverged": 0, "pending": 1}
    failure = Store(tmp_path / "store").failure(pre.key)
    assert failure["key"] == pre.key and "none of its" in failure["error"] and "not a jpeg" not in failure["error"]
    assert "train2017" in failure["error"]
    failed_at = (Store(tmp_path / "store").stage_dir(pre.key) / "failed.json").stat().st_mtime_ns
    from mixsweep import tracking

    (failed_run,) = [tracking.read_offline_run(f) for f in tracking.run_folders(tmp_path / "store", pre.key)]
    assert failed_run["exit_code"] == 1 and "none of its" in failed_run["summary"]["error"]
    # The same command again does not retry it, and says how to.
    capsys.readouterr()
    again = run_sweep(load_spec(path), str(path))
    assert again.counts() == {"done": 1, "failed": 1, "diverged": 0, "pending": 1}
    out = " ".join(capsys.readouterr().out.split())
    assert "1 failed earlier (rerun them with --retry-failed), 1 waiting on a failed pre-training" in out
    assert (Store(tmp_path / "store").stage_dir(pre.key) / "failed.json").stat().st_mtime_ns == failed_at
    # Fix the data (the pack's key follows the files' sizes and times), ask for a retry: both stages run.
    for p, data in originals.items():
        p.write_bytes(data)
    fixed = run_sweep(load_spec(path), str(path), retry_failed=True)
    assert fixed.counts() == {"done": 3, "failed": 0, "diverged": 0, "pending": 0}
    # The TorchTrainer stage: its trial on the head, its 2 workers on worker nodes, its loop timed by rank 0.
    row = Store(tmp_path / "store").result(pre.key)
    nodes = node_ids(ray_local)
    assert not row["in_trial"] and row["trial_node"] == nodes["head"]
    assert set(row["worker_nodes"].split(",")) <= nodes["workers"]
    assert 0 < row["loop_s"] < row["stage_wall_s"]
    assert abs(row["overhead_s"] - (row["stage_wall_s"] - row["loop_s"])) < 1e-9
    # Its W&B run: the failure, rank 0's live run, then its model artifact, all one id; each epoch once.
    runs = [tracking.read_offline_run(f) for f in tracking.run_folders(tmp_path / "store", pre.key)]
    assert {r["run_id"] for r in runs} == {pre.key} and runs[-1]["exit_code"] == 0
    assert sorted(r["_step"] for run in runs for r in run["history"]) == list(range(len(Store(tmp_path / "store").history(pre.key))))
    assert [a["name"] for run in runs for a in run["artifacts"]] == [pre.key]
    # The data roots gone (a store copied to a laptop): report and results read the store alone.
    from mixsweep.cli import main

    (tmp_path / "data").rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"made with: 3 stage(s): mixsweep {__import__('mixsweep').__version__}" in out
    assert "Made with" in (Store(tmp_path / "store").root / "reports" / "t" / "results.md").read_text()
    assert main(["results", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["key"] for r in rows} == {s.key for s in fixed.stages} and {r["status"] for r in rows} == {"done"}
    # A spec the store has no record of cannot be planned without its data: one line says which root is gone.
    other = yaml.safe_load(path.read_text())
    other["finetune"]["epochs"] = 5
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert main(["report", str(tmp_path / "other.yaml")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"data.coco_annotations: {tmp_path / 'data'}" in err and "has no record of this spec's stages" in err
    # `run` needs the data.
    assert main(["run", str(path)]) == 2 and "missing data root" in capsys.readouterr().err


def test_the_readmes_python_example_runs_as_written(swept):
    """The README's Python API example, on the swept spec instead of smoke.yaml: every stage is in the store,
    so run() trains nothing."""
    import re
    from pathlib import Path

    root, path, plan = swept
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (code,) = re.findall(r"```python\n(from mixsweep import Sweep\n.*?)```", readme, re.S)
    assert code.count('"sweeps/smoke.yaml"') == 1
    before = result_times(Store(root / "store"))
    scope: dict = {}
    exec(code.replace('"sweeps/smoke.yaml"', repr(str(path))), scope)
    assert result_times(Store(root / "store")) == before  # nothing ran again
    assert set(scope["plan"]["status"]) == {"done"} and len(scope["plan"]) == len(plan.stages)
    assert len(scope["results"]) == len(plan.stages) and scope["verdict"] in ("detected", "not detected")
    assert scope["paths"]["results.md"].is_file() and scope["plan"]["gpu_hours"].gt(0).all()


def test_recipe_axes_run_extend_and_report_per_value(swept):
    """A pre-training axis and a fine-tune axis added to the swept store at once: the run trains exactly the
    new stages (the sections' own values are the stages that ran; a fine-tune axis adds no pre-training), and
    the report is per axis value."""
    from mixsweep import tracking
    from mixsweep.cli import main
    from mixsweep.sweep.run import run_sweep

    root, _, _ = swept
    store = Store(root / "store")
    path = write_spec(root / "axes.yaml", root / "store", finetune=(1.0,))
    data = yaml.safe_load(path.read_text())
    data["grid"]["pretrain.epochs"] = [2, 3]
    data["grid"]["finetune.blr"] = [1e-2, 2e-2]
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # facets follow the spec's order
    before = result_times(store)
    plan = run_sweep(load_spec(path), str(path))
    after = result_times(store)
    assert {k: after[k] for k in before} == before, "a finished stage ran again"
    added = set(after) - set(before)
    assert plan.counts()["done"] == 12 and len(added) == 8
    ran = sorted((plan.by_key()[k].kind, plan.by_key()[k].axes["pretrain.epochs"],
                  plan.by_key()[k].axes.get("finetune.blr")) for k in added)
    # 2 pre-trainings of 3 epochs (one per fraction), and every fine-tune but the 2 the swept grid holds
    assert ran == sorted([("pretrain", 3, None)] * 2 + [("finetune", 2, 2e-2)] * 2
                         + [("finetune", 3, 1e-2)] * 2 + [("finetune", 3, 2e-2)] * 2), ran
    # W&B: the axis values are config entries and tags of each new run.
    for key in (k for k in added if plan.by_key()[k].kind == "finetune"):
        (folder,) = tracking.run_folders(store.root, tracking.run_id(key))
        run = tracking.read_offline_run(folder)
        axes = plan.by_key()[key].axes
        assert run["config"]["finetune.blr"] == axes["finetune.blr"]
        assert f"finetune.blr={axes['finetune.blr']:g}" in run["tags"]
        assert f"pretrain.epochs={axes['pretrain.epochs']}" in run["tags"]
    assert main(["report", str(path)]) == 0
    out = store.root / "reports" / "t"
    import pandas as pd

    table = pd.read_parquet(out / "results.parquet")
    assert set(table["key"]) == {s.key for s in plan.stages}
    ft = table[table["kind"] == "finetune"]
    assert set(zip(ft["pretrain.epochs"], ft["finetune.blr"])) == {(2, 1e-2), (2, 2e-2), (3, 1e-2), (3, 2e-2)}
    assert table.loc[table["kind"] == "pretrain", "finetune.blr"].isna().all()  # a fine-tune axis: no pretrain value
    primary = [e for e in json.loads((out / "effect.json").read_text()) if e["role"] == "primary"]
    assert sorted((e["axes"]["pretrain.epochs"], e["axes"]["finetune.blr"]) for e in primary) == [
        (2, 1e-2), (2, 2e-2), (3, 1e-2), (3, 2e-2)]
    assert (out / "by_axis.png").stat().st_size > 1000
    assert {p.name for p in (out / "facets").iterdir()} == {
        f"pretrain.epochs={e}_finetune.blr={b}" for e in (2, 3) for b in (0.01, 0.02)}
    assert all((p / "iou_vs_fraction.png").is_file() for p in (out / "facets").iterdir())
