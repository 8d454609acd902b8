"""Run a sweep with Ray Tune: one trial per pending stage. A stage with one CPU worker trains inside its trial;
a larger one (several workers, a GPU) launches a Ray Train TorchTrainer from it.

The Tune searcher is the scheduler: it hands out a stage only when its parent pre-training is done, so
every fine-tune starts as soon as its parent exists, and as many stages run at once as the cluster fits.
Each stage's run folder (train/<key>) is named by its key under the store, so an interrupted stage resumes
from its own checkpoint, and a finished key (result.json in the store) never runs again. A new Tuner is built on every
`mixsweep run`: Tune's own restore would ignore an extended grid.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import statistics
import time
import traceback
from pathlib import Path

from ray.tune import Callback
from ray.tune.search import Searcher
from rich.console import Console

from mixsweep.errors import MixsweepError
from mixsweep.sweep.plan import Plan, Stage, build_grid_pack, build_plan
from mixsweep.sweep.store import Store

console = Console(highlight=False)


def stage_job(stage: Stage, spec, store: Store) -> dict:
    """The full job config of a stage: its plan job plus run settings under the store and its live W&B run."""
    from mixsweep import tracking

    resources = spec.resources.pretrain if stage.kind == "pretrain" else spec.resources.finetune
    return {**stage.job, "scaling": resources.model_dump(mode="json"),
            "run": {"name": stage.key, "storage": spec.train_storage or str(store.train_dir()),
                    "artifacts": str(store.train_dir() / stage.key), "checkpoint_every": spec.checkpoint_every,
                    "pictures_every": spec.pictures_every, "max_failures": spec.max_failures},
            "tracking": {**spec.wandb.model_dump(mode="json"), "root": str(store.root),
                         "run_id": tracking.run_id(stage.key), "name": run_name(stage), "group": spec.name,
                         "job_type": stage.job_type, "tags": run_tags(stage),
                         "config": {**stage.row(), "stage_key": stage.key, "job": stage.job,
                                    **stage_inputs(stage, store)}}}


def run_name(stage: Stage) -> str:
    """The W&B run name: `pre f0.50 s0`, `ft f0.50 n0.25 s0`, `base resnet18 n1.00 s0`."""
    if stage.kind == "pretrain":
        return f"pre f{stage.animal_fraction:.2f} s{stage.seed}"
    if stage.method == "mae":
        return f"ft f{stage.animal_fraction:.2f} n{stage.finetune_fraction:.2f} s{stage.seed}"
    return f"base {stage.method} n{stage.finetune_fraction:.2f} s{stage.seed}"


def run_tags(stage: Stage) -> list[str]:
    """Tags to filter on in W&B (its group-by and average-over-seeds read the config's grid values)."""
    tags = [stage.job_type, stage.method, f"s{stage.seed}"]
    if stage.animal_fraction is not None:
        tags.append(f"f{stage.animal_fraction:.2f}")
    if stage.finetune_fraction is not None:
        tags.append(f"n{stage.finetune_fraction:.2f}")
    return tags


def stage_inputs(stage: Stage, store: Store) -> dict:
    """The W&B artifacts a stage reads: a pre-training its mixture's image list (a dataset artifact by reference);
    an MAE fine-tune its parent's model artifact. Online runs declare them at start, offline ones at `mixsweep sync`."""
    if stage.kind == "pretrain":
        return {"inputs": [{"name": f"mixture-{stage.key}", "type": "dataset",
                            "reference": store.mixture_path(stage.key).as_uri()}]}
    if stage.parent is not None:
        return {"parent_artifact": f"{stage.parent}:latest", "inputs": [{"name": f"{stage.parent}:latest"}]}
    return {"inputs": []}


def stage_outputs(key: str, row: dict, store: Store, job) -> list[dict]:
    """The model artifact of a finished stage, by reference: a pre-training's checkpoint in the store (what its
    fine-tunes start from), a fine-tune's newest checkpoint in the train storage."""
    from mixsweep.train.ray_jobs import newest_checkpoint_uri, storage_root

    if row["kind"] == "pretrain":
        reference = store.checkpoint(key).parent.as_uri()
    else:
        reference = newest_checkpoint_uri(storage_root(job), job.run.name)
    if reference is None:
        return []
    aliases = [f"s{row['seed']}"] + [f"{p}{row[c]:.2f}" for p, c in (("f", "animal_fraction"), ("n", "finetune_fraction"))
                                     if isinstance(row.get(c), float) and row[c] == row[c]]
    meta = {k: row.get(k) for k in ("kind", "method", "seed", "animal_fraction", "finetune_fraction", "preset")}
    return [{"name": key, "type": "model", "reference": reference, "aliases": aliases, "metadata": meta}]


def _final_metrics(result: dict) -> dict:
    from mixsweep.train.loop import load_state

    if result.get("checkpoint"):
        return dict(load_state(result["checkpoint"]).get("metrics", {}))
    return dict(result.get("metrics") or {})


def run_stage(config: dict) -> dict:
    """A Tune trial: train one stage (or find it done), record it in the store, log it to W&B.

    A one-CPU-worker stage trains right here (`run_in_trial`); a larger one launches a TorchTrainer and waits.
    A failure is recorded once (failed.json with this trial's id) and the trial ends normally with a "failed"
    result, so Tune does not run it again, except for an in-trial stage whose training raised something other
    than a MixsweepError: that is raised to Tune, which retries it (FailureConfig.max_failures) from its last
    checkpoint, as Ray Train does for a worker. A trial whose process dies is Tune's retry too.
    """
    import ray
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mixsweep import tracking
    from mixsweep.train.config import parse_job
    from mixsweep.train.ray_jobs import read_placement, run_in_trial, run_with_ray, runs_in_trial

    t0 = time.time()
    store = Store(config["store"], config.get("mirror"))
    key, row = config["key"], config["row"]
    if store.is_done(key):
        ray.tune.report(store.result(key))
        return
    in_trial, live, job = False, None, None
    tracker = tracking.Tracker(**config["wandb"], root=store.root)
    try:
        job = parse_job(config["job"], f"stage {key}")
        in_trial = runs_in_trial(job.scaling)
        if in_trial:
            result = run_in_trial(job)
            live = result.get("live")
        else:
            result = run_with_ray(job, source=f"stage {key}", callbacks=[TuneReportCallback()], check=False)
        metrics = _final_metrics(result)
    except Exception as e:  # recorded once with its key; the sweep goes on with the other stages
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500]
        store.record_failure(key, {**row, "trial_id": ray.tune.get_context().get_trial_id()}, message)
        (store.stage_dir(key) / "traceback.txt").write_text(traceback.format_exc())
        if not getattr(e, "wandb_logged", False):  # else the stage's live run already ended as failed
            tracking.log_failure(tracker, key=key, name=config["name"], group=config["group"],
                                 job_type=config["job_type"], error=message)
        _push(store, key)
        if in_trial and not isinstance(e, MixsweepError):
            raise  # Tune retries the trial; a later success replaces failed.json with result.json
        ray.tune.report({"key": key, "status": "failed", "error": message})
        return
    placement = {"trial_node": ray.get_runtime_context().get_node_id(),
                 "worker_nodes": ",".join(sorted({w["node_id"] for w in read_placement(result["run_dir"])}))}
    timing = stage_timing(config.get("handed_out_at", t0), t0, result.get("loop_s"))
    final = store.record_result(key, {**row, **metrics, **placement, **timing, "in_trial": in_trial,
                                      "wall_seconds": time.time() - t0},
                                result["run_dir"],
                                result["checkpoint"] if job.kind == "pretrain" else None)
    outputs = stage_outputs(key, row, store, job)
    if live is not None:  # the stage's live run, still open: its model artifact, then its end
        live.log_outputs(outputs)
        live.close(summary=metrics)
    elif job.tracking is not None:  # a TorchTrainer's rank 0 finished the live run: add the artifact to it
        tracking.log_outputs(tracker, key=key, artifacts=outputs)
    _push(store, key, tracking.run_folders(store.root, tracking.run_id(key)))
    ray.tune.report(final)


def stage_timing(handed_out_at: float, started_at: float, loop_s: float | None) -> dict:
    """What a stage cost beyond its training loop. stage_wall_s runs from the searcher handing the stage to Tune
    (driver clock) to its result being recorded; start_s is the part before the trial function ran (actor start
    or reuse, scheduling); loop_s is the time inside `fit`; overhead_s = stage_wall_s - loop_s."""
    wall = time.time() - handed_out_at
    return {"stage_wall_s": wall, "start_s": started_at - handed_out_at,
            "loop_s": loop_s if loop_s is not None else math.nan,
            "overhead_s": wall - loop_s if loop_s is not None else math.nan}


def _push(store: Store, key: str, wandb_runs: list[Path] = ()) -> None:
    """Copy the stage (and its W&B offline runs) to the mirror; a failure is a warning: the stage is done."""
    try:
        for folder in wandb_runs:
            if Path(folder).is_relative_to(store.root):
                store.push(Path(folder), Path(folder).relative_to(store.root).as_posix())
        store.push_stage(key)
    except Exception as e:  # the mirror is a copy; its trouble must not fail a finished stage
        _print(f"warning: mirror {store.mirror}: stage {key} not copied ({type(e).__name__}: {e}); "
               "the next run copies it")


class StageSearcher(Searcher):
    """Suggests a stage only once its parent is done; FINISHED when nothing more can run."""

    def __init__(self, configs: list[dict], done: set[str]):
        super().__init__(metric=None, mode=None)
        self.queue = list(configs)
        self.done = set(done)
        self.failed: set[str] = set()
        self.trials: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        for i, cfg in enumerate(self.queue):
            parent = cfg["parent"]
            if parent is None or parent in self.done:
                self.queue.pop(i)
                self.trials[trial_id] = cfg["key"]
                return {**cfg, "handed_out_at": time.time()}  # a stage's wall starts here (stage_timing)
        # Children of a failed parent can never run: drop them so the sweep can finish.
        self.queue = [c for c in self.queue if c["parent"] not in self.failed]
        return Searcher.FINISHED if not self.queue and not self._running() else None

    def _running(self) -> bool:
        return any(k not in self.done and k not in self.failed for k in self.trials.values())

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        key = self.trials.get(trial_id)
        if key is not None:
            (self.failed if error or _failed(result) else self.done).add(key)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))


def _failed(result: dict | None) -> bool:
    """A trial that recorded its stage's failure ends normally (so Tune does not retry it), with this result."""
    return bool(result) and result.get("status") == "failed"


class StageProgress(Callback):
    """One line per stage start / finish with the running totals: done, running, pending, failed. A trial
    that Tune gives up on (its process died every time) gets its failed.json here, if it wrote none itself."""

    def __init__(self, total: int, done: int, names: dict[str, str], store: Store | None = None):
        self.total, self.names, self.store = total, names, store
        self.done, self.running, self.failed = done, 0, 0

    def _line(self, verb: str, trial) -> None:
        key = trial.config.get("key", "?")
        pending = self.total - self.done - self.running - self.failed
        _print(f"[{self.done}/{self.total} done, {self.running} running, {pending} pending, {self.failed} failed] "
               f"{verb} {self.names.get(key, key)}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1
        self._line("started", trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _failed(trial.last_result):
            return self.on_trial_error(iteration, trials, trial)
        self.running, self.done = self.running - 1, self.done + 1
        self._line("finished", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running, self.failed = self.running - 1, self.failed + 1
        self._line("FAILED", trial)
        key = trial.config.get("key")
        if self.store is None or key is None:
            return
        recorded = self.store.failure(key)
        if recorded is None or recorded.get("trial_id") != trial.trial_id:
            error = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
            lines = [line.strip() for line in error.splitlines() if line.strip()]
            self.store.record_failure(key, {**trial.config.get("row", {}), "trial_id": trial.trial_id},
                                      f"the trial failed {trial.run_metadata.num_failures} time(s); last: "
                                      f"{lines[-1] if lines else 'no error text'}"[:500])


def _print(text: str) -> None:
    Console(highlight=False, soft_wrap=True).print(text, markup=False)  # a fresh Console: the callback must pickle


def stage_name(stage: Stage) -> str:
    if stage.kind == "pretrain":
        return f"pretrain F={stage.animal_fraction:.2f} seed {stage.seed}"
    what = f"F={stage.animal_fraction:.2f}" if stage.method == "mae" else stage.method
    return f"finetune {what} s={stage.finetune_fraction:.2f} seed {stage.seed}"


def trial_request(scaling, resources) -> dict[str, float]:
    """What a stage's Tune trial asks for. A stage that trains in its trial holds its one worker's resources (the
    trial IS the worker; trial_cpus and trial_resources, meant for a driver, do not apply). A TorchTrainer
    stage's trial only waits on its trainer: trial_cpus plus trial_resources, or a sliver of a CPU (Ray refuses
    an empty request)."""
    from mixsweep.train.ray_jobs import runs_in_trial

    if runs_in_trial(scaling):
        return scaling.resources_per_worker()
    request = {"CPU": resources.trial_cpus, **resources.trial_resources}
    request = {k: v for k, v in request.items() if v}
    return request or {"CPU": 0.01}


def _trial_resources(config: dict):
    """Tune's per-trial resource callback: the request stage_job put in the config."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([config["trial_request"]])


def concurrency(spec) -> int:
    """How many stages fit on the cluster at once (by the larger of the two stage kinds)."""
    from mixsweep.train.ray_jobs import alive_node_resources, check_resources, runs_in_trial, worker_slots

    for scaling in (spec.resources.pretrain, spec.resources.finetune):
        check_resources(scaling)
    nodes = alive_node_resources()
    trainer_stages = not all(runs_in_trial(s) for s in (spec.resources.pretrain, spec.resources.finetune))
    for name, amount in spec.resources.trial_resources.items() if trainer_stages else ():
        if not any(res.get(name, 0) >= amount for res in nodes):
            raise MixsweepError(f"resources.trial_resources: no node has {amount:g} {name!r} (start the head "
                                f"with resources: {{{name}: 1000}}, as in cluster.yaml), so no trial could start")
    fits = [max(1, worker_slots(s, nodes) // s.num_workers) for s in (spec.resources.pretrain, spec.resources.finetune)]
    return max(1, min(fits))


def run_sweep(spec, spec_path: str, address: str | None = None, retry_failed: bool = False) -> Plan:
    """Run every pending stage of the spec; returns the plan with statuses after the run."""
    from ray import tune

    from mixsweep.train.ray_jobs import ensure_ray, runs_in_trial

    store = Store(spec.storage, spec.mirror)
    store.check_writable()
    pulled = store.pull()
    if pulled:
        console.print(f"{spec.name}: {len(pulled)} finished stages copied back from the mirror {spec.mirror}")
    plan = build_plan(spec, store)
    pending = [s for s in plan.stages if s.status == "pending" or (retry_failed and s.status == "failed")]
    done = {s.key for s in plan.stages if s.status == "done"}
    skipped = {s.key for s in plan.stages if s.status == "failed" and not retry_failed}
    # A fine-tune whose parent failed earlier can never start: leave it out, or Tune would wait for it forever.
    blocked = [s for s in pending if s.parent in skipped]
    pending = [s for s in pending if s.parent not in skipped]
    console.print(f"{spec.name}: {len(plan.stages)} stages, {len(done)} done, {len(pending)} to run"
                  + (f", {len(skipped)} failed earlier (rerun them with --retry-failed)" if skipped else "")
                  + (f", {len(blocked)} waiting on a failed pre-training" if blocked else ""))
    if not pending:
        _write_results(store)
        return plan
    pack = build_grid_pack(plan, pending, progress=True)
    if pack is not None:
        how = ("found" if pack.built is None or pack.built["reused"] else
               f"built: {pack.built['decoded']} decoded, {pack.built['copied']} copied from earlier packs")
        console.print(f"{spec.name}: pre-training pack of {len(pack)} images (every mixture of the grid) {how}")
    # Worker logs stay in Ray's session logs (and a failed stage's traceback.txt): the terminal shows progress.
    ensure_ray(address, quiet=True)
    # Tune's default CSV/JSON/TensorBoard loggers duplicate the store and W&B, and warn on NaN metrics.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    k = concurrency(spec)
    configs, all_in_trial = [], True
    for s in pending:
        scaling = spec.resources.pretrain if s.kind == "pretrain" else spec.resources.finetune
        all_in_trial = all_in_trial and runs_in_trial(scaling)
        configs.append({"key": s.key, "parent": s.parent, "row": s.row(), "job": stage_job(s, spec, store),
                        "store": str(store.root), "mirror": spec.mirror, "name": run_name(s), "group": spec.name,
                        "job_type": s.job_type, "wandb": spec.wandb.model_dump(mode="json"),
                        "trial_request": trial_request(scaling, spec.resources)})
    searcher = StageSearcher(configs, done)
    progress = StageProgress(len(plan.stages), len(done), {s.key: stage_name(s) for s in plan.stages}, store)
    # In-trial stages: a finished trial's process takes the next stage (torch and the model code stay imported).
    # Trials that drive a TorchTrainer each get a fresh process, as before.
    tuner = tune.Tuner(
        tune.with_resources(run_stage, _trial_resources),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(configs), max_concurrent_trials=k,
                                    reuse_actors=all_in_trial),
        # max_failures: Tune restarts an in-trial stage whose process died (or whose training raised), from its
        # last checkpoint; a TorchTrainer stage's workers are restarted by Ray Train, and its trial reports a
        # failure instead of raising, so Tune does not run it again.
        run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time())}", storage_path=str(store.root / "tune"),
                                  callbacks=[progress], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
    )
    # Results live in the store and W&B, so Tune's own result files are off; its ResultGrid would then warn
    # once per trial (36 lines for the demo) that they are missing.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner.fit()
    _write_results(store)
    after = build_plan(spec, store, write_mixtures=False)
    counts = after.counts()
    console.print(f"{spec.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending; "
                  f"results in {store.root / 'results.parquet'}")
    line = overhead_line(store, [c["key"] for c in configs])
    if line:
        console.print(f"{spec.name}: {line}")
    return after


def overhead_line(store: Store, keys: list[str]) -> str | None:
    """'median overhead 1.2 s per stage over 24 stages (…)' for the stages of `keys` that finished."""
    rows = [r for r in (store.result(k) for k in keys) if r and isinstance(r.get("overhead_s"), (int, float))
            and not math.isnan(r["overhead_s"])]
    if not rows:
        return None
    med = lambda name: statistics.median(r[name] for r in rows)  # noqa: E731
    return (f"median overhead {med('overhead_s'):.1f} s per stage over {len(rows)} stages "
            f"(stage wall {med('stage_wall_s'):.1f} s, training loop {med('loop_s'):.1f} s)")


def _write_results(store: Store) -> None:
    """results.parquet, then the mirror catches up: stages it lacks (a failed copy earlier), the table."""
    path = store.write_results()
    try:
        for key in store.unmirrored():
            store.push_stage(key)
        store.push(path, path.name)
    except Exception as e:
        _print(f"warning: mirror {store.mirror}: not brought up to date ({type(e).__name__}: {e})")


def fmt_float(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"
