"""Running the training loop's steps on Ray actors.

The driver creates k `GradientWorker`s and one `ParameterServer` holding their handles,
puts the dataset in the object store once, and then runs chunks of steps by asking the
server to run them (`server.run.remote(stop)`: it sends each worker its shard's indices,
and the parameters or where they are, and applies the replies, see parameter_server.py;
on one node over the step sockets), or, on one node without them or with
NNPS_RAY_COMPILED=1, as a compiled graph
(`CompiledSteps`: server.plan -> k workers -> server.apply_planned over shared-memory
channels), falling back to the server's loop if the graph fails.
Only indices and the parameter vector travel per step; the replies go from the workers to
the server, never through the driver, which waits only at the end of a chunk (progress,
evaluation, checkpoints).

Faults: a dead worker is restarted by Ray and its call retried (see GradientWorker); as
the call is a pure function of (params, indices) and the server only applies a step once
every reply has arrived, the step is applied exactly once with every gradient in it. A
dead server raises `ServerLost`; the loop rebuilds it from the last checkpoint. A server
that dies as it starts is started again, and one that dies before a warm start's handover
(`load`) is replaced by one built from the state handed over. A broken
compiled graph is replaced, actors and all, and its chunk redone on plain calls.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from nnps.cluster.connect import embedded, inline_bytes, ray_connection
from nnps.cluster.parameter_server import ParameterServer
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ClusterError
from nnps.core.server import Snapshot
from nnps.core.shard import unpack_evaluation
from nnps.core.threads import worker_threads
from nnps.core.training import MAX_SERVER_LOSSES, ExecutorFactory, Plan, ServerLost
from nnps.worker import node_buffers, training_data
from nnps.worker.gradient_worker import GradientWorker, worker_options

Array = np.ndarray
LOST = (ActorDiedError, ActorUnavailableError, RayActorError)  # what a call to a dead actor raises


class CompiledSteps:
    """The step as a Ray compiled graph: server.plan -> k workers -> server.apply_planned,
    over shared-memory channels instead of a task submission per call. On 2 cores with 2
    workers it cuts the step's coordination from ~2.3-3 Ray round trips to ~1-1.8
    (bench/step_overhead.py), the difference between losing to one process and beating it
    at batch 1,000.

    Used on one node without the step sockets (no step file, or NNPS_STEP_SOCKETS=0) or
    when NNPS_RAY_COMPILED=1 (see compiled_wanted), with a fallback: Ray marks compiled
    graphs experimental (and deprecated in its newer docs), and when a worker dies the graph
    breaks for good. So if compiling fails, or an execution raises, RayExecutor drops the
    graph (its teardown in a background thread: with a dead actor in it, Ray 2.60's
    teardown can block forever), replaces its actors and finishes the run on plain actor
    calls, where Ray restarts a dead worker and retries."""

    WINDOW = 4  # executions in flight: enough to hide the driver's submission latency

    def __init__(self, server: ray.actor.ActorHandle, workers: list) -> None:
        from ray.dag import InputNode

        with InputNode() as step:
            plan = server.plan.bind(step)
            replies = [w.gradient_sums_planned.bind(plan, i) for i, w in enumerate(workers)]
            out = server.apply_planned.bind(*replies)
        self.dag = out.experimental_compile()

    def run(self, start: int, stop: int) -> None:
        pending: list = []
        try:
            for step in range(start, stop):
                pending.append(self.dag.execute(step))
                if len(pending) >= self.WINDOW:
                    ray.get(pending.pop(0))
            ray.get(pending)
        except Exception:
            # The graph is broken and its results will never be read; otherwise each
            # unread reference tries to free its result when collected, and raises from
            # __del__ on the closed channel (Ray 2.60). Private flag; harmless if it goes.
            for ref in pending:
                ref._ray_get_called = True
            raise

    def teardown(self, wait_s: float) -> bool:
        """Tear down in a background thread, waiting at most wait_s: with a dead actor in
        the graph, Ray's teardown can block forever. True if it finished."""

        def run() -> None:
            try:
                self.dag.teardown()
            except Exception:  # a broken graph may not tear down cleanly; it is discarded anyway
                pass

        thread = threading.Thread(target=run, daemon=True, name="nnps-graph-teardown")
        thread.start()
        thread.join(wait_s)
        return not thread.is_alive()


# Above this many multiply-adds in a shard's widest product, the compiled graph's
# busy-waiting readers cost more CPU than its messaging saves when the workers fill every
# core (bench/step_overhead.py: 784-30-10 with 2 workers on 2 cores, batch 1000 7.5 ms
# graph vs 9.2 ms plain; batch 10000 43.6 ms graph vs 29.5 ms plain). With cores to spare
# the graph won at every size measured (16 cores, 2 workers: batch 10000 13.2 vs 18.0 ms;
# 784-1024-1024-10 at batch 256 20.6 vs 25.4 ms).
GRAPH_MAX_SHARD_PRODUCT = 50_000_000


def flag_setting(name: str) -> bool | None:
    """An on/off environment variable: "1" True, "0" False, anything else (auto) None."""
    return {"1": True, "0": False}.get(os.environ.get(name, "auto"))


def compiled_wanted(plan: Plan, k: int, threads: int = 1) -> bool:
    """Compiled graphs on a one-node Ray (the embedded default) when a core is left over
    for the server, or the shards are small; unless NNPS_RAY_COMPILED=0 (=1: always).
    Not across nodes: with a node lost mid-run, the broken graph's actors stayed deaf to
    plain calls and the run hung (Ray 2.60, tests/test_node_loss.py), where plain calls
    let Ray restart the workers elsewhere."""
    forced = flag_setting("NNPS_RAY_COMPILED")
    if forced is not None:
        return forced
    if not one_node():
        return False
    if k * threads < ray.cluster_resources().get("CPU", 0):
        return True  # a core to spare for the server's and the driver's channel readers
    return -(-plan.config.batch_size // k) * plan.network.layout.widest_product < GRAPH_MAX_SHARD_PRODUCT


def shared_wanted() -> bool:
    """The step's vectors through a file in /dev/shm (worker/node_buffers.py) on a one-node
    Ray, unless NNPS_SHARED_MEMORY=0 (=1: always, which fails on a multi-node cluster).
    Across nodes the workers cannot map the server's file: Ray's object store carries them."""
    forced = flag_setting("NNPS_SHARED_MEMORY")
    if forced is not None:
        return forced
    return node_buffers.available() and one_node()


def threads_setting(name: str) -> int | None:
    """A thread count from the environment variable `name`; None for unset or auto."""
    setting = os.environ.get(name, "auto")
    if setting == "auto":
        return None
    if not setting.isdigit() or int(setting) < 1:
        raise ClusterError(f"{name}={setting!r}: expected a whole number >= 1, or auto")
    return int(setting)


def threads_per_worker(plan: Plan, k: int) -> int:
    """BLAS threads per worker (core/threads.py: worker_threads) on the Ray at hand;
    NNPS_WORKER_THREADS=n sets them."""
    return threads_setting("NNPS_WORKER_THREADS") or worker_threads(plan.network, plan.config.batch_size, k, node_cpus())


def threads_for_server() -> int:
    """Threads for the server's sum and update (core/server.py): NNPS_SERVER_THREADS, 1 by
    default. Two threads did the update of 784-1024-1024-10 1.2-1.5x faster on 2 cores in
    isolation (bench/server_update.py), but a whole step of 2 workers over the sockets took
    25.39 / 26.97 ms with them against 26.32 / 25.94 ms without (docs/results/2-core/
    server_threads_1024.txt): nothing beyond the noise, so off. Unmeasured where cores are spare."""
    return threads_setting("NNPS_SERVER_THREADS") or 1


def node_cpus() -> int | None:
    """The CPUs workers share on a one-node Ray (before the embedded one starts: this
    machine's); None on a cluster of several nodes."""
    if not ray.is_initialized():
        return os.cpu_count() or 1
    return int(ray.cluster_resources().get("CPU", 1)) if one_node() else None


def sockets_wanted() -> bool:
    """Step signals through Unix sockets (worker/step_sockets.py) wherever the vectors are
    in a step file, unless NNPS_STEP_SOCKETS=0; they replace the compiled graph there
    unless NNPS_RAY_COMPILED=1 asks for it."""
    forced = flag_setting("NNPS_STEP_SOCKETS")
    if forced is not None:
        return forced
    return flag_setting("NNPS_RAY_COMPILED") is not True


def links_wanted() -> bool:
    """Steps over TCP links (worker/step_links.py) where the workers cannot map the step
    file: on a cluster of several nodes, unless NNPS_STEP_LINKS=0 (=1: also on one node
    without the step file, as the tests use it)."""
    forced = flag_setting("NNPS_STEP_LINKS")
    if forced is not None:
        return forced
    return not one_node()


def relay_wanted() -> bool:
    """Over TCP links, one link per node, relayed by its first worker (worker/node_relay.py),
    unless NNPS_NODE_RELAY=0: one link per worker."""
    return flag_setting("NNPS_NODE_RELAY") is not False


def one_node() -> bool:
    """Whether the Ray at hand has one live node. Not started yet (the cost model asks
    before deciding to start Ray): the embedded one it would start, one node."""
    return not ray.is_initialized() or len([n for n in ray.nodes() if n["Alive"]]) == 1


class RayExecutor:
    def __init__(self, plan: Plan, dataset: Dataset, num_workers: int, compiled: bool | None = None,
                 shared: bool | None = None, sockets: bool | None = None,
                 links: bool | None = None, relay: bool | None = None) -> None:  # fmt: skip
        self.plan = plan
        self.threads = threads_per_worker(plan, num_workers)
        cpus = ray.cluster_resources().get("CPU", 0)
        if embedded() and num_workers * self.threads > cpus:  # Ray would wait for the CPUs forever
            raise ClusterError(f"{num_workers} workers x {self.threads} CPUs need {num_workers * self.threads} CPUs; "
                               f"the Ray cluster has {cpus:g}")  # fmt: skip
        self.server_threads = threads_for_server()
        self.shared_wanted = shared_wanted() if shared is None else shared
        # With the vectors in a step file, the step's signals go through sockets (the
        # server's plain loop) instead of a compiled graph; compiled=True asks for the graph.
        sockets = sockets_wanted() if sockets is None else sockets
        self.sockets_wanted = self.shared_wanted and sockets and not compiled
        links = links_wanted() if links is None else links
        self.links_wanted = not self.shared_wanted and links and not compiled
        self.relay_wanted = relay_wanted() if relay is None else relay  # a link per node, or per worker
        self.compiled_wanted = (not self.sockets_wanted and not self.links_wanted
                                and compiled_wanted(plan, num_workers, self.threads)
                                if compiled is None else compiled)  # fmt: skip
        self.buffers: node_buffers.NodeBuffers | None = None  # the server's step file, if any
        self.step_files: list[str] = []  # every server's step file, for tests
        self.servers_built = 0  # 1 + the rebuilds after a lost server, for tests
        self.compiled: CompiledSteps | None = None
        self.fallback_reason: str | None = None  # why the graph was not used or was dropped
        self.steps_by_path = {"graph": 0, "plain": 0}  # what ran where: for `nnps bench` and tests
        self.last_channels: dict = {}  # the server's, see channels()
        self.closed = False
        # Put once: every worker on a node maps the same read-only copy; the workers find it
        # by the holder's name (worker/training_data.py).
        self.data_name, self.data_holder = training_data.share(
            (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))
        self.n_rows = {"train": len(dataset.y_train), "test": len(dataset.y_test)}
        self.num_workers = num_workers
        self.workers: list = []
        self.server = None
        self.restore(plan.start)
        ray.get([w.ready.remote() for w in self.workers])  # fail here, not mid-step, if none can start

    def restore(self, snapshot: Snapshot) -> None:
        """(Re)build the parameter server from a snapshot: at start, and after it was lost.
        Workers that were in a compiled graph are replaced too: a graph whose server died
        leaves them in its execution loop, deaf to plain calls."""
        self._rebuild(snapshot, fresh_workers=not self.workers or self.compiled is not None)

    def _rebuild(self, snapshot: Snapshot, fresh_workers: bool) -> None:
        self._drop_compiled()
        old = [self.server] if self.server is not None else []
        if fresh_workers:
            old += self.workers
            self.workers = [GradientWorker.options(**worker_options(self.threads)).remote(
                                self.plan.network, self.data_name, self.threads) for _ in range(self.num_workers)]  # fmt: skip
        for actor in old:
            ray.kill(actor, no_restart=True)
        self._drop_buffers()
        for _ in range(MAX_SERVER_LOSSES + 1):  # a server that dies while it starts is started again
            self.server = self._start_server(snapshot)
            self.servers_built += 1
            try:
                self.buffers = ray.get(self.server.vectors.remote())
                break
            except LOST as e:
                ray.kill(self.server, no_restart=True)
                lost = e
        else:
            raise ClusterError(f"the parameter server died each of {MAX_SERVER_LOSSES + 1} times it was started "
                               f"({type(lost).__name__}); see Ray's logs (/tmp/ray/session_latest/logs)")  # fmt: skip
        if self.buffers is not None:
            self.step_files.append(self.buffers.path)
        self.reached = None
        self.last = snapshot  # the state a broken graph's chunk is redone from
        if self.compiled_wanted and self.fallback_reason is None:
            try:
                self.compiled = CompiledSteps(self.server, self.workers)
            except Exception as e:  # compiled graphs are experimental: any failure means the plain path
                self.fallback_reason = f"{type(e).__name__}: {e}"

    def _start_server(self, snapshot: Snapshot) -> ray.actor.ActorHandle:
        p = self.plan
        return ParameterServer.remote(p.config, p.network, snapshot, self.n_rows["train"], self.workers,
                                      inline_bytes(), self.shared_wanted, self.server_threads,
                                      self.sockets_wanted, self.links_wanted, self.relay_wanted)  # fmt: skip

    def _drop_buffers(self) -> None:
        """Remove the retired server's step file. The driver usually shares the server's
        node; where it does not (Ray Client), no file of that name is here, and the next
        server on that node sweeps it (node_buffers.sweep_stale)."""
        if self.buffers is not None:
            self.buffers.unlink()
            self.buffers = None

    def _drop_compiled(self, wait_s: float = 0.0) -> bool:
        """Tear the graph down (in the background: a broken graph's can block forever);
        True if there was none or it finished within wait_s."""
        done = True
        if self.compiled is not None:
            done = self.compiled.teardown(wait_s)
            self.compiled = None
        return done

    def load(self, snapshot: Snapshot) -> None:
        """Go on from `snapshot` with the same actors (a warm start's handover): one call
        to the server, or, with a compiled graph, whose server answers no plain calls, a
        rebuilt server."""
        if self.compiled is not None:
            self.restore(snapshot)
            return
        try:
            ray.get(self.server.load.remote(snapshot))
        except LOST:  # the server died before it took over: a new one starts from the same state
            self.restore(snapshot)
            return
        self.last, self.reached = snapshot, None

    def run(self, start: int, stop: int) -> None:
        if self.compiled is not None:
            try:
                self.compiled.run(start, stop)
                self.steps_by_path["graph"] += stop - start
                return
            except Exception as e:  # the graph broke (a worker died...): no more graphs this run
                self.fallback_reason = f"{type(e).__name__}"
                # Its server may have applied part of the chunk and its actors may be stuck
                # in the graph's loop: replace them all and redo the chunk from its start.
                self._rebuild(self.last, fresh_workers=True)
        self.steps_by_path["plain"] += stop - start
        self.reached = self.server.run.remote(stop)  # returns at once; snapshot() waits

    def snapshot(self) -> Snapshot:
        try:
            if self.reached is not None:
                ray.get(self.reached)
            snap: Snapshot = ray.get(self.server.snapshot.remote())
            self.last = snap
        except RayTaskError as e:
            # The server is alive but a step failed: a worker failed past Ray's retries.
            raise ClusterError(f"a step failed on a worker: {str(e.cause).splitlines()[0] if e.cause else e}")
        except LOST as e:
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

    def channels(self) -> dict:
        """The current server's steps by channel ("socket", "link", "ray"), why sockets or
        links were dropped, if they were, and the workers each link carried ("link_groups");
        graph steps are in steps_by_path. After close: the last."""
        if not self.closed:
            self.last_channels = ray.get(self.server.channels.remote())
        return self.last_channels

    def link_note(self) -> str | None:
        """A line for the user if the TCP links were dropped for Ray calls (a worker or node
        lost, or a port a firewall drops): the run's result is the same, its steps slower."""
        done = self.channels()
        if not self.links_wanted or not done.get("socket_error"):
            return None
        return (f"note: {done['ray']} of {done['link'] + done['ray']} steps went over Ray calls, slower than the "
                f"TCP links between the nodes, which were dropped: {done['socket_error']}")  # fmt: skip

    def placement(self) -> list[tuple[int, str]]:
        """(pid, node id) of each worker."""
        return ray.get([w.where.remote() for w in self.workers])

    def close(self) -> None:
        if self._drop_compiled(wait_s=5.0):  # a healthy graph tears down in well under a second
            try:  # a plain call queues behind each actor's graph loop: it has ended once this returns
                ray.get([a.ready.remote() for a in [*self.workers, self.server]], timeout=5.0)
                self.channels()  # kept for nnps bench and tests
            except Exception:  # dead or slow actors: they are killed below anyway
                pass
        for actor in [*self.workers, self.server, self.data_holder]:
            ray.kill(actor, no_restart=True)
        self.closed = True
        self._drop_buffers()


@contextmanager
def ray_session(config: TrainConfig) -> Iterator[ExecutorFactory]:
    """Connect to Ray and yield a factory of RayExecutors with `config.workers` workers."""
    num_cpus = max(os.cpu_count() or 1, int(config.workers))
    with ray_connection(config.address, num_cpus=num_cpus):
        yield lambda plan, dataset: RayExecutor(plan, dataset, int(config.workers))
