"""Running the training loop's steps on Ray actors.

The driver creates k `GradientWorker`s and one `ParameterServer` holding their handles, puts the
dataset in the object store once, and runs chunks of steps through the server
(`server.run.remote(stop)`), waiting only at a chunk's end. Ray restarts a dead worker; here a
dead server raises `ServerLost` for the loop to rebuild it from the last checkpoint, a server that
dies as it starts is started again, and one that dies before a warm start's handover is replaced
by one built from the state handed over. docs/architecture.md, "One step" and "Equivalence and
faults".
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.util import get_current_placement_group as current_placement_group

from nnps.cluster.connect import embedded, inline_bytes, ray_connection
from nnps.cluster.parameter_server import ParameterServer
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.environment import WORKER_THREADS
from nnps.core.errors import ClusterError
from nnps.core.server import Snapshot
from nnps.core.threads import worker_threads
from nnps.core.parts import Route
from nnps.core.plan import Plan
from nnps.core.training import MAX_SERVER_LOSSES, ExecutorFactory, ServerLost
from nnps.worker import training_data
from nnps.worker.channels import step_file
from nnps.worker.gradient_worker import GradientWorker, worker_options

Array = np.ndarray
LOST = (ActorDiedError, ActorUnavailableError, RayActorError)  # what a call to a dead actor raises


def threads_per_worker(plan: Plan, k: int) -> int:
    """BLAS threads per worker (core/threads.py: worker_threads) on the Ray at hand;
    NNPS_WORKER_THREADS=n sets them."""
    return WORKER_THREADS.count() or worker_threads(plan.network, plan.config.batch_size, k, node_cpus())


def node_cpus() -> int | None:
    """The CPUs workers share on a one-node Ray (before the embedded one starts: this
    machine's); None on a cluster of several nodes."""
    if not ray.is_initialized():
        return os.cpu_count() or 1
    return int(ray.cluster_resources().get("CPU", 1)) if one_node() else None


def one_node() -> bool:
    """Whether the Ray at hand has one live node. Not started yet (the cost model asks
    before deciding to start Ray): the embedded one it would start, one node."""
    return not ray.is_initialized() or len([n for n in ray.nodes() if n["Alive"]]) == 1


def merge_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record of several servers' (a server rebuilt after a loss redoes the steps since
    the checkpoint, which count again): steps added, fallbacks in order, the last's rest."""
    records = [r for r in records if r]
    if not records:
        return {}
    steps: dict[str, int] = {}
    for r in records:
        for name, n in r["steps"].items():
            steps[name] = steps.get(name, 0) + n
    return {**records[-1], "steps": steps, "fallbacks": [f for r in records for f in r["fallbacks"]]}


def root_cause(e: RayTaskError) -> BaseException:
    """What the task raised, through any task it was raised through."""
    cause = e.cause if e.cause is not None else e
    while isinstance(cause, RayTaskError) and cause.cause is not None:  # raised through another task
        cause = cause.cause
    return cause


def cause_of(e: RayTaskError) -> str:
    """"IndexError: index 200 is out of bounds ...": what the task raised, in a line."""
    cause = root_cause(e)
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")


class RayExecutor:
    def __init__(self, plan: Plan, dataset: Dataset, num_workers: int, shared: str | None = None,
                 threads: int | None = None, parted: tuple[list, Any, Route] | None = None) -> None:  # fmt: skip
        """`shared`: the name of a holder of the data already in the object store (a sweep's);
        `threads`: BLAS threads (and CPUs) per worker, else threads_per_worker's; `parted`:
        (workers holding their own parts, their holder, the Route): cluster/parted.py's."""
        self.plan = plan
        self.threads = threads or threads_per_worker(plan, num_workers)
        cpus = ray.cluster_resources().get("CPU", 0)
        if embedded() and num_workers * self.threads > cpus:  # Ray would wait for the CPUs forever
            raise ClusterError(f"{num_workers} workers x {self.threads} CPUs need {num_workers * self.threads} CPUs; "
                               f"the Ray cluster has {cpus:g}")  # fmt: skip
        self.servers_built = 0  # 1 + the rebuilds after a lost server, for tests
        self.records: list[dict[str, Any]] = []  # the channel records of the servers retired
        self.last_channels: dict[str, Any] = {}  # the current server's, see channels()
        self.chunk_updates: list[tuple[int, int, int]] = []  # see updates()
        self.closed = False
        self.route: Route | None = None
        self.workers: list = []
        if parted is not None:  # each worker holds its own parts of a table
            self.workers, self.data_holder, self.route = parted
            self.data_name = ""
            self.n_rows = {"train": dataset.n_train, "test": dataset.n_test}
        else:
            # Put once: every worker on a node maps the same read-only copy; the workers find it
            # by the holder's name (worker/training_data.py).
            self.data_name, self.data_holder = (shared, None) if shared else training_data.share(
                (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))
            self.n_rows = {"train": len(dataset.y_train), "test": len(dataset.y_test)}
        self.num_workers = num_workers
        self.server = None
        self.restore(plan.start)
        ray.get([w.ready.remote() for w in self.workers])  # fail here, not mid-step, if none can start

    def restore(self, snapshot: Snapshot) -> None:
        """(Re)build the parameter server from a snapshot: at start, and after it was lost."""
        if not self.workers:
            self.workers = [GradientWorker.options(**worker_options(self.threads, current_placement_group())).remote(
                                self.plan.network, self.data_name, self.threads) for _ in range(self.num_workers)]  # fmt: skip
        if self.server is not None:
            self._retire_server()
            self.records.append(self.last_channels)
        for _ in range(MAX_SERVER_LOSSES + 1):  # a server that dies while it starts is started again
            self.server = self._start_server(snapshot)
            self.servers_built += 1
            try:
                ray.get(self.server.ready.remote())
                break
            except LOST as e:
                ray.kill(self.server, no_restart=True)
                lost = e
        else:
            raise ClusterError(f"the parameter server died each of {MAX_SERVER_LOSSES + 1} times it was started "
                               f"({type(lost).__name__}); see Ray's logs (/tmp/ray/session_latest/logs)")  # fmt: skip
        self.reached = None
        self.last_channels = {}

    def _start_server(self, snapshot: Snapshot) -> ray.actor.ActorHandle:
        p = self.plan
        return ParameterServer.remote(p.config, p.network, snapshot, self.n_rows["train"], self.workers, inline_bytes(),
                                      self.route)  # fmt: skip

    def _retire_server(self) -> None:
        """Keep the server's channel record and close its channels if it still answers,
        then kill it. A dead one's step file is swept by the next one made on its node
        (step_file.sweep_stale), or below where the driver shares the node."""
        try:
            self.last_channels = ray.get(self.server.close.remote(), timeout=5.0)
        except Exception:  # dead, or too slow to answer: killed anyway; its record so far stands
            pass
        ray.kill(self.server, no_restart=True)

    def load(self, snapshot: Snapshot) -> None:
        """Go on from `snapshot` with the same actors (a warm start's handover)."""
        try:
            ray.get(self.server.load.remote(snapshot))
        except LOST:  # the server died before it took over: a new one starts from the same state
            self.restore(snapshot)
            return
        self.reached = None

    def run(self, start: int, stop: int) -> None:
        self.chunk_updates = []
        self.reached = self.server.run.remote(stop)  # returns at once; snapshot() waits

    def snapshot(self) -> Snapshot:
        try:
            if self.reached is not None:
                done = ray.get(self.reached)
                self.last_channels, self.chunk_updates = done["channels"], done["updates"]
                self.reached = None
            snap: Snapshot = ray.get(self.server.snapshot.remote())
        except RayTaskError as e:
            # The server is alive but a step failed: a worker failed past Ray's retries.
            raise ClusterError(f"a step failed on a worker: {cause_of(e)}")
        except LOST as e:
            raise ServerLost(f"parameter server lost: {type(e).__name__}")
        return snap

    def evaluate(self, which: str) -> Array:
        params_ref = self.server.params.remote()
        if self.route is not None:  # each worker evaluates the rows it holds
            parts = [w.evaluate.remote(params_ref, which, 0, None) for w in self.workers]
        else:
            bounds = np.linspace(0, self.n_rows[which], len(self.workers) + 1).astype(int)
            parts = [w.evaluate.remote(params_ref, which, int(lo), int(hi))
                     for w, lo, hi in zip(self.workers, bounds[:-1], bounds[1:]) if hi > lo]  # fmt: skip
        try:
            total = np.sum(ray.get(parts), axis=0)
        except (RayActorError, RayTaskError) as e:  # the server's (its parameters not had) or a worker's
            if not self._server_alive():
                raise ServerLost(f"parameter server lost during evaluation: {type(e).__name__}")
            if isinstance(e, RayTaskError):
                raise ClusterError(f"evaluation failed on a worker: {cause_of(e)}")
            raise ClusterError(f"a worker died during evaluation, past Ray's restarts ({type(e).__name__})")
        return total

    def _server_alive(self) -> bool:
        try:
            return bool(ray.get(self.server.ready.remote(), timeout=30))
        except (*LOST, ray.exceptions.GetTimeoutError):
            return False

    def updates(self) -> list[tuple[int, int, int]]:
        """Bounded/async: (step, worker, version) of each update of the last chunk (core/record.py)."""
        return self.chunk_updates

    def channels(self) -> dict[str, Any]:
        """What carried the steps (cluster/transport.py: Transport.record) up to the last
        chunk's end, over every server this run had."""
        return merge_records([*self.records, self.last_channels])

    def placement(self) -> list[tuple[int, str]]:
        """(pid, node id) of each worker."""
        return ray.get([w.where.remote() for w in self.workers])

    def close(self) -> None:
        if not self.closed:
            self._retire_server()
        for actor in [*self.workers, self.data_holder]:
            if actor is not None:  # a shared holder is its owner's to end
                ray.kill(actor, no_restart=True)
        self.closed = True
        step_file.sweep_stale()  # the step files of servers that died on this machine, if any


@contextmanager
def ray_session(config: TrainConfig) -> Iterator[ExecutorFactory]:
    """Connect to Ray and yield a factory of RayExecutors with `config.workers` workers."""
    num_cpus = max(os.cpu_count() or 1, int(config.workers))
    with ray_connection(config.address, num_cpus=num_cpus):
        yield lambda plan, dataset: RayExecutor(plan, dataset, int(config.workers))
