"""Warm start: train in the driver while Ray starts, then hand the run to the workers.

`RayStart` starts Ray and the actors on a thread; `WarmStart` takes the steps in-process
meanwhile and, at the first chunk boundary after the actors are ready, hands the parameter server
its state (`ParameterServer.load`). Synchronous SGD computes the same steps in one process as in
k, so the result does not change. The handover, its faults and its traps: docs/architecture.md,
"Start-up: the warm start".

Left out: handing back from the workers to the driver (a lost server is rebuilt on Ray, as
without warm start).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nnps.cluster.connect import hiding, ray_connection
from nnps.core.datasets import Dataset
from nnps.core.server import Snapshot
from nnps.core.threads import blas_cap
from nnps.core.plan import Plan
from nnps.core.training import Executor, make_in_process

if TYPE_CHECKING:
    from nnps.cluster.ray_executor import RayExecutor


class RayStart:
    """Starts the embedded Ray on a background thread, then the actors of a run. Until
    the actors are up (`uncap`), BLAS runs on one thread in this process: the start thread
    forks Ray's processes, and a multithreaded product beside a fork hangs (blas_cap;
    `nnps train` hung at batch 1000 here). Ray's start wants the other cores anyway."""

    def __init__(self, num_cpus: int) -> None:
        self.t0 = time.perf_counter()
        self.stack = ExitStack()  # undone on the caller's thread
        self._ray = ExitStack()  # undone on the start thread: ray.shutdown() from another thread
        #                          than ray.init()'s waits for a timeout instead
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nnps-ray-start")
        if threading.current_thread() is threading.main_thread():
            # What ray.init does on the main thread: SIGTERM (`ray job stop`, kill) exits
            # through the finally blocks, so Ray is shut down, not orphaned.
            self.stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, _exit_on_sigterm))
        # Ray's warning that ray.init off the main thread sets no SIGTERM handler: set above
        self.stack.enter_context(hiding("ray._private.worker", "SIGTERM handler is not set"))
        self._capped = ExitStack()  # until the start thread is done forking Ray's processes (blas_cap)
        self._capped.enter_context(blas_cap(1))
        self.connected: Future = self._pool.submit(self._ray.enter_context, ray_connection(None, num_cpus))

    def executor(self, make: Callable[[Plan, Dataset], Executor], plan: Plan, dataset: Dataset) -> Future:
        """`make(plan, dataset)` on the start thread, once Ray is up (the thread runs one
        task at a time); the future raises what the start raised."""

        def build() -> Executor:
            self.connected.result()  # Ray's error, not a second ray.init from ray.put
            return make(plan, dataset)

        return self._pool.submit(build)

    def uncap(self) -> None:
        """BLAS may use threads again (once the start thread has forked its last process)."""
        self._capped.close()

    def close(self) -> None:
        """Wait for the start (ray.init cannot be interrupted), then shut Ray down; raises
        what ray.init raised."""
        try:
            self._pool.submit(self._ray.close).result()
        finally:
            self._pool.shutdown(wait=True)
            self.uncap()
            self.stack.close()
        self.connected.result()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


WARM_NICE = 10  # the in-process steps' niceness while Ray starts (Linux: per thread)


class Background:
    """An in-process executor whose work runs on a thread of lower priority (nice +10 on
    Linux), so that Ray's starting processes come first where cores are few: at equal
    priority the warm steps delay the workers' start by more than they gain. The thread ends with the warm phase; the driver's own thread
    keeps its priority (an unprivileged process cannot raise a priority it lowered)."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="nnps-warm", initializer=_lower_priority)

    def run(self, start: int, stop: int) -> None:
        self.pool.submit(self.inner.run, start, stop).result()

    def snapshot(self) -> Snapshot:
        return self.pool.submit(self.inner.snapshot).result()

    def evaluate(self, split: str) -> np.ndarray:
        return self.pool.submit(self.inner.evaluate, split).result()

    def restore(self, snapshot: Snapshot) -> None:
        self.pool.submit(self.inner.restore, snapshot).result()

    def updates(self) -> list[tuple[int, int, int]]:
        return self.inner.updates()

    def channels(self) -> dict[str, Any] | None:
        return self.inner.channels()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.inner.close()


def _lower_priority() -> None:
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS takes a process id, not a thread's
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_NICE)
        except OSError:
            pass  # not allowed here: the steps run at normal priority


class WarmStart:
    """An Executor that runs steps in-process until the Ray executor is ready, then
    hands the run over at a chunk boundary and delegates to it."""

    def __init__(self, plan: Plan, dataset: Dataset, remote: Future, say: Callable[[str], None],
                 t0: float | None = None, uncap: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.local: Executor = Background(make_in_process(plan, dataset, shards=int(plan.config.workers)))
        self.active: Executor = self.local
        self.remote, self.say, self.uncap = remote, say, uncap
        self.t0 = time.perf_counter() if t0 is None else t0  # when Ray began to start
        self.workers = plan.config.workers
        self.first_step = plan.start.step
        self.handed_over_at: int | None = None  # the first step the workers took
        self.local_steps = 0  # steps run in-process
        self.raised = False  # the start's error went up through run()

    def run(self, start: int, stop: int) -> None:
        if self.active is self.local and self.remote.done():
            self.raised = self.remote.exception() is not None
            remote: RayExecutor = self.remote.result()  # raises a failed start's error
            self.uncap()  # the start thread forks no more
            remote.load(self.local.snapshot())
            self.local.close()
            self.active, self.handed_over_at = remote, start
            self.say(f"warm start: {start - self.first_step} steps ran in-process while Ray and the workers started "
                     f"({self.seconds():.1f} s); {self.workers} workers go on from step {start}")  # fmt: skip
        if self.active is self.local:
            self.local_steps += stop - start
        self.active.run(start, stop)

    def updates(self) -> list[tuple[int, int, int]]:
        return self.active.updates()

    def channels(self) -> dict[str, Any]:
        """The workers' channel record (cluster/transport.py), its steps led by those run
        in-process while Ray started (steps redone after a lost server count again)."""
        record = self.active.channels() or {"chain": [], "fallbacks": []}
        return {**record, "steps": {"in-process": self.local_steps, **record.get("steps", {})}}

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def snapshot(self) -> Snapshot:
        return self.active.snapshot()

    def evaluate(self, split: str) -> np.ndarray:
        return self.active.evaluate(split)

    def restore(self, snapshot: Snapshot) -> None:
        self.active.restore(snapshot)

    def close(self) -> None:
        if self.active is not self.local:
            self.active.close()
            return
        self.local.close()
        # The run ended (or was interrupted) before the workers were up: wait for them, so
        # that a start that failed fails the run as it would without a warm start (what was
        # written stays), and so that Ray is shut down, not left running: ray.init cannot
        # be interrupted.
        if not self.remote.done():
            self.say("waiting for Ray and the workers to finish starting, to shut them down")
        error = self.remote.exception()
        if error is not None:
            if not self.raised:
                raise error
            return
        self.remote.result().close()
        self.say(f"warm start: every step ran in-process; Ray and the workers took {self.seconds():.1f} s to start "
                 f"(--no-warm-start waits for them)")  # fmt: skip
