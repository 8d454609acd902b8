"""Shared fixtures: synthetic data is written once per test session."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """The small synthetic COCO-format and Pet-format set (the demo's data)."""
    from mixsweep.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth"), scale="small", seed=0)


@pytest.fixture(scope="session")
def train_inputs(synth_small, tmp_path_factory):
    """A COCO mixture (F=0.5) and a Pet manifest on the synthetic data, for the training jobs."""
    from mixsweep.data.coco import build_coco_index
    from mixsweep.data.mixture import build_mixture
    from mixsweep.data.pets import build_pets_manifest
    from mixsweep.tables import write_table

    root = tmp_path_factory.mktemp("train-inputs")
    index, _ = build_coco_index(synth_small.coco_train_annotations, synth_small.coco_train_images)
    write_table(build_mixture(index, 0.5, seed=0), root / "mix.parquet")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_table(build_pets_manifest(synth_small.pets_root), root / "pets.parquet")
    return {"mix": root / "mix.parquet", "pets": root / "pets.parquet", "images": synth_small.coco_train_images,
            "cache": root / "cache"}


def synth_data_section(synth) -> dict:
    """A spec's `data:` naming an already written synthetic set by its paths: a `mixsweep run` in a subprocess
    then reads it instead of rendering its own (seconds per process)."""
    return {"coco_annotations": str(synth.coco_train_annotations), "coco_images": str(synth.coco_train_images),
            "coco_val_annotations": str(synth.coco_val_annotations), "coco_val_images": str(synth.coco_val_images),
            "pets_root": str(synth.pets_root)}


def pretrain_config(inputs, storage, name, **run) -> dict:
    """A tiny pre-training job on the synthetic mixture (seconds on a CPU)."""
    return {"kind": "pretrain", "preset": "tiny", "seed": 0,
            "data": {"mixture": str(inputs["mix"]), "images": str(inputs["images"]), "cache": str(inputs["cache"]),
                     "pack_size": 64},
            "recipe": {"epochs": 3, "batch_size": 8, "warmup_epochs": 1},
            "run": {"name": name, "storage": str(storage), "checkpoint_every": 1, **run}}


def finetune_config(inputs, storage, name, model="mae", init=None, **run) -> dict:
    cfg = {"kind": "finetune", "model": model, "preset": "tiny", "seed": 0,
           "data": {"manifest": str(inputs["pets"]), "cache": str(inputs["cache"]), "pack_size": 64},
           "recipe": {"epochs": 2, "batch_size": 8, "warmup_epochs": 1},
           "run": {"name": name, "storage": str(storage), "checkpoint_every": 1, **run}}
    if init is not None:
        cfg["init_checkpoint"] = str(init)
    return cfg


@contextlib.contextmanager
def crash_in_epoch(epoch: int):
    """Jobs run with run_local inside this block die in `epoch` just before reporting it (nothing of that epoch
    is logged or checkpointed), on a first attempt only: an attempt that resumes from a checkpoint trains on.
    In this process only; the Ray tests kill real workers and trials instead."""
    from mixsweep.train import launch

    make_world = launch.local_world

    def crashing_world(*args, **kwargs):
        world = make_world(*args, **kwargs)
        if world.resume_from is None:
            report = world.report

            def crash_then_report(metrics, checkpoint, final):
                if metrics["epoch"] == epoch:
                    raise RuntimeError(f"injected failure in epoch {epoch}")
                report(metrics, checkpoint, final)

            world.report = crash_then_report
        return world

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "local_world", crashing_world)
        yield


HEAD_RESOURCE = "mixsweep_head"


@pytest.fixture(scope="session")
def ray_local():
    """One Ray cluster for the whole session (start-up costs tens of seconds here), shaped like
    cluster.yaml's: a head with no CPUs for training and a custom resource for the sweep's trials, and two
    worker nodes with 2 CPUs each, all on this machine."""
    import ray
    from ray.cluster_utils import Cluster

    # The dashboard on a free port: another Ray on this machine (a user's, a demo) may hold the default one.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "resources": {HEAD_RESOURCE: 8}, "include_dashboard": True,
        "dashboard_port": free_ports(1)[0]})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield ray
    ray.shutdown()
    cluster.shutdown()


def node_ids(ray) -> dict[str, str]:
    """{'head': id, 'workers': ...}: the session cluster's node ids by role."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    head = [n["NodeID"] for n in nodes if HEAD_RESOURCE in n["Resources"]]
    return {"head": head[0], "workers": {n["NodeID"] for n in nodes if HEAD_RESOURCE not in n["Resources"]}}


def free_ports(n: int) -> list[int]:
    """n TCP ports nothing listens on now (for a second Ray cluster beside the session's)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
