"""The real cluster launcher: `ray up cluster-local.yaml` on 127.0.0.1 over SSH, the smoke sweep (cut to 2
stages) submitted as a Ray job, its results checked, then `ray down` leaves no Ray process behind.

sshd runs in its own PID and mount namespaces. `ray stop`, which `ray up` and `ray down` run over SSH,
then sees only the processes started inside (never this session's test cluster), and killing sshd, the
namespace's first process, ends whatever a failed test left inside. Inside, /root is a throwaway home
whose .bashrc puts this virtualenv on PATH, as a user's login shell would on a real node.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_ports, synth_data_section

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("sshd", path="/usr/sbin:/usr/bin") or not shutil.which("rsync"),
    reason="needs root, openssh-server and rsync (.ci/run installs them)")


def ray_processes(marker: str) -> list[str]:
    """Command lines of live processes that belong to the launcher's Ray (its temp dir is in their args)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if marker in cmd:  # a zombie's cmdline is empty
            out.append(cmd[:160])
    return out


@pytest.fixture(scope="module")
def loopback_sshd(tmp_path_factory):
    """sshd on 127.0.0.1:22 with a throwaway key, in its own PID + mount namespaces; yields the key."""
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("id", "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    shutil.copy(tmp / "id.pub", tmp / "authorized_keys")
    # The throwaway home links to everything in the real one (Python may live there, e.g. under pyenv)
    # but its own .bashrc and .profile; the real one stays reachable inside at tmp/realroot.
    home, real = tmp / "home", tmp / "realroot"
    home.mkdir()
    real.mkdir()
    for entry in Path("/root").iterdir():
        if entry.name not in (".bashrc", ".profile", ".bash_profile", ".ssh", ".ray", "mixsweep"):
            (home / entry.name).symlink_to(real / entry.name)
    # Token auth on, with a token of its own: clients must present it (RAY_AUTH_TOKEN).
    token = secrets.token_hex(32)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)
    (home / ".bashrc").write_text(f'export PATH="{VENV_BIN}:$PATH"\nexport RAY_USAGE_STATS_ENABLED=0\n'
                                  'export RAY_AUTH_MODE=token\n')
    (tmp / "sshd_config").write_text("\n".join([
        "Port 22", "ListenAddress 127.0.0.1", f"HostKey {tmp / 'host_key'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "MaxStartups 100", "MaxSessions 100", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    inner = f"mount --bind /root {real} && mount --bind {home} /root && exec /usr/sbin/sshd -D -e -f {tmp / 'sshd_config'}"
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen(["unshare", "--pid", "--mount-proc", "--kill-child", "--propagation", "private",
                             "sh", "-c", inner], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp / "sshd.log").read_text()
            time.sleep(0.2)
    yield {"key": tmp / "id", "home": home, "token": token}
    proc.kill()
    proc.wait()
    log.close()


def launcher_config(tmp: Path, ray_tmp: Path, key: Path, ports: dict) -> Path:
    """cluster-local.yaml as shipped, pointed at this machine: our key, free ports, a temp dir we can find,
    and 2 CPUs on the head (there is no worker machine here to train on)."""
    cfg = yaml.safe_load((REPO / "cluster-local.yaml").read_text())
    cfg["cluster_name"] = f"mixsweep-test-{os.getpid()}"
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": str(key)}
    cfg["file_mounts"] = {"~/mixsweep": str(REPO)}
    cfg["setup_commands"] = ["mixsweep --help > /dev/null"]  # installed already: the venv is on PATH
    start = cfg["head_start_ray_commands"][1]
    assert "--num-cpus=0" in start and "--port=6379" in start
    start = start.replace("--num-cpus=0", "--num-cpus=2").replace("--port=6379", f"--port={ports['gcs']}")
    extra = {"dashboard-port": ports["dashboard"], "ray-client-server-port": ports["client"],
             "dashboard-agent-listen-port": ports["agent"], "dashboard-agent-grpc-port": ports["agent_grpc"],
             "runtime-env-agent-port": ports["env_agent"], "metrics-export-port": ports["metrics"],
             "node-manager-port": ports["node_manager"], "object-manager-port": ports["object_manager"]}
    start += f" --temp-dir={ray_tmp / 'ray'} --include-dashboard=true " + " ".join(f"--{k}={v}" for k, v in extra.items())
    cfg["head_start_ray_commands"][1] = start
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cut_smoke_spec(tmp: Path, synth) -> Path:
    """sweeps/smoke.yaml, cut from 22 stages to 2 (a pre-training and its fine-tune, no baseline) for CI time,
    reading the session's synthetic set by path (the job renders none)."""
    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec["data"] = synth_data_section(synth)
    spec["grid"].update({"animal_fractions": [1.0], "finetune_fractions": [1.0], "seeds": [0]})
    spec["baselines"] = []
    spec["storage"] = str(tmp / "store")
    spec.setdefault("resources", {})["trial_resources"] = {"mixsweep_head": 1}
    path = tmp / "smoke-cut.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def ray_cli(*args: str, timeout: float, token: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(VENV_BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def test_ray_up_submit_sweep_ray_down(loopback_sshd, synth_small, tmp_path):
    import pandas as pd

    names = ["gcs", "dashboard", "client", "agent", "agent_grpc", "env_agent", "metrics", "node_manager",
             "object_manager"]
    ports = dict(zip(names, free_ports(len(names))))
    short = Path(tempfile.mkdtemp(prefix="msray-", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    config = launcher_config(tmp_path, short, loopback_sshd["key"], ports)
    marker = str(short / "ray")
    t0 = time.time()
    up = ray_cli("up", "-y", "--no-config-cache", str(config), timeout=300)
    up_seconds = time.time() - t0
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert ray_processes(marker), "ray up returned but no Ray process runs with its temp dir"
        # file_mounts synced the project to the head (the throwaway home stands in for /root there).
        assert (loopback_sshd["home"] / "mixsweep" / "pyproject.toml").is_file()

        spec = cut_smoke_spec(tmp_path, synth_small)
        t1 = time.time()
        job = ray_cli("job", "submit", "--address", f"http://127.0.0.1:{ports['dashboard']}", "--",
                      str(VENV_BIN / "mixsweep"), "run", str(spec), timeout=600, token=loopback_sshd["token"])
        job_seconds = time.time() - t1
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        results = pd.read_parquet(tmp_path / "store" / "results.parquet")
        assert len(results) == 2 and set(results["status"]) == {"done"}
        assert sorted(results["kind"]) == ["finetune", "pretrain"]
        assert results.loc[results["kind"] == "finetune", "test_miou"].between(0, 1).all()
        assert len(list((tmp_path / "store" / "wandb").glob("offline-run-*"))) == 2
    finally:
        t2 = time.time()
        down = ray_cli("down", "-y", str(config), timeout=180)
        down_seconds = time.time() - t2
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    deadline = time.time() + 30
    while ray_processes(marker) and time.time() < deadline:
        time.sleep(0.5)
    assert ray_processes(marker) == [], "ray down left Ray processes behind"
    shutil.rmtree(short, ignore_errors=True)
    print(f"\nlauncher: ray up {up_seconds:.0f} s, sweep job {job_seconds:.0f} s, ray down {down_seconds:.0f} s")
