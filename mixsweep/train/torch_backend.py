"""Ray Train's torch backend, choosing the process group's backend from what the workers can see.

Ray picks NCCL whenever the workers hold a GPU resource, and NCCL refuses to start without CUDA. A node that
advertises a GPU to Ray but shows no CUDA device to torch (Ray's fake autoscaler nodes; a node whose driver
is broken) would then fail every stage at start-up. Here the workers are asked first: all of them see CUDA,
NCCL; otherwise gloo, and the worker warns that it trains on its CPU (`ray_worlds.ray_world`), and the
stage's result records the device it trained on. Imported only where Ray Train runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def _sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _DeviceAwareBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        # TorchTrainer has already set NCCL for a GPU run (backend None would get it here too).
        if backend_config.backend in (None, "nccl") and worker_group.get_resources_per_worker().get("GPU", 0) > 0:
            backend = "nccl" if all(worker_group.execute(_sees_cuda)) else "gloo"
            backend_config = dataclasses.replace(backend_config, backend=backend)
        super().on_start(worker_group, backend_config)


@dataclass
class DeviceAwareTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _DeviceAwareBackend
