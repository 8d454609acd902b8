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

from mixsweep.envvars import environ
from mixsweep.errors import Diverged, MixsweepError
from mixsweep.sweep.cost import StageCost, estimate, fmt_seconds
from mixsweep.sweep.plan import build_grid_pack, build_plan, refresh_statuses, write_plan_inputs, write_spec_data
from mixsweep.sweep.stages import Plan, divergence
from mixsweep.sweep.store import STOPPED, Store

console = Console(highlight=False)
WORKER_GROUP_START_TIMEOUT_S = 1800  # how long a TorchTrainer stage waits for its workers' nodes


def stage_outputs(key: str, row: dict, store: Store, job) -> list[dict]:
    """The model artifact of a finished stage, by reference: a pre-training's checkpoint in the store (what its
    fine-tunes start from), a fine-tune's newest checkpoint in the train storage."""
    from mixsweep.train.storage import newest_checkpoint_uri, storage_root

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


def _final_metrics(result) -> dict:
    """The finished job's last metrics, from its newest checkpoint when it has one (a rerun of a finished
    TorchTrainer run reports nothing)."""
    from mixsweep.train.loop import load_state

    if result.checkpoint:
        return dict(load_state(result.checkpoint).get("metrics", {}))
    return dict(result.metrics)


def _provenance(result) -> dict:
    """rank 0's versions and device (workers/rank0.json), as result.json records them; the trial's own when
    the job left no placement record."""
    from mixsweep.provenance import RUNTIME_FIELDS, runtime_info

    ranks = {w["rank"]: w for w in result.placement()}
    info = ranks.get(0) or runtime_info("cpu")
    return {k: info.get(k) for k in RUNTIME_FIELDS}


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
    from mixsweep.train.launch import run_in_trial, run_with_ray, runs_in_trial

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
            live = result.live
        else:
            # Ray Train gives up on a worker group that is not placed within 60 s and makes a new one, forever,
            # logging a traceback each time; a GPU node an autoscaler starts takes minutes. Wait instead.
            os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(WORKER_GROUP_START_TIMEOUT_S))
            result = run_with_ray(job, source=f"stage {key}", callbacks=[TuneReportCallback()], check=False)
        metrics = _final_metrics(result)
        diverged = divergence(row["kind"], metrics)
        if diverged:
            raise Diverged(diverged)
    except Exception as e:  # recorded once with its key; the sweep goes on with the other stages
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500]
        status = "diverged" if isinstance(e, Diverged) else "failed"
        store.record_failure(key, {**row, "trial_id": ray.tune.get_context().get_trial_id()}, message, status)
        (store.stage_dir(key) / "traceback.txt").write_text(traceback.format_exc())
        if not getattr(e, "wandb_logged", False):  # else the stage's live run already ended as failed
            tracking.log_failure(tracker, key=key, name=config["name"], group=config["group"],
                                 job_type=config["job_type"], error=message)
        _push(store, key)
        if in_trial and not isinstance(e, MixsweepError):
            raise  # Tune retries the trial; a later success replaces failed.json with result.json
        ray.tune.report({"key": key, "status": status, "error": message})
        return
    placement = {"trial_node": ray.get_runtime_context().get_node_id(),
                 "worker_nodes": ",".join(sorted({w["node_id"] for w in result.placement()}))}
    timing = {**stage_timing(config.get("handed_out_at", t0), t0, result.loop_s), **result.loop_parts}
    final = store.record_result(key, {**row, **metrics, **placement, **timing, **_provenance(result),
                                      "trained_from": result.started_at, "trained_until": result.finished_at,
                                      "in_trial": in_trial, "wall_seconds": time.time() - t0},
                                result.run_dir, result.checkpoint if job.kind == "pretrain" else None)
    outputs = stage_outputs(key, row, store, job)
    if live is not None:  # the stage's live run, still open: its model artifact, then its end
        live.log_outputs(outputs)
        live.close(summary=metrics)
    elif job.tracking is not None:  # a TorchTrainer's rank 0 finished the live run: add the artifact to it
        tracking.log_outputs(tracker, key=key, artifacts=outputs)
    _push(store, key, tracking.run_folders(store.root, tracking.run_id(key)))
    ray.tune.report(final)


def run_stage_resources(config: dict):
    """Tune's per-trial resource callback: the request the driver put in the stage's config (trial_request)."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([config["trial_request"]])


def stage_timing(handed_out_at: float, started_at: float, loop_s: float | None) -> dict:
    """What a stage cost beyond its training loop. queued_s runs from the searcher handing the stage to Tune
    (driver clock) to the trial function starting: waiting for room (the searcher hands out more stages than
    run, so the next starts the moment a slot frees, and an autoscaler sees the backlog) and a fresh trial
    process's start. stage_wall_s runs from there to the result being recorded; loop_s is the time inside `fit`;
    overhead_s = stage_wall_s - loop_s (data preparation, a TorchTrainer's start, recording)."""
    wall = time.time() - started_at
    return {"stage_wall_s": wall, "queued_s": max(0.0, started_at - handed_out_at),
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
    """Suggests a stage only once its parent is done, and only while fewer stages of its kind run than
    `limits(kind)` allows; FINISHED when nothing more can run.

    `limits` is asked again every `refresh_s` seconds: it follows the cluster as nodes join and leave. Each
    kind has its own limit, so a pre-training that needs four GPUs does not hold one-GPU fine-tunes to one at
    a time."""

    def __init__(self, configs: list[dict], done: set[str], limits=None, refresh_s: float = 10.0):
        super().__init__(metric=None, mode=None)
        self.queue = list(configs)
        self.done = set(done)
        self.failed: set[str] = set()
        self.trials: dict[str, str] = {}
        self.kinds = {c["key"]: c["row"]["kind"] for c in configs}
        self.limits, self.refresh_s = limits, refresh_s
        self._limit_cache: dict[str, int] = {}
        self._limits_at = -math.inf

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def limit(self, kind: str) -> int:
        if self.limits is None:
            return 10**9
        if time.monotonic() - self._limits_at > self.refresh_s:
            self._limit_cache, self._limits_at = {}, time.monotonic()
        if kind not in self._limit_cache:
            self._limit_cache[kind] = self.limits(kind)
        return self._limit_cache[kind]

    def suggest(self, trial_id: str):
        running = self._running()
        for i, cfg in enumerate(self.queue):
            parent, kind = cfg["parent"], cfg["row"]["kind"]
            if (parent is None or parent in self.done) and sum(self.kinds[k] == kind for k in running) < self.limit(kind):
                self.queue.pop(i)
                self.trials[trial_id] = cfg["key"]
                return {**cfg, "handed_out_at": time.time()}  # a stage's wall starts here (stage_timing)
        # Children of a failed parent can never run: drop them so the sweep can finish.
        self.queue = [c for c in self.queue if c["parent"] not in self.failed]
        return Searcher.FINISHED if not self.queue and not running else None

    def _running(self) -> list[str]:
        return [k for k in self.trials.values() if k not in self.done and k not in self.failed]

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        key = self.trials.get(trial_id)
        if key is not None:
            (self.failed if error or _failed(result) else self.done).add(key)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__getstate__()))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))

    def __getstate__(self):  # the limits read the live cluster: not part of a saved searcher
        return {**self.__dict__, "limits": None}


def _failed(result: dict | None) -> bool:
    """A trial that recorded its stage's failure ends normally (so Tune does not retry it), with this result."""
    return bool(result) and result.get("status") in STOPPED


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
        self._line("DIVERGED" if (trial.last_result or {}).get("status") == "diverged" else "FAILED", trial)
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


class WaitingForNodes(Callback):
    """One line whenever what the cluster waits to place changes: `waiting for 2 × {CPU: 2, GPU: 1}: the
    autoscaler is starting nodes` (pending placement groups: Tune trials, TorchTrainer worker groups)."""

    def __init__(self, autoscaling: bool, every_s: float = 2.0, pending=None):
        self.autoscaling, self.every_s, self.pending = autoscaling, every_s, pending
        self._at, self._last = -math.inf, {}

    def on_step_begin(self, iteration, trials, **info):
        if time.monotonic() - self._at < self.every_s:
            return
        self._at = time.monotonic()
        from mixsweep.train.cluster import pending_bundles

        try:
            pending = (self.pending or pending_bundles)()
        except Exception:  # a state query that failed tells nothing; the next step asks again
            return
        if pending == self._last:
            return
        self._last = pending
        if pending:
            why = "the autoscaler is starting nodes" if self.autoscaling else "no node has room for it yet"
            _print("waiting for " + ", ".join(f"{n} × {b}" for b, n in sorted(pending.items())) + f": {why}")


def trial_request(scaling, resources) -> dict[str, float]:
    """What a stage's Tune trial asks for. A stage that trains in its trial holds its one worker's resources (the
    trial IS the worker; trial_cpus and trial_resources, meant for a driver, do not apply). A TorchTrainer
    stage's trial only waits on its trainer: trial_cpus plus trial_resources, or a sliver of a CPU (Ray refuses
    an empty request)."""
    from mixsweep.train.launch import runs_in_trial

    if runs_in_trial(scaling):
        return scaling.resources_per_worker()
    request = {"CPU": resources.trial_cpus, **resources.trial_resources}
    request = {k: v for k, v in request.items() if v}
    return request or {"CPU": 0.01}


def check_cluster(spec, shape) -> None:
    """Refuse, in one line each, stage kinds the cluster can never place, and trial resources no node has."""
    from mixsweep.train.launch import runs_in_trial

    kinds = {"resources.pretrain": spec.resources.pretrain, "resources.finetune": spec.resources.finetune}
    for what, scaling in kinds.items():
        note = shape.check(scaling, what)
        if note:
            _print(f"note: {note}")
    if all(runs_in_trial(s) for s in kinds.values()) or not spec.resources.trial_resources:
        return
    for name, amount in spec.resources.trial_resources.items():
        if shape.holds({name: amount}) is False:
            raise MixsweepError(f"resources.trial_resources: no node has {amount:g} {name!r} (start the head "
                                f"with resources: {{{name}: 1000}}, as in cluster.yaml), so no trial could start")


def stage_limits(spec, cluster_config=None):
    """kind -> how many stages of that kind may run at once: as many as the cluster holds when grown to its
    limits (the autoscaler's node types), else as many as its alive nodes hold. Read afresh on each call."""
    from mixsweep.train.cluster import cluster_shape

    scalings = {"pretrain": spec.resources.pretrain, "finetune": spec.resources.finetune}

    def limits(kind: str) -> int:
        return cluster_shape(cluster_config).stage_limit(scalings[kind])

    return limits


def run_sweep(spec, spec_path: str, address: str | None = None, retry_failed: bool = False,
              cluster_config: Path | str | None = None, wait: bool = False) -> Plan:
    """Run every pending stage of the spec; returns the plan with statuses after the run.

    One driver trains into a store at a time (`Store.driver_lock`): a second refuses, or with `wait` waits.
    `cluster_config`: the autoscaler's config (a `ray up` YAML), when the driver cannot find it itself
    (mixsweep.train.cluster)."""
    store = Store(spec.storage, spec.mirror)
    with store.driver_lock(wait=wait, on_wait=lambda line: console.print(f"{spec.name}: {line}")):
        return _run_locked(spec, store, address, retry_failed, cluster_config)


def _run_locked(spec, store: Store, address, retry_failed: bool, cluster_config) -> Plan:
    from ray import tune

    from mixsweep.train.cluster import cluster_shape, ensure_ray
    from mixsweep.train.launch import runs_in_trial

    store.set_aside_unreadable()
    pulled = store.pull()
    if pulled:
        console.print(f"{spec.name}: {len(pulled)} finished stages copied back from the mirror {spec.mirror}")
    write_spec_data(spec, store)
    plan = build_plan(spec, store)
    write_plan_inputs(plan, store)
    _reopen_unusable_parents(plan, store)
    stopped = ("failed", "diverged")
    pending = [s for s in plan.stages if s.status == "pending" or (retry_failed and s.status in stopped)]
    done = {s.key for s in plan.stages if s.status == "done"}
    skipped = {s.key for s in plan.stages if s.status in stopped and not retry_failed}
    # A fine-tune whose parent failed earlier can never start: leave it out, or Tune would wait for it forever.
    blocked = [s for s in pending if s.parent in skipped]
    pending = [s for s in pending if s.parent not in skipped]
    n_diverged = sum(s.key in skipped and s.status == "diverged" for s in plan.stages)
    console.print(f"{spec.name}: {len(plan.stages)} stages, {len(done)} done, {len(pending)} to run"
                  + (f", {len(skipped) - n_diverged} failed earlier" if len(skipped) > n_diverged else "")
                  + (f", {n_diverged} diverged earlier" if n_diverged else "")
                  + (" (rerun them with --retry-failed)" if skipped else "")
                  + (f", {len(blocked)} waiting on a failed pre-training" if blocked else ""))
    if not pending:
        _write_results(store)
        return plan
    # Worker logs stay in Ray's session logs (and a failed stage's traceback.txt): the terminal shows progress.
    ensure_ray(address, quiet=True)
    shape = cluster_shape(cluster_config)
    check_cluster(spec, shape)  # before the pack: a request no node can ever hold is refused at once
    _print(f"{spec.name}: {_describe(shape)}")
    pack = build_grid_pack(plan, pending, progress=True)
    if pack is not None:
        how = ("found" if pack.built is None or pack.built["reused"] else
               f"built: {pack.built['decoded']} decoded, {pack.built['copied']} copied from earlier packs")
        console.print(f"{spec.name}: pre-training pack of {len(pack)} images (every mixture of the grid) {how}")
    # Tune's default CSV/JSON/TensorBoard loggers duplicate the store and W&B, and warn on NaN metrics.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    configs, all_in_trial = [], True
    for s in pending:
        scaling = s.job.scaling
        all_in_trial = all_in_trial and runs_in_trial(scaling)
        job = s.job_with_pack(pack.path) if pack is not None else s.job
        configs.append({"key": s.key, "parent": s.parent, "row": s.row(), "job": job.model_dump(mode="json"),
                        "store": str(store.root), "mirror": spec.mirror, "name": s.run_name, "group": spec.name,
                        "job_type": s.job_type, "wandb": spec.wandb.model_dump(mode="json"),
                        "trial_request": trial_request(scaling, spec.resources)})
    searcher = StageSearcher(configs, done, limits=stage_limits(spec, cluster_config))
    estimated = estimate(plan, spec, store).total(c["key"] for c in configs)
    progress = StageProgress(len(plan.stages), len(done), {s.key: s.label for s in plan.stages}, store)
    # Tune keeps one trial waiting for resources at a time when a searcher hands out trials; the requests of
    # waiting trials are what makes an autoscaler start nodes, so let as many wait as could ever run at once.
    most = sum(shape.stage_limit(sc) for sc in (spec.resources.pretrain, spec.resources.finetune))
    pending_env = {"TUNE_MAX_PENDING_TRIALS_PG": os.environ.get("TUNE_MAX_PENDING_TRIALS_PG",
                                                                str(max(1, min(most, len(configs)))))}
    # In-trial stages: a finished trial's process takes the next stage (torch and the model code stay imported).
    # Trials that drive a TorchTrainer each get a fresh process, as before.
    tuner = tune.Tuner(
        tune.with_resources(run_stage, run_stage_resources),
        # No fixed max_concurrent_trials: the searcher limits each stage kind, and Ray's scheduling the rest.
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(configs), reuse_actors=all_in_trial),
        # max_failures: Tune restarts an in-trial stage whose process died (or whose training raised), from its
        # last checkpoint; a TorchTrainer stage's workers are restarted by Ray Train, and its trial reports a
        # failure instead of raising, so Tune does not run it again.
        run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time())}", storage_path=str(store.root / "tune"),
                                  callbacks=[progress, WaitingForNodes(shape.autoscaling)], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
    )
    # Results live in the store and W&B, so Tune's own result files are off; its ResultGrid would then warn
    # once per trial (36 lines for the demo) that they are missing.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    with environ(**pending_env):
        tuner.fit()
    _write_results(store)
    counts = refresh_statuses(plan, store).counts()
    console.print(f"{spec.name}: {counts['done']} done, {counts['failed']} failed, {counts['diverged']} diverged, "
                  f"{counts['pending']} pending; "
                  f"results in {store.root / 'results.parquet'}")
    line = overhead_line(store, [c["key"] for c in configs])
    if line:
        console.print(f"{spec.name}: {line}")
    console.print(f"{spec.name}: {estimate_line(store, [c['key'] for c in configs], estimated)}")
    return plan


def _reopen_unusable_parents(plan: Plan, store: Store) -> None:
    """A done pre-training whose checkpoint its pending (or failed) fine-tunes cannot use (torn, missing,
    changed) runs again, and those fine-tunes with it."""
    children: dict[str, list[str]] = {}
    for s in plan.stages:
        if s.parent is not None and s.status != "done":
            children.setdefault(s.parent, []).append(s.key)
    by_key = plan.by_key()
    for key, waiting in children.items():
        if key in by_key and by_key[key].status == "done" and (problem := store.checkpoint_problem(key)):
            store.reopen(key, problem, waiting)
    if children:
        refresh_statuses(plan, store)


def _describe(shape) -> str:
    """'cluster: 1 node(s) alive; can grow to node types of X: head (...); gpu (...); max_workers 6'."""
    alive = f"{len(shape.alive)} node(s) alive"
    if not shape.autoscaling:
        return f"cluster: {alive}, no autoscaler config found (stages run on these nodes only)"
    cap = f"; max_workers {shape.max_workers}" if shape.max_workers is not None else ""
    return f"cluster: {alive}; can grow to node types of {shape.source}: " + "; ".join(
        t.describe() for t in shape.node_types) + cap


def overhead_line(store: Store, keys: list[str]) -> str | None:
    """'median overhead 1.2 s per stage over 24 stages (…)' for the stages of `keys` that finished."""
    rows = [r for r in (store.result(k) for k in keys) if r and isinstance(r.get("overhead_s"), (int, float))
            and not math.isnan(r["overhead_s"])]
    if not rows:
        return None
    med = lambda name: statistics.median(r[name] for r in rows)  # noqa: E731
    return (f"median overhead {med('overhead_s'):.1f} s per stage over {len(rows)} stages "
            f"(stage wall {med('stage_wall_s'):.1f} s, training loop {med('loop_s'):.1f} s)")


def estimate_line(store: Store, keys: list[str], estimated: StageCost) -> str:
    """'24 stages ran for 3.1 h of stage time (estimated before: 2.9 h = steps … + fixed …)'."""
    walls = [r["stage_wall_s"] for r in (store.result(k) for k in keys)
             if r and isinstance(r.get("stage_wall_s"), (int, float))]
    ran = f"{len(walls)} of {len(keys)} stages ran for {fmt_seconds(sum(walls))} of stage time"
    return (f"{ran} (estimated before the run, for all {len(keys)}: {fmt_seconds(estimated.total_s)} = steps "
            f"{fmt_seconds(estimated.step_s)} + fixed costs {fmt_seconds(estimated.fixed_s)})")


def _write_results(store: Store) -> None:
    """results.parquet, then the mirror catches up: stages it lacks (a failed copy earlier), the table."""
    path = store.write_results()
    try:
        for key in store.unmirrored():
            store.push_stage(key)
        store.push(path, path.name)
    except Exception as e:
        _print(f"warning: mirror {store.mirror}: not brought up to date ({type(e).__name__}: {e})")
