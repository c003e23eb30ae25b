"""`GradientWorker`: `nnps.core.steps.ShardWorker` behind a Ray actor.

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
from typing import Any

import numpy as np
import ray
from threadpoolctl import threadpool_limits

from nnps.core.network import Network
from nnps.core.steps import ShardWorker, WorkerEnd
from nnps.worker import training_data

Array = np.ndarray

RESTARTS = 5  # per worker, for processes or nodes lost mid-run


def keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory a step frees for the next step.

    In Ray's worker processes each step's large temporaries (the shard's activations,
    deltas, the scaled images) went back to the kernel when freed and came back as fresh
    zeroed pages on the next step, where the same loop in the driver's process faults
    none; for a wide network the faults slowed the backprop by a quarter. Raising the trim
    and mmap thresholds keeps them. The memory kept is one step's peak, reused every step.
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
    def __init__(self, network: Network | None, data: str | training_data.PartsSource, threads: int = 1) -> None:
        # `data`: the name of the run's TrainingData, or (--partitioned) the worker's own parts,
        # whose network comes with the run's statistics
        self.network, self.data = network, data
        self._core: ShardWorker | None = None  # once the data is fetched (`core`)
        self._core_lock = threading.Lock()  # a channel's end may fetch it (serve_channel)
        # As many BLAS threads as CPUs Ray gave it (worker_options): k workers must not
        # fight over the cores.
        self._blas = threadpool_limits(threads, user_api="blas")
        self._channel_state: dict[str, Any] = {}  # kept between a channel's ends (a node relay)
        keep_freed_memory()

    @property
    def core(self) -> ShardWorker:
        """The shard computations over the run's data, fetched from its holder on first use
        (and again by a restarted actor)."""
        if self._core is None:
            with self._core_lock:
                if self._core is None and isinstance(self.data, training_data.PartsSource):
                    self._core = self.data.shard_worker()
                elif self._core is None:
                    self._core = ShardWorker(self.network, *training_data.fetch(self.data))
        return self._core

    def scan(self) -> dict[str, Any]:
        """--partitioned: read this worker's parts; their counts and moments (cluster/parted.py)."""
        assert isinstance(self.data, training_data.PartsSource)
        return self.data.scan()

    def gradient_sums(self, params: Array, indices: Array) -> Array:
        """The shard's reply (P + N_STATS,): what the `ray` channel calls."""
        return self.core.gradient_sums(params, indices)

    def serve_channel(self, end: WorkerEnd) -> Any:
        """Serve a channel's end (worker/channels/: unix.UnixEnd, tcp.RelayEnd, tcp.LinkEnd)
        from a thread of this process, computing with this worker's shard sums; returns at
        once, with what the end returns (why it could not, or what the server needs next)."""
        return end.start(self.core.gradient_sums, self._channel_state)

    def evaluate(self, params: Array, split: str, lo: int, hi: int | None) -> Array:
        return self.core.evaluate(params, split, lo, hi)

    def where(self) -> tuple[int, str]:
        """(process id, Ray node id): for the transport's placement, `nnps status` and fault tests."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def ready(self) -> bool:
        """Up, with its data fetched."""
        return self.core is not None


def worker_options(threads: int = 1, group: Any = None) -> dict:
    """Options for GradientWorker.options(...): spread across nodes, a CPU per BLAS thread;
    inside `group` (a placement group: a sweep's trial reserved its workers' CPUs) where
    one is given. (The threads are set in the actor with threadpoolctl: a runtime_env with
    env_vars would cost each actor a fresh worker process instead of one Ray started ahead.)"""
    if group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group), "num_cpus": threads}
    return {"scheduling_strategy": "SPREAD", "num_cpus": threads}
