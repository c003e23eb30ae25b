"""The parameter server's sum and update on 1, 2, 4, ... threads, side by side in one run.

No Ray: `nnps.core.server.Server.apply` on k read-only replies (as Ray hands them over)
for 784-1024-1024-10 in float32 (1,863,690 parameters, 7.5 MB per vector), with each
optimizer. The pass is memory-bound; with threads > 1 the server splits the vector in
contiguous parts (core/server.py), and what a thread count gains is what the node's
memory bandwidth allows. The process keeps freed memory mapped, as the server actor does
(gradient_worker.keep_freed_memory).

Run: .venv/bin/python bench/server_update.py [--replies 2] [--threads 1,2,4,8]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.server import Server, Snapshot
from nnps.core.training import build_network
from nnps.worker.gradient_worker import keep_freed_memory


def per_apply(server: Server, replies: list[np.ndarray], steps: int = 30) -> float:
    """Best of 3 blocks of `steps` applies, in seconds per apply."""
    server.apply(*replies)  # warm: the pool and the sum buffer
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            server.apply(*replies)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    keep_freed_memory()  # as the ParameterServer actor does: Adam's temporaries stay mapped
    k = int(sys.argv[sys.argv.index("--replies") + 1]) if "--replies" in sys.argv else 2
    counts = [1, 2, 4, 8]
    if "--threads" in sys.argv:
        counts = [int(t) for t in sys.argv[sys.argv.index("--threads") + 1].split(",")]
    x, y = np.zeros((2, 784), np.uint8), np.zeros(2, np.uint8)
    ds = Dataset("x", x, y, x, y)
    rng = np.random.default_rng(0)
    print(f"784-1024-1024-10 float32, {k} replies; ms per Server.apply (sum + update), best of 3 x 30")
    print(f"{'optimizer':>10} " + " ".join(f"{f'{t} thr':>9} {'x':>5}" for t in counts))
    for name in ("sgd", "adam"):
        cfg = TrainConfig(data="x", hidden=(1024, 1024), optimizer=name, lr=1e-6, dtype="float32")
        net = build_network(cfg, ds)
        replies = [rng.standard_normal(net.layout.size + 3).astype(np.float32) * 1e-3 for _ in range(k)]
        for r in replies:
            r[-3:] = (1.0, 1.0, 128.0)
            r.flags.writeable = False
        start = Snapshot(np.zeros(net.layout.size, np.float32))
        times = []
        for t in counts:
            server = Server(cfg, net, start, steps_per_epoch=10**9)
            server.threads = t
            times.append(per_apply(server, replies))
        print(f"{name:>10} " + " ".join(f"{s * 1e3:>9.2f} {times[0] / s:>4.2f}x" for s in times))


if __name__ == "__main__":
    main()
