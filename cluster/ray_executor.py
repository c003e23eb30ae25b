"""Running the training loop's steps on Ray actors.

The driver creates k `GradientWorker`s and one `ParameterServer` holding their handles,
puts the dataset in the object store once, and then, per chunk of steps, asks the server
to run them (`server.run.remote(stop)`): the server sends each worker the parameters and
its shard's indices and applies the replies (see parameter_server.py). Only indices and
the parameter vector travel per step; the replies go from the workers to the server,
never through the driver, which waits only at the end of a chunk (progress, evaluation,
checkpoints).

Faults: a dead worker is restarted by Ray and its call retried (see GradientWorker); as
the call is a pure function of (params, indices) and the server only applies a step once
every reply has arrived, the step is applied exactly once with every gradient in it. A
dead server raises `ServerLost`; the loop rebuilds it from the last checkpoint.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from nnps.cluster.connect import inline_bytes, ray_connection
from nnps.cluster.parameter_server import ParameterServer
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ClusterError
from nnps.core.server import Snapshot
from nnps.core.shard import unpack_evaluation
from nnps.core.training import ExecutorFactory, Plan, ServerLost
from nnps.worker.gradient_worker import GradientWorker, worker_options

Array = np.ndarray


class CompiledSteps:
    """The step as a Ray compiled graph: server.plan -> k workers -> server.apply_planned,
    over shared-memory channels instead of a task submission per call (bench/step_overhead.py
    measures both: ~25% less time per step at small batches on 2 cores).

    Opt-in (NNPS_RAY_COMPILED=1), not the default: Ray marks compiled graphs experimental,
    and when a worker's node was lost mid-run, tearing the graph down blocked forever in
    Ray 2.60 (seen in tests/test_node_loss.py), where plain actor calls let Ray restart the
    worker and retry. If compiling fails or the graph breaks, RayExecutor falls back to
    plain actor calls without waiting for the teardown."""

    WINDOW = 4  # executions in flight: enough to hide the driver's submission latency

    def __init__(self, server: ray.actor.ActorHandle, workers: list) -> None:
        from ray.dag import InputNode

        with InputNode() as step:
            plan = server.plan.bind(step)
            replies = [w.gradient_sums_planned.bind(plan, i) for i, w in enumerate(workers)]
            out = server.apply_planned.bind(*replies)
        self.dag = out.experimental_compile()

    def run(self, start: int, stop: int) -> None:
        pending = []
        for step in range(start, stop):
            pending.append(self.dag.execute(step))
            if len(pending) >= self.WINDOW:
                ray.get(pending.pop(0))
        ray.get(pending)

    def teardown(self, wait_s: float) -> None:
        """Tear down in a background thread, waiting at most wait_s: with a dead actor in
        the graph, Ray's teardown can block forever."""

        def run() -> None:
            try:
                self.dag.teardown()
            except Exception:  # a broken graph may not tear down cleanly; it is discarded anyway
                pass

        thread = threading.Thread(target=run, daemon=True, name="nnps-graph-teardown")
        thread.start()
        thread.join(wait_s)


# Above this many multiply-adds in a shard's widest product, the compiled graph's
# busy-waiting readers cost more CPU than its messaging saves, on a machine whose cores the
# workers fill (bench/step_overhead.py: 784-30-10 with 2 workers on 2 cores, batch 1000
# 7.5 ms graph vs 9.2 ms plain; batch 10000 43.6 ms graph vs 29.5 ms plain).
GRAPH_MAX_SHARD_PRODUCT = 50_000_000


def compiled_wanted(plan: Plan, k: int) -> bool:
    """Compiled graphs if NNPS_RAY_COMPILED=1 and the shards are small."""
    if os.environ.get("NNPS_RAY_COMPILED", "0") != "1":
        return False
    sizes = plan.network.sizes
    widest = max(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return -(-plan.config.batch_size // k) * widest < GRAPH_MAX_SHARD_PRODUCT


class RayExecutor:
    def __init__(self, plan: Plan, dataset: Dataset, num_workers: int, compiled: bool | None = None) -> None:
        self.plan = plan
        self.compiled_wanted = compiled_wanted(plan, num_workers) if compiled is None else compiled
        self.compiled: CompiledSteps | None = None
        # Put once: every worker on a node maps the same read-only copy.
        self.data_refs = [ray.put(a) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)]
        self.n_rows = {"train": len(dataset.y_train), "test": len(dataset.y_test)}
        self.workers = [
            GradientWorker.options(**worker_options()).remote(plan.network, self.data_refs)
            for _ in range(num_workers)
        ]
        self.n_train = len(dataset.y_train)
        self.server = None
        self.restore(plan.start)
        ray.get([w.ready.remote() for w in self.workers])  # fail here, not mid-step, if none can start

    def restore(self, snapshot: Snapshot) -> None:
        """(Re)build the parameter server from a snapshot: at start, and after it was lost."""
        self._drop_compiled()
        if self.server is not None:
            ray.kill(self.server, no_restart=True)
        p = self.plan
        self.server = ParameterServer.remote(p.config, p.network, snapshot, self.n_train, self.workers, inline_bytes())
        self.reached = None
        if self.compiled_wanted:
            try:
                self.compiled = CompiledSteps(self.server, self.workers)
            except Exception as e:  # compiled graphs are experimental: any failure means the plain path
                self.fallback_reason = f"{type(e).__name__}: {e}"

    def _drop_compiled(self, wait_s: float = 10.0) -> None:
        if self.compiled is not None:
            self.compiled.teardown(wait_s)
            self.compiled = None

    def run(self, start: int, stop: int) -> None:
        if self.compiled is not None:
            try:
                self.compiled.run(start, stop)
                return
            except Exception as e:  # the graph broke (a worker died...): finish on plain actor calls
                self.fallback_reason = f"{type(e).__name__}"
                self._drop_compiled(wait_s=0.0)
        self.reached = self.server.run.remote(stop)  # returns at once; snapshot() waits

    def snapshot(self) -> Snapshot:
        try:
            if self.reached is not None:
                ray.get(self.reached)
            snap: Snapshot = ray.get(self.server.snapshot.remote())
        except RayTaskError as e:
            # The server is alive but a step failed: a worker failed past Ray's retries.
            raise ClusterError(f"a step failed on a worker: {str(e.cause).splitlines()[0] if e.cause else e}")
        except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
            raise ServerLost(f"parameter server lost: {type(e).__name__}")
        return snap

    def evaluate(self, which: str) -> tuple[float, Array]:
        params_ref = self.server.params.remote()
        bounds = np.linspace(0, self.n_rows[which], len(self.workers) + 1).astype(int)
        parts = [w.evaluate.remote(params_ref, which, int(lo), int(hi))
                 for w, lo, hi in zip(self.workers, bounds[:-1], bounds[1:]) if hi > lo]  # fmt: skip
        try:
            total = np.sum(ray.get(parts), axis=0)
        except (RayActorError, RayTaskError) as e:
            raise ServerLost(f"evaluation failed: {type(e).__name__}")
        return unpack_evaluation(total, self.plan.network.sizes[-1])

    def placement(self) -> list[tuple[int, str]]:
        """(pid, node id) of each worker."""
        return ray.get([w.where.remote() for w in self.workers])

    def close(self) -> None:
        self._drop_compiled()
        for actor in [*self.workers, self.server]:
            ray.kill(actor, no_restart=True)


@contextmanager
def ray_session(config: TrainConfig) -> Iterator[ExecutorFactory]:
    """Connect to Ray and yield a factory of RayExecutors with `config.workers` workers."""
    num_cpus = max(os.cpu_count() or 1, int(config.workers))
    with ray_connection(config.address, num_cpus=num_cpus):
        yield lambda plan, dataset: RayExecutor(plan, dataset, int(config.workers))
