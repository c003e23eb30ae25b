"""Lockstep over the step sockets without Ray, beside one process alone, in one run.

What is left of a step's cost at batch 1000 on 2 cores once Ray is out of the picture:
k plain processes (multiprocessing) map a step file and serve their shards over the
step sockets (worker/channels/unix.py), the parent drives the steps (the channel's sends and receives;
no update, the parameters stay put), against the same backprop of the whole batch in
this process on one BLAS thread and on two, and two processes running their shards
independently (no lockstep): the last is the ceiling for k workers on this machine, whatever
the coordination. 784-30-10 (or --hidden 1024,1024, relu), random data, best of 3 x 100 steps.

Run: .venv/bin/python bench/lockstep.py [--batch 1000] [--workers 2] [--hidden 30]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.sampler import split_batch
from nnps.core.steps import ShardWorker
from nnps.core.plan import build_network
from nnps.worker.channels.step_file import Mapped, NodeBuffers
from nnps.worker.channels.unix import ServerSockets, serve


def exchange(server: ServerSockets, shards: list) -> None:
    """One step's messages as the unix channel sends them: every shard, then every answer."""
    for i, shard in enumerate(shards):
        server.send_one(i, shard)
    for i in range(len(shards)):
        server.answer(i)

def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


HIDDEN = tuple(int(n) for n in arg("--hidden", "30").split(","))
STEPS = 100 if HIDDEN == (30,) else 20
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (10000, 784), dtype=np.uint8)
Y = rng.integers(0, 10, 10000).astype(np.uint8)
ACTIVATION = "sigmoid" if HIDDEN == (30,) else "relu"
CONFIG = TrainConfig(data="x", hidden=HIDDEN, activation=ACTIVATION, dtype="float32")
NET = build_network(CONFIG, Dataset("x", X, Y, X, Y))
BATCHES = [rng.permutation(10000) for _ in range(STEPS)]


def best(run) -> float:  # type: ignore[no-untyped-def]
    run()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / STEPS)
    return min(times)


def alone(size: int, out: mp.Queue | None = None, threads: int = 1) -> float:
    threadpool_limits(threads, user_api="blas")
    worker, grad = ShardWorker(NET, X, Y, X[:1], Y[:1]), np.empty(NET.layout.size + 3, np.float32)
    params = np.zeros(NET.layout.size, np.float32)
    s = best(lambda: [worker.gradient_sums(params, b[:size], out=grad) for b in BATCHES])
    if out is not None:
        out.put(s)
    return s


def serve_slot(spec: NodeBuffers, i: int) -> None:
    threadpool_limits(1, user_api="blas")
    worker, mapped = ShardWorker(NET, X, Y, X[:1], Y[:1]), Mapped(spec)
    serve(spec, i, lambda idx: worker.gradient_sums(mapped.params, idx, out=mapped.replies[i])).join()


def main() -> None:
    batch, k = int(arg("--batch", "1000")), int(arg("--workers", "2"))
    one = alone(batch)
    two = alone(batch, threads=2)
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=alone, args=(-(-batch // k), queue)) for _ in range(k)]
    for p in procs:
        p.start()
    independent = max(queue.get() for _ in procs)
    for p in procs:
        p.join()
    spec = NodeBuffers.create(NET.layout.size, k, "float32")
    server = ServerSockets(spec)
    procs = [mp.Process(target=serve_slot, args=(spec, i)) for i in range(k)]
    try:
        for p in procs:
            p.start()
        server.accept(30)
        lockstep = best(lambda: [exchange(server, split_batch(b[:batch], k)) for b in BATCHES])
    finally:
        server.close()
        for p in procs:
            p.join()
        spec.unlink()
    net = "-".join(str(n) for n in NET.sizes)
    print(f"{net} {ACTIVATION}, batch {batch}, {k} processes; ms per step, best of 3 x {STEPS}")
    print(f"  one process, whole batch, 1 thread    {one * 1e3:7.3f}")
    print(f"  one process, whole batch, 2 threads   {two * 1e3:7.3f}")
    best_one = min(one, two)
    for label, seconds in ((f"{k} processes, own shards, no lockstep", independent),
                           (f"{k} processes in lockstep over sockets", lockstep)):  # fmt: skip
        print(f"  {label} {seconds * 1e3:7.3f}  ({best_one / seconds:.2f}x best one)")


if __name__ == "__main__":
    main()
