"""`GradientWorker`: `nnps.core.shard.ShardWorker` behind a Ray actor.

The training data reaches the actor from Ray's object store as read-only numpy views:
one copy per node, shared zero-copy by every worker on it, put there once by the driver.
The actor is given only the name of the actor that holds the references
(worker/training_data.py) and fetches them on first use. No worker loads the data itself.

Each actor asks Ray for as many CPUs as it runs BLAS threads (`worker_threads` in
core/threads.py picks them: one across nodes, a share of the node's cores on one node),
so k workers do not fight over cores. If the actor's process dies, Ray restarts it (same
constructor arguments: the holder's name, so it fetches the same data) and retries the lost
call: `gradient_sums` is a pure function of (parameters, indices), so a retry returns the
same numbers.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import ray
from threadpoolctl import threadpool_limits

from nnps.core.network import Network
from nnps.core.shard import ShardWorker
from nnps.worker import step_links, step_sockets, training_data
from nnps.worker.node_buffers import Mapped, NodeBuffers
from nnps.worker.node_relay import NodeRelay, relay_sums
from nnps.worker.step_sockets import CONNECT_TIMEOUT_S

Array = np.ndarray

RESTARTS = 5  # per worker, for processes or nodes lost mid-run


def skip_torch_probe() -> None:
    """Tell Ray's compiled-graph channels that this process has no torch tensors to move.

    On its first step in a graph, each actor otherwise runs `import torch` to ask whether
    torch is available (ray.experimental.channel.common.ChannelContext.torch_available):
    ~5 s of a 2-core machine's start-up wherever torch happens to be installed, for
    messages that are numpy arrays. A private attribute of Ray's: if a Ray version drops
    it, this does nothing and only the start-up is slower."""
    try:
        from ray.experimental.channel.common import ChannelContext

        ChannelContext.get_current()._torch_available = False
    except (ImportError, AttributeError):
        pass


def keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory a step frees for the next step.

    In Ray's worker processes each step's large temporaries (the shard's activations,
    deltas, the scaled images) went back to the kernel when freed and came back as fresh
    zeroed pages on the next step: 740 page faults per step for 784-1024-1024-10 at 128
    examples, where the same loop in the driver's process has none. Raising the trim and
    mmap thresholds keeps them: the worker's backprop went from 28-31 to 22-23 ms per
    step (2 workers, 2 cores). The memory kept is one step's peak, reused every step.
    Linux/glibc only; elsewhere (no mallopt) this does nothing."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: below it, blocks come from the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and freed ones stay there


@ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)
class GradientWorker:
    def __init__(self, network: Network, data: str, threads: int = 1) -> None:
        self.network, self.data = network, data  # `data`: the name of the run's TrainingData
        self._core: ShardWorker | None = None  # once the data is fetched (`core`)
        self._core_lock = threading.Lock()  # the first step may come on a socket thread
        # As many BLAS threads as CPUs Ray gave it (worker_options): k workers must not
        # fight over the cores.
        self._blas = threadpool_limits(threads, user_api="blas")
        self._mapped: Mapped | None = None  # the server's step file, once a step names it
        # One writer into a slot at a time: when a socket breaks mid-step, the server redoes
        # the step with a Ray call while this worker's socket thread may still be writing
        # the same slot (GEMM accumulates into its output: two at once would mix).
        self._slot_lock = threading.Lock()
        self._relay: NodeRelay | None = None  # when this worker relays its node's steps (serve_links)
        skip_torch_probe()
        keep_freed_memory()

    @property
    def core(self) -> ShardWorker:
        """The shard computations over the run's data, fetched from its holder on first use
        (and again by a restarted actor)."""
        if self._core is None:
            with self._core_lock:
                if self._core is None:
                    self._core = ShardWorker(self.network, *training_data.fetch(self.data))
        return self._core

    def gradient_sums(self, params: Array, indices: Array) -> Array:
        return self.core.gradient_sums(params, indices)

    def _map(self, buffers: NodeBuffers) -> Mapped:
        if self._mapped is None or self._mapped.spec != buffers:
            self._mapped = Mapped(buffers)
        return self._mapped

    def gradient_sums_shared(self, buffers: NodeBuffers, i: int, indices: Array) -> bool:
        """Read the parameters from the node's step file and write the sums into reply
        slot i (node_buffers.py); the reply itself is only an acknowledgement. Maps the
        file on first use, so a worker Ray restarts maps it again by itself."""
        mapped = self._map(buffers)
        with self._slot_lock:
            self.core.gradient_sums(mapped.params, indices, out=mapped.replies[i])
        return True

    def serve_steps(self, buffers: NodeBuffers, i: int) -> bool:
        """Take slot i's steps from the server's socket (step_sockets.py) in a thread of
        this process, from now until the server closes it; returns at once. The server may
        be a node relay (node_relay.py), which removes the file's name once its members are
        connected: so the file is mapped here first."""
        self._map(buffers)
        step_sockets.serve(buffers, i, lambda indices: self.gradient_sums_shared(buffers, i, indices))
        return True

    def relay_steps(self, members: int) -> NodeBuffers:
        """Become the relay of this node's steps for `members` other workers: the step file
        and socket they are to serve (`serve_steps`) before this worker's `serve_links`."""
        network = self.network
        self._relay = NodeRelay(network.layout.size, members, network.np_dtype.name)
        return self._relay.spec

    def serve_links(self, address: tuple[str, int], token: bytes, g: int, shards: int) -> str | None:
        """Take link g's steps (step_links.py) in a thread of this process: connect to the
        server's TCP port, then for each step read `shards` shards and the parameters and
        answer with the sums (of the node's workers, if this one relays them); returns at
        once: None, or why not (the server's port, or the relay's members, not reached)."""
        relay, self._relay = self._relay, None
        network = self.network
        if relay is not None:
            try:
                relay.accept(CONNECT_TIMEOUT_S)
            except step_sockets.ChannelBroken as e:
                relay.close()
                return f"could not reach its members: {e}"
        # The link thread's own buffers: a Ray call the server retries after a broken link
        # writes a fresh array, so the two never share an output.
        params = relay.params if relay is not None else np.empty(network.layout.size, network.np_dtype)
        compute = relay_sums(relay, lambda p, indices, out: self.core.gradient_sums(p, indices, out=out))
        on_end = relay.close if relay is not None else None
        if step_links.serve(address, token, g, shards, params, compute, on_end) is None:
            return f"could not reach {address[0]}:{address[1]}"
        return None

    def gradient_sums_planned(self, plan: tuple[Array | NodeBuffers, list[Array]], i: int) -> Array | bool | None:
        """Shard i of a step planned by the server (compiled-graph path); None if empty."""
        vectors, shards = plan
        if not len(shards[i]):
            return None
        if isinstance(vectors, NodeBuffers):
            return self.gradient_sums_shared(vectors, i, shards[i])
        return self.core.gradient_sums(vectors, shards[i])

    def evaluate(self, params: Array, split: str, lo: int, hi: int) -> Array:
        return self.core.evaluate(params, split, lo, hi)

    def where(self) -> tuple[int, str]:
        """(process id, Ray node id): for `nnps status` and fault tests."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def ready(self) -> bool:
        """Up, with its data fetched."""
        return self.core is not None


def worker_options(threads: int = 1) -> dict:
    """Options for GradientWorker.options(...): spread across nodes, a CPU per BLAS thread.
    (The threads are set in the actor with threadpoolctl: a runtime_env with env_vars
    would cost each actor a fresh worker process instead of one Ray started ahead.)"""
    return {"scheduling_strategy": "SPREAD", "num_cpus": threads}
