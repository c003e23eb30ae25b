"""`ParameterServer`: `nnps.core.server.Server` behind a Ray actor.

It holds the flat parameters, the optimizer and its state, the step counter and the
epoch's running metrics. `apply` receives the workers' replies as object references
resolved by Ray (they go from the workers to the server directly, never through the
driver) and returns the new parameters, whose reference the driver hands to the next
step's workers.

It asks for no CPU (`num_cpus=0`): its work per step is one vector sum and an optimizer
update, small beside the workers' backprop, and on a 2-core laptop both cores go to
workers. A lost server is not restarted by Ray: the driver rebuilds it from the last
checkpoint (`ray_executor.RayExecutor.restore`).
"""

from __future__ import annotations

import os

import numpy as np
import ray

from nnps.core.config import TrainConfig
from nnps.core.network import Network
from nnps.core.server import Server, Snapshot

Array = np.ndarray


@ray.remote(num_cpus=0)
class ParameterServer:
    def __init__(self, config: TrainConfig, network: Network, snapshot: Snapshot, steps_per_epoch: int) -> None:
        self.server = Server(config, network, snapshot, steps_per_epoch)

    def apply(self, *replies: Array) -> Array:
        return self.server.apply(*replies)

    def params(self) -> Array:
        return self.server.params

    def snapshot(self) -> Snapshot:
        return self.server.snapshot()

    def pid(self) -> int:
        return os.getpid()
