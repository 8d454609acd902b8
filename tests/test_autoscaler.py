"""A sweep on an autoscaling cluster that starts with no GPU node, run by Ray's real autoscaler on this machine.

Ray's `fake_multinode` provider (what Ray's own autoscaler tests use) launches each worker node as local
`ray start` processes with the resources its node type declares: here a head with `mixsweep_head` and no
GPU, and a `gpu_node` type of {CPU: 2, GPU: 1}, 0 to 2 nodes. The GPUs exist in Ray's books only: the nodes
have no CUDA, so the stages train on the CPU (and their results say so).

The cluster runs in its own PID and mount namespaces (as root, like test_launcher.py's sshd): killing the
namespace's first process ends every process of it, whatever a failed test left. Its GCS listens on a free
port (the session's other cluster keeps running), and every process of it gets RAY_ADDRESS, so Ray's own
helpers never ask which of the two clusters they belong to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import free_ports, synth_data_section

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (a PID namespace holds the cluster)")


def autoscaling_config(gcs_address: str) -> dict:
    """Ray's fake multi-node provider, 0-2 GPU nodes. Nodes join at gcs_address (default: port 6379)."""
    return {
        "cluster_name": "mixsweep-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 1,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "mixsweep_head": 1000}, "node_config": {},
                                 "max_workers": 0},
            "gpu_node": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0,
                         "max_workers": 2}},
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@pytest.fixture(scope="module")
def fake_cluster():
    tmp = Path(tempfile.mkdtemp(prefix="msfc-", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    ip = subprocess.run([sys.executable, "-c", "import ray._private.services as s; print(s.get_node_ip_address())"],
                        capture_output=True, text=True, check=True).stdout.strip()
    port, client, dashboard, agent = free_ports(4)
    address = f"{ip}:{port}"
    config = tmp / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(autoscaling_config(address)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address,
           "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_autoscaler_v2": "0"}
    start = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--temp-dir={tmp / 'ray'}",
             f"--autoscaling-config={config}", "--num-cpus=0", "--num-gpus=0",
             "--resources=" + json.dumps({"mixsweep_head": 1000}), f"--ray-client-server-port={client}",
             f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}"]
    log = open(tmp / "head.log", "w")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *start], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, (tmp / "head.log").read_text()[-3000:]
            time.sleep(0.5)
    driver_env = {k: v for k, v in env.items() if k not in ("RAY_FAKE_CLUSTER", "AUTOSCALER_UPDATE_INTERVAL_S")}
    yield {"address": address, "config": config, "env": driver_env, "tmp": tmp}
    proc.kill()
    proc.wait()
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


def gpu_spec(tmp: Path, synth, **resources) -> Path:
    """A small synthetic sweep whose stages all ask for a GPU: one pre-training, then two fine-tune sizes. Its
    data: the session's synthetic set, by path (the driver renders none)."""
    gpu = {"num_workers": 1, "use_gpu": True, "cpus_per_worker": 2, **resources}
    spec = {"name": "gpu", "grid": {"animal_fractions": [1.0], "finetune_fractions": [0.5, 1.0], "seeds": [0]},
            "data": synth_data_section(synth), "preset": "tiny", "mixture": {"pack_size": 64},
            "pretrain": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "blr": 1.5e-3},
            "finetune": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "blr": 1e-2},
            "resources": {"pretrain": gpu, "finetune": gpu, "trial_resources": {"mixsweep_head": 1}},
            "storage": str(tmp / "store"), "wandb": {"mode": "offline", "project": "mixsweep-test"},
            "checkpoint_every": 1}
    path = tmp / "gpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def autoscaler_launches(cluster) -> list[tuple[int, str]]:
    """The autoscaler's own record of the launches it made, (count, node type) each, from its monitor log."""
    log = cluster["tmp"] / "ray" / "session_latest" / "logs" / "monitor.log"
    return [(int(n), t) for n, t in re.findall(r"Launching (\d+) nodes, type (\S+)\.", log.read_text())]


def mixsweep_run(cluster, spec: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "mixsweep"), "run", str(spec), "--address", cluster["address"],
                           "--cluster-config", str(cluster["config"])], env=cluster["env"], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_request_no_node_type_can_hold_is_refused_in_one_line(fake_cluster, synth_small, tmp_path):
    run = mixsweep_run(fake_cluster, gpu_spec(tmp_path, synth_small, gpus_per_worker=4), timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert lines[-1].startswith("mixsweep: error: resources.pretrain: 1 workers × (2 CPU, 4 GPU) can never be placed")
    assert "gpu_node (2 CPU, 1 GPU; at most 2)" in lines[-1] and str(fake_cluster["config"]) in lines[-1]
    assert not (tmp_path / "store" / "tune").exists()  # refused before any trial


def test_a_gpu_sweep_on_a_cluster_with_no_gpu_node_finishes_on_launched_nodes(fake_cluster, synth_small, tmp_path):
    run = mixsweep_run(fake_cluster, gpu_spec(tmp_path, synth_small), timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "can grow to node types of" in out and "gpu_node (2 CPU, 1 GPU; at most 2)" in out
    rows = pd.read_parquet(tmp_path / "store" / "results.parquet")
    assert len(rows) == 3 and set(rows["status"]) == {"done"}
    # Every stage's driver ran on the head, every stage trained on a node the autoscaler launched.
    (head,) = set(rows["trial_node"])
    workers = set(rows["worker_nodes"])
    assert head not in workers and all("," not in w for w in workers) and 1 <= len(workers) <= 2
    # On the CPU: a fake GPU node has no CUDA, and the result says what the stage trained on.
    assert rows["device"].str.startswith("cpu (").all() and not rows["in_trial"].any()
    # Two stages asked at once: while the first fine-tune held the one GPU node, the second's worker group
    # waited for a node, and the autoscaler launched one for it. (Which node the second fine-tune then trained on,
    # the new one or the first one freed, is a race between two processes: not asserted.)
    launches = autoscaler_launches(fake_cluster)
    assert {t for _, t in launches} == {"gpu_node"} and sum(n for n, _ in launches) == 2, (launches, out[-3000:])
    print("\n" + "\n".join(line for line in out.splitlines() if "waiting for" in line or "cluster:" in line))
    t0 = rows["trained_from"].min()
    print(rows.assign(start=rows["trained_from"] - t0, end=rows["trained_until"] - t0)[
        ["kind", "finetune_fraction", "worker_nodes", "start", "end", "loop_s", "stage_wall_s"]].to_string())
