"""Measure where distribution pays on the Ray cluster at hand (`nnps bench`).

For a network and a list of batch sizes, it times, side by side: the in-process step,
and the step with k Ray workers (each k asked for) as `nnps train --workers k` runs it, on
random data of the network's shape. The coordination cost c_k (step time minus the
compute of one shard) at each batch is saved for `--workers auto` (core/costmodel.py).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import ray

from nnps.cluster.ray_executor import RayExecutor, threads_per_worker
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.threads import threads_for
from nnps.core.plan import Plan, plan_run
from nnps.core.training import CHUNK_SECONDS, make_in_process


@dataclass
class Row:
    batch: int
    workers: int  # 0: in-process
    mode: str  # the channel (unix, tcp, ray), " <n>thr" if each worker ran n BLAS threads; in-process: "<n>thr"
    seconds: float  # per step
    compute: float  # per step, of the largest shard on one thread (k > 0)

    @property
    def examples_per_s(self) -> float:
        return self.batch / self.seconds


def random_dataset(inputs: int = 784, n: int = 20000) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, inputs), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    return Dataset("random", x, y, x[:1000], y[:1000])


def per_step(executor, steps: int, blocks: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Seconds per step: the best of `blocks` runs of steps each, after two warm-up steps.
    A block is at least steps/blocks steps and at least ~CHUNK_SECONDS of them, as long as
    a chunk of training (core/training.py): between chunks the driver waits on the server
    (a Ray round trip or two), which training pays once per chunk, not once per few steps.
    The best block, because on a small machine a transient neighbour (Ray starting a
    process to replace a killed actor) lands in one block, not in all."""
    executor.run(0, 2)  # warm up: first-step costs (actors' imports, the channel's open)
    executor.snapshot()
    t0 = time.perf_counter()
    executor.run(2, 4)
    executor.snapshot()
    per_block = max(1, steps // blocks, min(1000, int(CHUNK_SECONDS / max((time.perf_counter() - t0) / 2, 1e-6))))
    best, start = float("inf"), 4
    for _ in range(blocks):
        t0 = time.perf_counter()
        executor.run(start, start + per_block)
        executor.snapshot()
        best = min(best, (time.perf_counter() - t0) / per_block)
        start += per_block
    return best


def round_trip(n: int = 200) -> float:
    """Ray's own no-op actor round trip, in seconds."""

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self, x: int) -> int:
            return x

    a = Echo.remote()
    ray.get(a.ping.remote(0))
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(a.ping.remote(i))
    ray.kill(a)
    return (time.perf_counter() - t0) / n


def best_single_process(plan: Plan, ds: Dataset, batch: int, steps: int) -> Row:
    """The in-process step at its best BLAS thread count among 1, 2 and the one it picks
    (core/threads.py): distribution has to beat the best one process can do."""
    rows = []
    for threads in sorted({1, 2, threads_for(plan.network, batch)}):
        executor = make_in_process(plan, ds)
        executor.threads = threads
        rows.append(Row(batch, 0, f"{threads}thr", per_step(executor, steps), 0.0))
    return min(rows, key=lambda r: r.seconds)


def worker_counts(cpus: int) -> list[int]:
    """1, 2, 4, ... up to the CPUs, and the CPUs themselves: the counts worth measuring."""
    counts = [1 << i for i in range(cpus.bit_length()) if 1 << i <= cpus]
    return counts + ([cpus] if counts[-1] != cpus else [])


def measure(hidden: tuple[int, ...], batches: list[int], workers: list[int],
            transports: tuple[str, ...] = ("auto",), steps_budget: int = 20000) -> list[Row]:  # fmt: skip
    """Rows for every batch x (serial, k workers x transports: `--transport`'s settings,
    cluster/transport.py). Ray must be initialized. A row's mode is the channel that
    carried most of its steps; a transport that fell back to another is measured as that."""
    ds = random_dataset()
    rows = []
    for batch in batches:
        steps = max(10, min(200, steps_budget // batch))
        cfg = TrainConfig(data="random", hidden=hidden, batch_size=batch, lr=0.01)
        plan = plan_run(cfg, ds, None, False)
        rows.append(best_single_process(plan, ds, batch, steps))
        for k in workers:
            # One shard on the worker's BLAS threads, as a worker runs it. (The in-process
            # executor picks its own threads per step unless told: until it was told, shards
            # of over 8M multiply-adds were timed on several threads here.)
            threads = threads_per_worker(plan, k)
            shard = make_in_process(plan_run(cfg.replace(batch_size=-(-batch // k)), ds, None, False), ds)
            shard.threads = threads
            compute = per_step(shard, steps)
            for transport in transports:
                ex = RayExecutor(dataclasses.replace(plan, config=cfg.replace(transport=transport)), ds, k)
                try:
                    seconds = per_step(ex, steps)
                    done = ex.channels()["steps"]
                    mode = max(done, key=lambda name: done[name]) + (f" {threads}thr" if threads > 1 else "")
                    rows.append(Row(batch, k, mode, seconds, compute))
                finally:
                    ex.close()
    return rows


def overheads(rows: list[Row]) -> dict[int, dict[int, float]]:
    """c_k(b): seconds per step beyond the shard's compute, by workers and batch (the
    fastest mode where several were measured)."""
    out: dict[int, dict[int, float]] = {}
    for r in rows:
        if r.workers:
            c = max(r.seconds - r.compute, 0.0)
            by_batch = out.setdefault(r.workers, {})
            by_batch[r.batch] = min(c, by_batch.get(r.batch, c))
    return out
