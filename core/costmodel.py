"""When does distribution pay? A cost model of one synchronous step.

`predict` picks the k (0 = in-process) with the smallest predicted step (the model:
docs/performance.md, "The cost model"): a shard's in-process step on core/threads.py's
worker_threads, measured here on random data of the network's shape; plus c_k, the coordination
`nnps bench` measured, interpolated in log(batch) between its batches (without its file,
DEFAULT_OVERHEAD, from bench/step_overhead.py); plus the vectors at VECTOR_RATE. That last term
stands apart because c_k is measured on 784-30-10, whose vectors are small, and it dominates for
wide networks. Sync SGD with k workers equals serial SGD, so the choice changes speed only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.network import Network
from nnps.core.steps import InProcessChannel, OneChannel, sync_steps
from nnps.core.threads import blas_threads, threads_for, worker_threads

# Coordination per step (seconds) by number of workers and batch, where `nnps bench` has
# not measured it: bench/step_overhead.py's on a 2-core machine (784-30-10, the unix
# channel), the middle of its runs' ranges. It grows with the batch because the shards do
# not run fully in parallel beside the server, the driver and Ray's processes.
DEFAULT_OVERHEAD = {1: {10: 0.5e-3, 1000: 0.7e-3, 10000: 3.1e-3},
                    2: {10: 0.5e-3, 100: 0.6e-3, 1000: 2.2e-3, 10000: 5.0e-3}}  # fmt: skip
EXTRA_PER_WORKER = 0.5e-3  # beyond the measured counts, per additional worker

Overhead = dict[int, dict[int, float]]  # workers -> batch -> seconds

# Bytes per second at which a step's vectors reach the workers and come back, summed over
# the (k + 1) vectors: through the step file on one node, through Ray's objects across
# (bench/vector_exchange.py; docs/performance.md).
VECTOR_RATE = {"shm": 4e9, "store": 1.5e9}


def overhead_file() -> Path:
    from nnps.core.catalog import cache_dir

    return cache_dir() / "overhead.json"


def load_overhead() -> tuple[Overhead, str]:
    try:
        data = json.loads(overhead_file().read_text())
        overhead = {int(k): {int(b): float(c) for b, c in by_batch.items()} for k, by_batch in data["overhead_s"].items()}
        return overhead, f"measured by nnps bench on {data['where']}"
    except (OSError, ValueError, KeyError, AttributeError, TypeError):  # absent, or another version's file
        return {k: dict(v) for k, v in DEFAULT_OVERHEAD.items()}, "defaults from a 2-core laptop (run `nnps bench` to measure yours)"


def save_overhead(overhead: Overhead, where: str) -> Path:
    path = overhead_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {str(k): {str(b): c for b, c in by_batch.items()} for k, by_batch in overhead.items()}
    path.write_text(json.dumps({"overhead_s": data, "where": where}))
    return path


def at_batch(by_batch: dict[int, float], batch: int) -> float:
    """c at `batch`: linear in log(batch) between the measured batches, flat beyond them."""
    sizes = sorted(by_batch)
    if batch <= sizes[0]:
        return by_batch[sizes[0]]
    if batch >= sizes[-1]:
        return by_batch[sizes[-1]]
    hi = next(b for b in sizes if b >= batch)
    lo = max(b for b in sizes if b < batch)
    t = (math.log(batch) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return by_batch[lo] + (by_batch[hi] - by_batch[lo]) * t


def overhead_for(k: int, batch: int, overhead: Overhead) -> float:
    """c_k at `batch`: measured (at_batch), else interpolated between the nearest measured
    counts, else extrapolated by EXTRA_PER_WORKER per worker."""
    c = {n: at_batch(by_batch, batch) for n, by_batch in overhead.items()}
    if k in c:
        return c[k]
    below, above = [n for n in c if n < k], [n for n in c if n > k]
    if below and above:
        lo, hi = max(below), min(above)
        return c[lo] + (c[hi] - c[lo]) * (k - lo) / (hi - lo)
    top = max(c)
    return c[top] + (k - top) * EXTRA_PER_WORKER


def transfer_seconds(network: Network, k: int, rate: float) -> float:
    """The step's vectors at `rate` bytes/s: the parameters to the workers, k replies back."""
    return (k + 1) * network.layout.size * network.np_dtype.itemsize / rate


def step_seconds(network: Network, batch: int, threads: int | None, steps: int = 0) -> float:
    """Measured seconds of one in-process step at `batch` (random data of the right shape)."""
    from nnps.core.server import Server, Snapshot
    from nnps.core.steps import ShardWorker

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, network.sizes[0]), dtype=np.uint8)
    y = (rng.standard_normal((batch, network.sizes[-1])).astype(np.float32) if network.regression
         else rng.integers(0, network.sizes[-1], batch).astype(np.uint8))  # fmt: skip
    worker = ShardWorker(network, x, y, x[:1], y[:1])
    server = Server(TrainConfig(lr=1e-9), network, Snapshot(np.zeros(network.layout.size, network.np_dtype)), 1)
    same = SameBatch(np.arange(batch))
    steps = steps or max(3, min(50, 20000 // batch))
    carrier = OneChannel(InProcessChannel(worker))
    with blas_threads(threads):
        sync_steps(carrier, server, same, 1, 1)  # the first step pays for allocations: not timed
        t0 = time.perf_counter()
        sync_steps(carrier, server, same, 1, 1 + steps)
        return (time.perf_counter() - t0) / steps


@dataclass(frozen=True)
class SameBatch:
    """Every step on the same examples: a step's time without the sampler's."""

    indices: np.ndarray

    def batch(self, step: int) -> np.ndarray:
        return self.indices


@dataclass
class Choice:
    workers: int
    predicted_s: dict[int, float]  # k -> seconds per step
    source: str

    def line(self, batch: int) -> str:
        p = self.predicted_s
        pick = "in-process" if self.workers == 0 else f"{self.workers} Ray worker{'s' if self.workers > 1 else ''}"
        others = ", ".join(f"{k} worker{'s' if k > 1 else ''} {v * 1e3:.2f} ms" for k, v in sorted(p.items()) if k)
        return (f"--workers auto: {pick} ({p[self.workers] * 1e3:.2f} ms/step predicted at batch {batch}; "
                f"in-process {p[0] * 1e3:.2f} ms, {others}; coordination costs: {self.source})")  # fmt: skip


def predict(network: Network, batch: int, counts: Iterable[int], rate: float = VECTOR_RATE["shm"],
            cpus: int | None = None) -> Choice:  # fmt: skip
    """Predicted seconds per step in-process and with each k in `counts` workers whose
    vectors move at `rate` bytes/s, sharing one node's `cpus` (None: across nodes); the best."""
    overhead, source = load_overhead()
    predicted = {0: step_seconds(network, batch, threads_for(network, batch))}
    for k in counts:
        shard, threads = math.ceil(batch / k), worker_threads(network, batch, k, cpus)
        predicted[k] = (step_seconds(network, shard, threads) + overhead_for(k, batch, overhead)
                        + transfer_seconds(network, k, rate))  # fmt: skip
    best = min(predicted, key=lambda k: (predicted[k], k))
    return Choice(best, predicted, source)


def sweep_shape(cpus: int, trials: int, predicted: dict[int, float], concurrency: int | None = None,
                workers: int | None = None) -> tuple[int, int]:  # fmt: skip
    """(c trials at a time, k workers each) that finish `trials` like trials soonest: rounds
    of c trials, each step taking predicted[k] (k = 0: in-process). A trial takes a CPU
    in-process, 1 + k with k workers (its process drives them; the server asks for none).
    `concurrency` or `workers` given: that one is fixed, the other chosen."""
    best: tuple[tuple[float, int], int, int] | None = None
    for k, t in predicted.items():
        if workers is not None and k != workers:
            continue
        fit = cpus // (1 + k if k else 1)
        c = min(trials, fit if concurrency is None else concurrency)
        if c < 1 or c > fit:
            continue
        key = (math.ceil(trials / c) * t, k)  # the fewest workers among equals
        if best is None or key < best[0]:
            best = (key, c, k)
    if best is None:
        raise ValueError(f"no shape fits {cpus} CPUs (concurrency {concurrency}, workers {workers})")
    return best[1], best[2]
