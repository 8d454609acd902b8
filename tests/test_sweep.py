"""Sweeps: content keys and plans (no Ray), then real Ray Tune runs that reuse, extend and survive a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import HEAD_RESOURCE, node_ids
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
                      "trial_resources": {HEAD_RESOURCE: 1}},  # drivers on the head, as on a real cluster
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


# --- real sweeps on a local Ray instance ------------------------------------------------------------

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
    assert plan.counts() == {"done": 6, "failed": 0, "pending": 0}
    rows = store.results_frame()
    # Multi-node: every trial (Tune + Train drivers) on the head, every Train worker on a worker node.
    nodes = node_ids(ray_local)
    assert set(rows["trial_node"]) == {nodes["head"]}
    assert set(rows["worker_nodes"]) <= nodes["workers"]
    assert (rows["kind"] == "pretrain").sum() == 2 and (rows["kind"] == "finetune").sum() == 4
    for s in plan.stages:
        history = store.history(s.key)
        assert [m["epoch"] for m in history] == [0, 1], s.key
        if s.kind == "finetune":
            assert 0 <= store.result(s.key)["test_miou"] <= 1
            assert store.checkpoint(s.parent).is_file()
    # One offline W&B run per stage, with its per-epoch history readable through wandb's own files.
    from mixsweep.sweep.tracking import read_offline_history

    runs = sorted((store.root / "wandb").glob("offline-run-*"))
    assert len(runs) == 6
    histories = [read_offline_history(r) for r in runs]
    assert all(len(h) == 2 for h in histories)


def test_rerun_runs_nothing(swept):
    from mixsweep.sweep.run import run_sweep

    root, path, _ = swept
    store = Store(root / "store")
    before = result_times(store)
    t0 = time.time()
    plan = run_sweep(load_spec(path), str(path))
    assert plan.counts()["done"] == 6 and result_times(store) == before
    assert time.time() - t0 < 30  # no Tune run at all


def test_extending_the_grid_runs_only_the_new_points(swept):
    from mixsweep.sweep.run import run_sweep

    root, _, _ = swept
    store = Store(root / "store")
    before = result_times(store)
    wider = write_spec(root / "wider.yaml", root / "store", fractions=(0.0, 0.5, 1.0))
    plan = run_sweep(load_spec(wider), str(wider))
    after = result_times(store)
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
    t0 = time.time()
    plan = run_sweep(load_spec(fresh), str(fresh))
    assert plan.counts() == {"done": 6, "failed": 0, "pending": 0} and time.time() - t0 < 60
    new = Store(root / "new-disk")
    for s in plan.stages:
        assert new.result(s.key) == store.result(s.key)
        assert new.history(s.key) == store.history(s.key)


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


def test_driver_kill_then_rerun_resumes_the_interrupted_stage(ray_local, tmp_path):
    """SIGKILL `mixsweep run` in the middle of the fine-tune; the same command finishes the sweep, runs the
    finished pre-training 0 times and resumes the fine-tune from its checkpoint."""
    from mixsweep.sweep.run import run_sweep

    finetune = {"epochs": 4, "batch_size": 16, "warmup_epochs": 1, "blr": 1e-2}
    path = write_spec(tmp_path / "k.yaml", tmp_path / "store", fractions=(0.25,), finetune=(1.0,))
    spec = yaml.safe_load(path.read_text())
    spec["finetune"] = finetune
    path.write_text(yaml.safe_dump(spec))
    store = Store(tmp_path / "store")
    ft = next(s for s in build_plan(load_spec(path), store).stages if s.kind == "finetune")
    ft_log = store.train_dir() / ft.key / "metrics.jsonl"
    address = ray_local.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "mixsweep.cli", "run", str(path), "--address", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    # Kill once epoch 0 is logged and its checkpoint is in the run folder, i.e. during epoch 1.
    while time.time() < deadline and not (ft_log.is_file() and ft_log.read_text().strip()
                                          and list(ft_log.parent.glob("checkpoint_*/state.pt"))):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = ft_log.read_text().splitlines()
    finished = result_times(store)
    assert 1 <= len(before_kill) < 4 and len(finished) == 1, "the kill should land inside the fine-tune"
    plan = run_sweep(load_spec(path), str(path))
    assert plan.counts() == {"done": 2, "failed": 0, "pending": 0}
    after = result_times(store)
    assert {k: after[k] for k in finished} == finished, "the finished pre-training ran again"
    # Resumed, not restarted: epoch 0's line (with its wall time) is the one logged before the kill.
    history = store.history(ft.key)
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]
    assert ft_log.read_text().splitlines()[0] == before_kill[0]


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
    from mixsweep.sweep.run import run_sweep

    originals = _break_animal_images(synth_small, tmp_path / "data")
    path = write_spec(tmp_path / "f.yaml", tmp_path / "store", fractions=(1.0,), finetune=(1.0,),
                      baselines=("supervised_mae",))
    spec = yaml.safe_load(path.read_text())
    spec["data"] = {"coco_annotations": "data/coco/annotations/instances_train2017.json",
                    "coco_images": "data/coco/train2017", "pets_root": "data/pets"}
    path.write_text(yaml.safe_dump(spec))
    plan = run_sweep(load_spec(path), str(path))
    by_kind = {(s.kind, s.method): s for s in plan.stages}
    pre = by_kind[("pretrain", "mae")]
    # The bad stage fails with its key and a one-line reason; the baseline still ran; the child is pending.
    assert plan.counts() == {"done": 1, "failed": 1, "pending": 1}
    failure = Store(tmp_path / "store").failure(pre.key)
    assert failure["key"] == pre.key and "none of its" in failure["error"] and "not a jpeg" not in failure["error"]
    assert "train2017" in failure["error"]
    failed_at = (Store(tmp_path / "store").stage_dir(pre.key) / "failed.json").stat().st_mtime_ns
    # The same command again does not retry it, and says how to.
    capsys.readouterr()
    again = run_sweep(load_spec(path), str(path))
    assert again.counts() == {"done": 1, "failed": 1, "pending": 1}
    out = " ".join(capsys.readouterr().out.split())
    assert "1 failed earlier (rerun them with --retry-failed), 1 waiting on a failed pre-training" in out
    assert (Store(tmp_path / "store").stage_dir(pre.key) / "failed.json").stat().st_mtime_ns == failed_at
    # Fix the data (the pack's key follows the files' sizes and times), ask for a retry: both stages run.
    for p, data in originals.items():
        p.write_bytes(data)
    fixed = run_sweep(load_spec(path), str(path), retry_failed=True)
    assert fixed.counts() == {"done": 3, "failed": 0, "pending": 0}
