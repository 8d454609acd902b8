"""Every shipped cluster YAML passes Ray's own launcher validator, offline, and keeps mixsweep's shape:
a head that trains nothing, the image at the pinned Ray, the project installed on every node."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent
CLUSTERS = sorted(REPO.glob("cluster*.yaml"))


def validated(cfg: dict) -> dict:
    cfg = prepare_config(copy.deepcopy(cfg))
    validate_config(cfg)
    return cfg


def test_all_three_are_shipped():
    assert [p.name for p in CLUSTERS] == ["cluster-gcp.yaml", "cluster-local.yaml", "cluster.yaml"]


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_cluster_yaml_passes_rays_validator(path):
    raw = yaml.safe_load(path.read_text())
    cfg = validated(raw)
    assert any("mixsweep" in c for c in cfg["setup_commands"]), "setup must install mixsweep"
    head_start = " ".join(cfg["head_start_ray_commands"])
    if cfg["provider"]["type"] == "local":
        assert "--num-cpus=0" in head_start and "mixsweep_head" in head_start
        return
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("mixsweep_head", 0) >= 1
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert any("--shm-size" in o for o in cfg["docker"]["worker_run_options"])
    assert any("/mnt/mixsweep" in o for o in cfg["docker"]["run_options"]), "the shared store must be mounted"
    workers = [t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] >= 1 and t["min_workers"] == 0 for t in workers)
    assert cfg["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c.update(head_node_type="nope"), "head_node_type"),
    (lambda c: c.update(max_wrokers=3), "max_wrokers"),
    (lambda c: c["available_node_types"]["gpu_g5_spot"].update(min_workers=9, max_workers=2), "min_workers"),
])
def test_the_validator_catches_mistakes(break_it, message):
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    break_it(cfg)
    with pytest.raises(Exception, match=message):
        validated(cfg)
