"""The Ray cluster a job or a sweep runs on: joining it, what it has now, and what it can grow to.

Ray waits forever on a request no node can ever hold, so every launch is checked first, against what the
cluster *can* have: the autoscaler's node types and their `max_workers`. They are read from, in order,
- a launcher YAML given with --cluster-config (`ray up`'s file, or any autoscaling config);
- the cluster config an autoscaler reported to the GCS (`ray._private.state.state.get_cluster_config()`;
  KubeRay's autoscaler reports one, `ray up`'s does not);
- `~/ray_bootstrap_config.yaml`, the copy `ray up` leaves on the head (Ray Tune finds autoscaling clusters
  by the same file).
With none of them, only the nodes alive now count, and a refusal says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixsweep.errors import MixsweepError
from mixsweep.train.config import ScalingSettings

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


@dataclass(frozen=True)
class NodeType:
    """One of the autoscaler's node types: what one node has, and how many it may start."""

    name: str
    resources: dict[str, float]  # per node; empty when the provider fills them in at launch (unknown here)
    max_workers: int  # worker nodes of this type the autoscaler may start
    head: bool = False  # the head's type: one node more, the head itself

    def describe(self) -> str:
        res = ", ".join(f"{v:g} {k}" for k, v in sorted(self.resources.items())) or "resources detected at launch"
        return f"{self.name} ({res}; {'the head + ' if self.head else ''}at most {self.max_workers})"


@dataclass(frozen=True)
class ClusterShape:
    """The nodes alive now, and, on an autoscaling cluster, the node types it can grow to."""

    alive: tuple[dict, ...]  # resources of each alive node
    node_types: tuple[NodeType, ...] | None = None  # None: no autoscaler config found
    max_workers: int | None = None  # the autoscaler's cap on worker nodes of all types together
    source: str = ""  # where the node types were read

    @property
    def autoscaling(self) -> bool:
        return self.node_types is not None

    def slots_now(self, scaling: ScalingSettings) -> int:
        """How many such workers the alive nodes hold, node by node (a worker never spans two)."""
        return sum(_per_node(scaling, res) for res in self.alive)

    def slots_at_most(self, scaling: ScalingSettings) -> int:
        """How many such workers the cluster can hold at once when grown to its limits (alive nodes only, without
        an autoscaler). Node types whose resources are unknown add nothing."""
        now = self.slots_now(scaling)
        if self.node_types is None:
            return now
        budget = self.max_workers if self.max_workers is not None else 10**9
        grown = 0
        # The most workers per node first: under a cap on worker nodes of all types, that is the best choice.
        for t in sorted(self.node_types, key=lambda t: -_per_node(scaling, t.resources)):
            workers = min(t.max_workers, budget)
            budget -= workers
            grown += (workers + t.head) * _per_node(scaling, t.resources)
        return max(now, grown)

    def holds(self, bundle: dict[str, float]) -> bool | None:
        """Whether some node, alive or of a type the autoscaler can start, holds `bundle`; None when only node
        types whose resources are unknown could."""
        def fits(res: dict) -> bool:
            return all(res.get(k, 0) >= v for k, v in bundle.items() if v)

        if any(fits(res) for res in self.alive):
            return True
        types = [t for t in self.node_types or () if t.max_workers or t.head]
        if any(fits(t.resources) for t in types if t.resources):
            return True
        return None if any(not t.resources for t in types) else False

    def unknown_types(self) -> list[NodeType]:
        return [t for t in self.node_types or () if not t.resources]

    def check(self, scaling: ScalingSettings, what: str = "scaling") -> str | None:
        """Refuse, in one line, a request this cluster can never hold. Returns a note when it can only be
        judged in part (node types whose resources are detected at launch), else None."""
        need = scaling.resources_per_worker()
        per = ", ".join(f"{v:g} {k}" for k, v in need.items())
        if self.slots_at_most(scaling) >= scaling.num_workers:
            return None
        if self.node_types is None:
            total = {k: sum(res.get(k, 0) for res in self.alive) for k in need}
            have = ", ".join(f"{v:g} {k}" for k, v in total.items())
            raise MixsweepError(
                f"{what}: {scaling.num_workers} workers × ({per}) cannot be placed; the cluster has {have} over "
                f"{len(self.alive)} node(s), room for {self.slots_now(scaling)} such worker(s), and no autoscaler "
                f"config was found to grow it (pass the launcher YAML with --cluster-config; looked for "
                f"{BOOTSTRAP_CONFIG} and the GCS's cluster config)")
        unknown = self.unknown_types()
        if unknown:
            return (f"{what}: cannot check {scaling.num_workers} workers × ({per}) against node type(s) "
                    f"{', '.join(t.name for t in unknown)} of {self.source}: their resources are detected at launch")
        types = "; ".join(t.describe() for t in self.node_types)
        raise MixsweepError(
            f"{what}: {scaling.num_workers} workers × ({per}) can never be placed: the cluster holds at most "
            f"{self.slots_at_most(scaling)} such worker(s) at once; node types in {self.source}: {types}"
            + (f"; max_workers {self.max_workers}" if self.max_workers is not None else ""))

    def stage_limit(self, scaling: ScalingSettings) -> int:
        """How many stages of this scaling can run at once when the cluster is grown to its limits (at least 1)."""
        return max(1, self.slots_at_most(scaling) // scaling.num_workers)


def _per_node(scaling: ScalingSettings, resources: dict) -> int:
    need = scaling.resources_per_worker()
    return min(int(resources.get(k, 0) // v) if v else 10**9 for k, v in need.items())


# --- reading the autoscaler's node types ---------------------------------------------------------------

def node_types_from_launcher_config(config: dict, source: str) -> tuple[tuple[NodeType, ...], int | None]:
    """Node types of a cluster-launcher (or autoscaler) config, the head's type first. A `local` provider's types
    are generated the way `ray up` does (Ray's prepare_config)."""
    if not isinstance(config, dict):
        raise MixsweepError(f"{source}: not a cluster config (expected a mapping)")
    if (config.get("provider") or {}).get("type") == "local":
        import copy

        from ray.autoscaler._private.util import prepare_config

        try:
            config = prepare_config(copy.deepcopy(config))
        except Exception as e:  # Ray's own validation: a bad file is one line
            raise MixsweepError(f"{source}: not a usable cluster config ({str(e).splitlines()[0]})") from None
    types, head = config.get("available_node_types"), config.get("head_node_type")
    if not isinstance(types, dict) or not types:
        raise MixsweepError(f"{source}: available_node_types: missing or empty")
    if head not in types:
        raise MixsweepError(f"{source}: head_node_type: {head!r} is not one of available_node_types "
                            f"({', '.join(map(str, types))})")
    out = []
    try:
        for name in sorted(types, key=lambda n: n != head):
            t = types[name] or {}
            res = {str(k): float(v) for k, v in (t.get("resources") or {}).items()}
            out.append(NodeType(str(name), res, int(t.get("max_workers", 0)), head=name == head))
        cap = config.get("max_workers")
        cap = int(cap) if cap is not None else None
    except (TypeError, ValueError, AttributeError) as e:
        raise MixsweepError(f"{source}: available_node_types: {e}") from None
    return tuple(out), cap


def _node_types_from_gcs() -> tuple[tuple[NodeType, ...], int | None] | None:
    """The cluster config an autoscaler reported to the GCS (autoscaler v2, e.g. KubeRay), if any."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:
        return None
    if config is None or not config.node_group_configs:
        return None
    types = tuple(NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                           g.max_count if g.max_count >= 0 else 10**6) for g in config.node_group_configs)
    # (the head is an alive node; ClusterShape counts alive nodes when they hold more than the groups)
    return types, None


def cluster_shape(cluster_config: Path | str | None = None) -> ClusterShape:
    """The connected cluster's alive nodes, and its node types if an autoscaler config is found (module doc)."""
    import ray

    from mixsweep.yamlio import read_yaml

    alive = tuple(dict(n["Resources"]) for n in ray.nodes() if n.get("Alive"))
    if cluster_config is not None:
        path = Path(cluster_config).expanduser()
        types, cap = node_types_from_launcher_config(read_yaml(path, "cluster config"), str(path))
        return ClusterShape(alive, types, cap, str(path))
    reported = _node_types_from_gcs()
    if reported is not None:
        return ClusterShape(alive, reported[0], reported[1], "the GCS's cluster config")
    bootstrap = BOOTSTRAP_CONFIG.expanduser()
    if bootstrap.is_file():
        types, cap = node_types_from_launcher_config(read_yaml(bootstrap, "cluster config"), str(bootstrap))
        return ClusterShape(alive, types, cap, str(bootstrap))
    return ClusterShape(alive)


def check_resources(scaling: ScalingSettings, cluster_config: Path | str | None = None) -> None:
    """Refuse, with one line, a request the cluster can never satisfy; print a note when it can only be judged
    in part."""
    note = cluster_shape(cluster_config).check(scaling)
    if note:
        print(f"note: {note}")


def pending_bundles() -> dict[str, int]:
    """What the cluster is waiting to place now: each pending placement group's bundles (Tune trials and
    TorchTrainer worker groups), as {"{CPU: 2, GPU: 1}": count}."""
    import ray.util

    out: dict[str, int] = {}
    for pg in ray.util.placement_group_table().values():
        if pg.get("state") != "PENDING":
            continue
        for bundle in pg.get("bundles", {}).values():
            label = "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"
            out[label] = out.get(label, 0) + 1
    return out


# --- joining ------------------------------------------------------------------------------------------

def probe_address(address: str, timeout: float = 5.0) -> None:
    """One TCP connect to the cluster's GCS (or Ray Client) port: ray.init itself retries for minutes."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise MixsweepError(f"--address {address}: expected host:port (the head's GCS port, e.g. 10.0.0.5:6379), "
                            "ray://host:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise MixsweepError(f"--address {address}: cannot reach a Ray cluster there ({e.strerror or e}); is the "
                            "head up (`ray up cluster.yaml`, `ray status`)?") from None


def ensure_ray(address: str | None = None, quiet: bool = False) -> None:
    """Join `address` ("auto": the cluster this machine belongs to), or with None the cluster last started on
    this machine, else a new local instance; "local" always starts a new local instance. `quiet` keeps worker
    logs out of this terminal."""
    import ray

    if ray.is_initialized():
        return
    if address and address not in ("auto", "local"):
        probe_address(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=not quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise MixsweepError(f"--address {address}: cannot reach a Ray cluster ({str(e).splitlines()[0]})") from None
