"""The bare exchange of a step's vectors, two ways, side by side in one run.

No backprop: a server actor sends the parameter vector (P float32) to k workers, each
answers with a vector of P + 3 (as gradient sums would be), and the server adds the
replies and updates the parameters. What is left is what moving the vectors costs:

    object store   plain actor calls; the server puts the parameters once per step, each
                   reply goes through Ray's object store (nnps across nodes)
    shm file       plain actor calls carrying nothing but an acknowledgement; the vectors
                   stay in one /dev/shm file every process maps (worker/channels/step_file.py,
                   nnps on one node)

Run: .venv/bin/python bench/vector_exchange.py [--size 1863690] [--workers 2]
(1,863,690 = 784-1024-1024-10's parameters, 7.4 MB; 23,860 = 784-30-10's.) Until 2026-12-02 it
also timed Ray's compiled graph (25 ms for 7.4 MB with 2 workers on 2 cores, docs/performance.md),
which nnps no longer uses.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import ray

from nnps.worker.channels.step_file import Mapped, NodeBuffers
from nnps.worker.gradient_worker import keep_freed_memory

STEPS = 30


@ray.remote(num_cpus=1)
class Worker:
    def __init__(self, size: int, spec: NodeBuffers | None, i: int) -> None:
        keep_freed_memory()
        self.grad = np.ones(size + 3, np.float32)
        self.mapped, self.i = (Mapped(spec), i) if spec else (None, i)

    def reply(self, params: np.ndarray) -> np.ndarray:
        return self.grad * (params[0] + 1.0)  # reads the parameters, writes a fresh reply

    def reply_shared(self) -> bool:
        assert self.mapped is not None
        np.multiply(self.grad, self.mapped.params[0] + 1.0, out=self.mapped.replies[self.i])
        return True


@ray.remote(num_cpus=0)
class Server:
    def __init__(self, size: int, spec: NodeBuffers | None, workers: list) -> None:
        keep_freed_memory()
        self.workers = workers
        self.mapped = Mapped(spec) if spec else None
        self.params = self.mapped.params if self.mapped else np.zeros(size, np.float32)
        self.total = np.empty(size + 3, np.float32)

    def apply(self, *replies: np.ndarray) -> int:
        np.add(replies[0], replies[1], out=self.total) if len(replies) > 1 else np.copyto(self.total, replies[0])
        for r in replies[2:]:
            self.total += r
        self.total *= -1e-3
        self.params += self.total[:-3]
        return 1

    def run(self, steps: int, shared: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            if shared:
                ray.get([w.reply_shared.remote() for w in self.workers])
                self.apply(*(self.mapped.replies if self.mapped else []))
            else:
                ref = ray.put(self.params)
                self.apply(*ray.get([w.reply.remote(ref) for w in self.workers]))
        return (time.perf_counter() - t0) / steps


def best(f) -> float:  # type: ignore[no-untyped-def]
    f()  # warm up
    return min(f() for _ in range(3))


def main() -> None:
    size = int(sys.argv[sys.argv.index("--size") + 1]) if "--size" in sys.argv else 1_863_690
    k = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 2
    ray.init(address="local", num_cpus=max(k, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    spec = NodeBuffers.create(size, k, "float32")
    rows = {}
    try:
        workers = [Worker.remote(size, spec, i) for i in range(k)]
        server = Server.remote(size, spec, workers)
        rows["shm file"] = best(lambda: ray.get(server.run.remote(STEPS, True)))
        plain = Server.remote(size, None, workers)
        rows["object store"] = best(lambda: ray.get(plain.run.remote(STEPS, False)))
        for actor in [server, plain, *workers]:
            ray.kill(actor)
    finally:
        spec.unlink()
    print(f"{k} workers, vectors of {size:,} float32 ({4 * size / 1e6:.1f} MB); ms per exchange, best of 3 x {STEPS}")
    for name, s in rows.items():
        print(f"{name:>14} {s * 1e3:8.2f} ms  {s / rows['shm file']:5.1f}x the shm file's")
    ray.shutdown()


if __name__ == "__main__":
    main()
