"""What a cluster can hold, judged from the autoscaler's node types (no Ray needed), and the sweep's searcher
limiting each stage kind to what fits. The same checks against a live autoscaling cluster: test_autoscaler.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mixsweep.errors import MixsweepError
from mixsweep.train.cluster import ClusterShape, node_types_from_launcher_config
from mixsweep.train.config import ScalingSettings

REPO = Path(__file__).resolve().parent.parent
HEAD_ONLY = ({"CPU": 0.0, "mixsweep_head": 1000.0},)  # a fresh `ray up` cluster: the head, no GPU node yet


def fake_gpu_config(max_workers: int = 2, **extra) -> dict:
    """The shape test_autoscaler.py starts: a head for the drivers and one GPU node type, from zero nodes."""
    return {"cluster_name": "t", "max_workers": max_workers, "provider": {"type": "fake_multinode"},
            "head_node_type": "head",
            "available_node_types": {
                "head": {"resources": {"CPU": 0, "mixsweep_head": 1000}, "node_config": {}, "max_workers": 0},
                "gpu_node": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0,
                             "max_workers": max_workers, **extra}}}


def shape_of(config: dict, alive=HEAD_ONLY) -> ClusterShape:
    types, cap = node_types_from_launcher_config(config, "fake.yaml")
    return ClusterShape(alive, types, cap, "fake.yaml")


def test_a_request_that_needs_new_nodes_is_accepted_and_an_impossible_one_names_the_node_types():
    shape = shape_of(fake_gpu_config())
    gpu = ScalingSettings(num_workers=1, use_gpu=True, cpus_per_worker=2)
    assert shape.slots_now(gpu) == 0  # nothing alive can hold it: the old check refused here
    assert shape.check(gpu) is None and shape.stage_limit(gpu) == 2
    assert shape.stage_limit(gpu.model_copy(update={"num_workers": 2})) == 1
    expected = ("resources.pretrain: 1 workers × (2 CPU, 4 GPU) can never be placed: the cluster holds at most 0 "
                "such worker(s) at once; node types in fake.yaml: head (0 CPU, 1000 mixsweep_head; the head + at "
                "most 0); gpu_node (2 CPU, 1 GPU; at most 2); max_workers 2")
    with pytest.raises(MixsweepError, match=re.escape(expected) + "$"):
        shape.check(ScalingSettings(num_workers=1, use_gpu=True, cpus_per_worker=2, gpus_per_worker=4),
                    "resources.pretrain")
    with pytest.raises(MixsweepError, match="at most 2 such worker"):
        shape.check(gpu.model_copy(update={"num_workers": 3}))
    with pytest.raises(MixsweepError, match="node types in fake.yaml"):
        shape.check(ScalingSettings(num_workers=1, resources={"accelerator_type:H100": 0.001}))
    # The trial's driver resource lives on the head; a custom resource no node type has is nowhere.
    assert shape.holds({"mixsweep_head": 1}) is True and shape.holds({"fast_disk": 1}) is False


def test_the_autoscalers_cap_on_all_workers_counts():
    config = fake_gpu_config(max_workers=3)
    config["available_node_types"]["big_gpu"] = {"resources": {"CPU": 8, "GPU": 4}, "node_config": {},
                                                 "min_workers": 0, "max_workers": 2}
    one_gpu = ScalingSettings(num_workers=1, use_gpu=True, cpus_per_worker=2)
    # Best use of 3 nodes: two 4-GPU nodes (8 workers) and one 1-GPU node, not 2 + 2 + 2 ...
    assert shape_of(config).slots_at_most(one_gpu) == 9
    config["max_workers"] = 1
    assert shape_of(config).slots_at_most(one_gpu) == 4


def test_without_an_autoscaler_only_alive_nodes_count_and_the_refusal_says_so():
    shape = ClusterShape(({"CPU": 2.0}, {"CPU": 2.0}))
    two = ScalingSettings(num_workers=2, cpus_per_worker=2)
    assert shape.check(two) is None and shape.stage_limit(two) == 1
    with pytest.raises(MixsweepError, match=r"room for 2 such worker\(s\), and no autoscaler config was found .*"
                                            r"--cluster-config"):
        shape.check(two.model_copy(update={"num_workers": 3}))
    # Nodes that join later raise the limit: the searcher asks again.
    assert ClusterShape(({"CPU": 2.0},) * 4).stage_limit(two) == 2


def test_shipped_cluster_yamls_declare_what_their_gpu_nodes_hold():
    """cluster.yaml and cluster-gcp.yaml declare each GPU type's resources, so a sweep is judged before any GPU node
    exists; a local provider's nodes are all alive at `ray up`, and their resources are unknown beforehand."""
    gpu4 = ScalingSettings(num_workers=4, use_gpu=True, cpus_per_worker=8)
    for name in ("cluster.yaml", "cluster-gcp.yaml"):
        shape = shape_of(yaml.safe_load((REPO / name).read_text()))
        assert not shape.unknown_types()
        assert shape.check(gpu4) is None
        assert shape.stage_limit(ScalingSettings(num_workers=1, use_gpu=True, cpus_per_worker=4)) == 4 * 4 + 2 * 8
        with pytest.raises(MixsweepError, match="can never be placed"):
            shape.check(ScalingSettings(num_workers=1, use_gpu=True, gpus_per_worker=16))
    local = shape_of(yaml.safe_load((REPO / "cluster-local.yaml").read_text()), alive=({"CPU": 2.0},))
    assert local.check(ScalingSettings(num_workers=1)) is None
    note = local.check(ScalingSettings(num_workers=1, use_gpu=True))
    assert "cannot check" in note and "local.cluster.node" in note


def test_a_broken_cluster_config_is_one_line():
    with pytest.raises(MixsweepError, match=r"^fake.yaml: head_node_type: 'nope' is not one of available_node_types "
                                            r"\(head, gpu_node\)$"):
        shape_of({**fake_gpu_config(), "head_node_type": "nope"})
    with pytest.raises(MixsweepError, match=r"^fake.yaml: available_node_types: could not convert string to float"):
        bad = fake_gpu_config()
        bad["available_node_types"]["gpu_node"]["resources"] = {"GPU": "one"}
        shape_of(bad)


def _configs(kinds: list[tuple[str, str, str | None]]) -> list[dict]:
    return [{"key": k, "parent": parent, "row": {"kind": kind}} for k, kind, parent in kinds]


def test_the_searcher_limits_each_stage_kind_and_follows_the_limits():
    from ray.tune.search import Searcher

    from mixsweep.sweep.run import StageSearcher

    limits = {"pretrain": 1, "finetune": 2}
    configs = _configs([("pt-a", "pretrain", None), ("pt-b", "pretrain", None), ("ft-1", "finetune", "pt-a"),
                        ("ft-2", "finetune", "pt-a"), ("ft-3", "finetune", "pt-a"), ("ft-b", "finetune", "pt-b")])
    searcher = StageSearcher(configs, done=set(), limits=lambda kind: limits[kind], refresh_s=0)
    assert searcher.suggest("t1")["key"] == "pt-a"
    assert searcher.suggest("t2") is None  # one pre-training at a time; the fine-tunes wait for their parent
    searcher.on_trial_complete("t1", {"key": "pt-a"})
    got = [searcher.suggest(f"t{i}") for i in range(3, 7)]
    # The freed pre-training slot goes to pt-b; fine-tunes fill their own two slots, the third waits.
    assert [g["key"] if g else None for g in got] == ["pt-b", "ft-1", "ft-2", None]
    limits["finetune"] = 3  # a node joined
    assert searcher.suggest("t7")["key"] == "ft-3"
    for t in ("t3", "t4", "t5", "t7"):
        searcher.on_trial_complete(t, {})
    assert searcher.suggest("t8")["key"] == "ft-b"
    searcher.on_trial_complete("t8", {})
    assert searcher.suggest("t9") == Searcher.FINISHED


def test_waiting_for_nodes_is_one_line_per_change(capsys):
    from mixsweep.sweep.run import WaitingForNodes

    answers = iter([{}, {"{CPU: 2, GPU: 1}": 2}, {"{CPU: 2, GPU: 1}": 2}, {"{CPU: 2, GPU: 1}": 1}, {}])
    callback = WaitingForNodes(autoscaling=True, every_s=0, pending=lambda: next(answers))
    for step in range(5):
        callback.on_step_begin(step, [])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["waiting for 2 × {CPU: 2, GPU: 1}: the autoscaler is starting nodes",
                     "waiting for 1 × {CPU: 2, GPU: 1}: the autoscaler is starting nodes"]
    fixed = WaitingForNodes(autoscaling=False, every_s=0, pending=lambda: {"{CPU: 1}": 3})
    fixed.on_step_begin(0, [])
    assert capsys.readouterr().out.strip() == "waiting for 3 × {CPU: 1}: no node has room for it yet"
