"""`ParameterServer`: `nnps.core.server.Server` behind a Ray actor, driving the steps.

It holds the parameters, the optimizer state, the step counter and the epoch's running metrics,
and runs each chunk of steps itself through the run's transport (core/steps.py's `sync_steps`, or
`run_updates` in bounded and async runs): from the driver each step would cost two round trips
(bench/step_overhead.py). It asks for no CPU (`num_cpus=0`): a step's vector sum and optimizer
update are small beside the workers' backprop. Ray does not restart a lost server; the driver
rebuilds it from the last checkpoint (`ray_executor.RayExecutor.restore`). The step, file by file:
docs/architecture.md, "One step".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import ray

from nnps.cluster.transport import Transport, chain
from nnps.core.config import TrainConfig
from nnps.core.network import Network
from nnps.core.parts import OwnBatches, Route
from nnps.core.sampler import sampler_for
from nnps.core.server import Server, Snapshot
from nnps.core.steps import StepChannel, run_updates, sync_steps
from nnps.worker.channels.ray_calls import RayCalls
from nnps.worker.channels.tcp import TcpChannel
from nnps.worker.channels.unix import UnixChannel
from nnps.worker.gradient_worker import keep_freed_memory

Array = np.ndarray


@ray.remote(num_cpus=0)
class ParameterServer:
    def __init__(self, config: TrainConfig, network: Network, snapshot: Snapshot, n_train: int,
                 workers: list, inline_bytes: int, route: Route | None = None) -> None:  # fmt: skip
        self.sampler = sampler_for(n_train, config.batch_size, config.seed, config.partitioned)
        self.route = route  # --partitioned: which worker holds each training row (core/parts.py)
        self.own = OwnBatches(route, snapshot.draws) if route is not None and config.consistency != "sync" else None
        self.server = Server(config, network, snapshot, self.sampler.steps_per_epoch)
        self.workers = workers
        self.setting, self.inline_bytes = config.transport, inline_bytes
        self.transport: Transport | None = None  # at the first step, once the workers are placed
        self.placement: list[str] = []  # each worker's node id, and the server's (`node`), at the first step
        self.node = ""
        self.asynchronous = config.consistency != "sync"
        self.tau = config.staleness  # bounded's TAU; None for async
        keep_freed_memory()  # the optimizers' temporaries (Adam's) are vector-sized

    def _transport(self) -> Transport:
        if self.transport is None:
            self.placement = [node for _, node in ray.get([w.where.remote() for w in self.workers])]
            self.node = ray.get_runtime_context().get_node_id()
            self.transport = Transport(chain(self.setting, all(n == self.node for n in self.placement)), self._channel)
        return self.transport

    def _channel(self, name: str) -> StepChannel:
        if name == "unix":
            return UnixChannel(self.workers, self.placement, self.node, own_params=self.asynchronous)
        if name == "tcp":
            return TcpChannel(self.workers, self.placement, alone=self.asynchronous)
        return RayCalls(self.workers, self.inline_bytes)

    def run(self, stop: int) -> dict[str, Any]:
        """Apply steps until `stop` (or divergence); returns the channel record (`channels`)
        and, in bounded or async training, each update's (step, worker, version) ("updates")."""
        if self.asynchronous:
            draw = self.own.next if self.own is not None else lambda _, t: self.sampler.batch(t)
            rows = run_updates(self._transport(), self.server, draw, len(self.workers), self.tau, stop)
            return {"channels": self.channels(), "updates": rows}
        sync_steps(self._transport(), self.server, self.sampler, len(self.workers), stop, self.route)
        return {"channels": self.channels(), "updates": []}

    def channels(self) -> dict[str, Any]:
        """What carried the steps so far: transport.Transport.record (empty before the first)."""
        return self.transport.record() if self.transport is not None else {}

    def close(self) -> dict[str, Any]:
        """Close the channel (its step file goes); returns the final record."""
        if self.transport is not None:
            self.transport.close()
        return self.channels()

    def load(self, snapshot: Snapshot) -> int:  # (no --partitioned run has a warm start to hand over)
        """Take over a run at `snapshot` (its parameters, optimizer state, step and epoch
        sums): where a warm start's in-process steps left off (cluster/warm_start.py)."""
        self.server.restore(snapshot)
        return self.server.step

    def params(self) -> Array:
        return self.server.params

    def snapshot(self) -> Snapshot:
        snap = self.server.snapshot()
        return snap if self.own is None else dataclasses.replace(snap, draws=tuple(self.own.draws))

    def pid(self) -> int:
        return os.getpid()

    def ready(self) -> bool:
        return True
