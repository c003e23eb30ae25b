"""Per-step cost of the distributed path against the serial one, side by side in one run.

For 784-30-10 (the seed's network) at several batch sizes, it measures, in one local Ray
session on this machine:

    serial      ms per step of the in-process path (--workers 0), BLAS threads as it picks
    N=k plain   ms per step with k workers on plain actor calls (server-driven steps)
    N=k graph   the same over Ray's compiled graph (the default when it compiles)
    overhead    step time minus the compute inside it (the serial time of one shard of
                batch/k on one thread), in units of Ray's own no-op actor round trip,
                measured in the same run

Run: .venv/bin/python bench/step_overhead.py [--quick]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import ray

from nnps.cluster.ray_executor import RayExecutor
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.threads import blas_threads
from nnps.core.training import make_in_process, plan_run

BATCHES = [10, 100, 1000, 10000]


def dataset(n: int = 20000) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    return Dataset("random", x, y, x[:1000], y[:1000])


def per_step(executor, steps: int, start: int = 0) -> float:
    executor.run(start, start + 2)  # warm up
    executor.snapshot()
    t0 = time.perf_counter()
    executor.run(start + 2, start + 2 + steps)
    executor.snapshot()
    return (time.perf_counter() - t0) / steps


@ray.remote(num_cpus=0)
class Echo:
    def ping(self, x: int) -> int:
        return x


def round_trip(n: int = 300) -> float:
    a = Echo.remote()
    ray.get(a.ping.remote(0))
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(a.ping.remote(i))
    ray.kill(a)
    return (time.perf_counter() - t0) / n


def main(quick: bool) -> None:
    ds = dataset()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rt = round_trip()
    print(f"Ray no-op actor round trip: {rt * 1e3:.2f} ms\n")
    print(f"{'batch':>6} {'serial ms':>10} {'ex/s':>9} | {'N':>2} {'mode':>5} {'ms/step':>8} {'ex/s':>9} "
          f"{'vs serial':>9} {'overhead ms':>11} {'RTs':>5}")  # fmt: skip
    for batch in BATCHES[:3] if quick else BATCHES:
        steps = max(10, min(200, 20000 // batch))
        cfg = TrainConfig(data="random", hidden=(30,), batch_size=batch, lr=0.1)
        plan = plan_run(cfg, ds, None, False)
        serial = per_step(make_in_process(plan, ds), steps)
        print(f"{batch:>6} {serial * 1e3:>10.2f} {batch / serial:>9,.0f} |")
        for k in (1, 2):
            shard = plan_run(cfg.replace(batch_size=max(1, batch // k)), ds, None, False)
            with blas_threads(1):
                compute = per_step(make_in_process(shard, ds), steps)
            for compiled in (False, True):
                ex = RayExecutor(plan, ds, k, compiled=compiled)
                mode = "graph" if ex.compiled is not None else "plain"
                if compiled and ex.compiled is None:
                    print(f"{'':>6} {'':>10} {'':>9} | {k:>2} graph  (did not compile: {ex.fallback_reason})")
                    ex.close()
                    continue
                t = per_step(ex, steps)
                ex.close()
                over = max(t - compute, 0.0)
                print(f"{'':>6} {'':>10} {'':>9} | {k:>2} {mode:>5} {t * 1e3:>8.2f} {batch / t:>9,.0f} "
                      f"{serial / t:>8.2f}x {over * 1e3:>11.2f} {over / rt:>5.1f}")  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    main("--quick" in sys.argv)
