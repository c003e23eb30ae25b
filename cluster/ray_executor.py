"""Running the training loop's steps on Ray actors.

One step, as the driver submits it (nothing is waited for; Ray orders the calls):

    replies_i  = worker_i.gradient_sums.remote(params_ref, shard_i)    # k workers in parallel
    params_ref = server.apply.remote(*replies_i)                       # sum, / m, optimizer step

Only the shard indices and the parameter vector travel; the replies go from the workers
to the server without passing through the driver, which blocks only at the end of a
chunk of steps (for the progress bar, evaluation and checkpoints), so steps pipeline.

Faults: a dead worker is restarted by Ray and its call retried (see GradientWorker); as
the call is a pure function of (params, indices) and the server only applies a step once
every reply has arrived, the step is applied exactly once with every gradient in it. A
dead server raises `ServerLost`; the loop rebuilds it from the last checkpoint.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from nnps.cluster.connect import ray_connection
from nnps.cluster.parameter_server import ParameterServer
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ClusterError
from nnps.core.sampler import split
from nnps.core.server import Snapshot
from nnps.core.training import ExecutorFactory, Plan, ServerLost
from nnps.worker.gradient_worker import GradientWorker, worker_options

Array = np.ndarray


class RayExecutor:
    def __init__(self, plan: Plan, dataset: Dataset, num_workers: int) -> None:
        self.plan = plan
        # Put once: every worker on a node maps the same read-only copy.
        self.data_refs = [ray.put(a) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)]
        self.n_rows = {"train": len(dataset.y_train), "test": len(dataset.y_test)}
        self.workers = [
            GradientWorker.options(**worker_options()).remote(plan.network, self.data_refs)
            for _ in range(num_workers)
        ]
        self.server = None
        self.restore(plan.start)
        ray.get([w.ready.remote() for w in self.workers])  # fail here, not mid-step, if none can start
        self.submitted = plan.start.step

    def restore(self, snapshot: Snapshot) -> None:
        """(Re)build the parameter server from a snapshot: at start, and after it was lost."""
        if self.server is not None:
            ray.kill(self.server, no_restart=True)
        p = self.plan
        self.server = ParameterServer.remote(p.config, p.network, snapshot, p.steps_per_epoch)
        self.params_ref = self.server.params.remote()
        self.submitted = snapshot.step

    def run(self, batches: Sequence[Array]) -> None:
        k = len(self.workers)
        for indices in batches:
            shards = split(indices, k)
            replies = [w.gradient_sums.remote(self.params_ref, s) for w, s in zip(self.workers, shards)]
            self.params_ref = self.server.apply.remote(*replies)
        self.submitted += len(batches)

    def snapshot(self) -> Snapshot:
        try:
            snap: Snapshot = ray.get(self.server.snapshot.remote())
        except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
            raise ServerLost(f"parameter server lost: {type(e).__name__}")
        if snap.step < self.submitted and snap.diverged_at is None:
            # A step's apply never ran: one of its replies failed past Ray's retries.
            try:
                ray.get(self.params_ref)
            except RayTaskError as e:
                raise ClusterError(f"step {snap.step} failed on a worker: {str(e.cause).splitlines()[0]}")
            except RayActorError as e:
                raise ClusterError(f"step {snap.step} failed: a worker could not be restarted ({type(e).__name__})")
        return snap

    def evaluate(self, which: str) -> tuple[float, Array]:
        bounds = np.linspace(0, self.n_rows[which], len(self.workers) + 1).astype(int)
        parts = [w.evaluate.remote(self.params_ref, which, int(lo), int(hi))
                 for w, lo, hi in zip(self.workers, bounds[:-1], bounds[1:]) if hi > lo]  # fmt: skip
        try:
            total = np.sum(ray.get(parts), axis=0)
        except (RayActorError, RayTaskError) as e:
            raise ServerLost(f"evaluation failed: {type(e).__name__}")
        n = self.plan.network.sizes[-1]
        return float(total[0]), total[1:].reshape(n, n).astype(np.int64)

    def placement(self) -> list[tuple[int, str]]:
        """(pid, node id) of each worker."""
        return ray.get([w.where.remote() for w in self.workers])

    def close(self) -> None:
        for actor in [*self.workers, self.server]:
            ray.kill(actor, no_restart=True)


@contextmanager
def ray_session(config: TrainConfig) -> Iterator[ExecutorFactory]:
    """Connect to Ray and yield a factory of RayExecutors with `config.workers` workers."""
    num_cpus = max(os.cpu_count() or 1, config.workers)
    with ray_connection(config.address, num_cpus=num_cpus):
        yield lambda plan, dataset: RayExecutor(plan, dataset, config.workers)
