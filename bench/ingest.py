"""Feeding k actors the same Parquet rows: Ray Data's streaming_split against nnps --partitioned.

One Ray, one table (bench/data_scale.py's generator: FEATURES float32 features and a label,
default 1 GB), the same numpy backprop (nnps.core.network's gradient_sums of a
100-32-2 network) on batches of B/k rows in each of k actors:

  (a) ray.data.read_parquet(dir).streaming_split(k, equal=True), each actor iterating its split
      with iter_batches(batch_size=B/k), the local shuffle buffer off, then on (10 x B/k rows):
      rows in file order, or shuffled within a window: not a random sample of the table;
  (b) nnps --partitioned (cluster/parted.py, driver.run on the same Ray): each worker reads its
      parts, then every step's batch is drawn uniformly from all rows by (seed, step) and each
      index computed by its row's worker; the server applies each step (an optimizer update
      that (a) does not do).

Each feeder runs --repeat times, interleaved; printed are the shortest time to the first
step, the best rate and every run's rate. Printed: time from the start of the ingest to the first step computed (a: the slowest
actor's first batch; b: the first step applied), and examples per second from step WARM to
the end (b: to its last chunk, whose evaluation of its 0.1% of test rows is a small part),
with the ratio to (a) without a shuffle buffer.

Run: .venv/bin/python bench/ingest.py [--gb 1] [--workers 2] [--batch 1000] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).parent))
from data_scale import FEATURES, generate  # noqa: E402

WARM = 30


@ray.remote(num_cpus=1)
class Consumer:
    def __init__(self, sizes: tuple[int, ...], threads: int = 1) -> None:
        from threadpoolctl import threadpool_limits

        from nnps.core.network import Network, initial_params

        self._blas = threadpool_limits(threads, user_api="blas")
        self.net = Network(sizes, "sigmoid", "sigmoid", "quadratic", "float32")
        self.params = initial_params(self.net, "scaled", 0)
        self.out = np.empty(self.net.layout.size, np.float32)

    def consume(self, split, batch: int, steps: int, shuffle: int | None) -> tuple[float, list[float]]:
        """(time of the first gradient, times of each)."""
        done: list[float] = []
        for b in split.iter_batches(batch_size=batch, batch_format="numpy", local_shuffle_buffer_size=shuffle,
                                    drop_last=True):  # fmt: skip
            x = np.stack([b[f"f{j}"] for j in range(FEATURES)], axis=1)
            self.net.gradient_sums(self.params, x, b["label"].astype(np.int32), self.out)
            done.append(time.time())
            if len(done) == steps:
                break
        return done[0], done


def ray_data(data: Path, k: int, batch: int, steps: int, shuffle: int | None) -> tuple[float, float]:
    """(seconds to the first step, examples/s from WARM on) of k actors fed by streaming_split."""
    consumers = [Consumer.remote((FEATURES, 32, 2)) for _ in range(k)]
    ray.get([c.__ray_ready__.remote() for c in consumers])
    t0 = time.time()
    splits = ray.data.read_parquet(str(data)).streaming_split(k, equal=True)
    out = ray.get([c.consume.remote(s, batch // k, steps, shuffle) for c, s in zip(consumers, splits)])
    for c in consumers:
        ray.kill(c)
    first = max(o[0] for o in out) - t0
    start, end = max(o[1][WARM] for o in out), max(o[1][-1] for o in out)
    n = sum(len(o[1]) - 1 - WARM for o in out) * (batch // k)
    return first, n / (end - start)


class Clock:
    """A Reporter keeping (time, steps done) at each chunk."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def run_start(self, *a) -> None: ...
    def epoch_start(self, *a) -> None: ...
    def epoch_end(self, *a) -> None: ...

    def advance(self, steps: int, *a) -> None:
        self.marks.append((time.time(), (self.marks[-1][1] if self.marks else 0) + steps))


def partitioned(data: Path, k: int, batch: int, steps: int) -> tuple[float, float, dict]:
    from nnps.cluster import driver
    from nnps.core.config import TrainConfig

    cfg = TrainConfig(data=str(data), hidden=(32,), output="sigmoid", batch_size=batch, steps=steps, lr=0.1,
                      partitioned=True, workers=k, weight_init="scaled", test_fraction=0.001)  # fmt: skip
    clock = Clock()
    t0 = time.time()
    done = driver.run(cfg, None, reporter=clock)
    first = clock.marks[0][0] - t0
    warm = next(m for m in clock.marks if m[1] >= WARM)
    last = clock.marks[-1]  # (its final evaluation: a forward pass over 0.1% of the rows)
    return first, (last[1] - warm[1]) * batch / (last[0] - warm[0]), done.get("channels", {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each feeder, interleaved: the best of each is shown")
    ap.add_argument("--dir", default="/tmp/nnps-scale")
    a = ap.parse_args()
    rows = int(a.gb * 2**30 / (FEATURES * 4))
    data = generate(Path(a.dir) / f"{a.gb:g}gb", rows)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, a.workers + 1), include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# bench/ingest.py, {time.strftime('%Y-%m-%d')}, commit {commit}, {os.cpu_count()} cores, {a.gb:g} GB "
          f"({rows:,} rows x {FEATURES} float32), {a.workers} actors, batch {a.batch}, {a.steps} steps")
    print(f"{'feeder':<44} {'1st step s':>10} {'examples/s':>12} {'vs (a) off':>10}")
    feeders = [("(a) streaming_split, no shuffle buffer", lambda: ray_data(data, a.workers, a.batch, a.steps, None)),
               (f"(a) streaming_split, shuffle buffer {10 * a.batch // a.workers:,}",
                lambda: ray_data(data, a.workers, a.batch, a.steps, 10 * a.batch // a.workers)),
               ("(b) nnps --partitioned, exact sampling", lambda: partitioned(data, a.workers, a.batch, a.steps))]  # fmt: skip
    runs: list[list[tuple]] = [[] for _ in feeders]
    for _ in range(a.repeat):  # interleaved, so a slow spell of the machine hits each feeder alike
        for i, (_, run) in enumerate(feeders):
            runs[i].append(run())
    base = max(r[1] for r in runs[0])
    for (name, _), out in zip(feeders, runs):
        best = max(r[1] for r in out)
        note = f"  (steps by {out[0][2].get('steps')})" if len(out[0]) > 2 else ""
        print(f"{name:<44} {min(r[0] for r in out):>10.2f} {best:>12,.0f} {best / base:>10.2f}"
              f"  [{', '.join(f'{r[1]:,.0f}' for r in out)}]{note}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
