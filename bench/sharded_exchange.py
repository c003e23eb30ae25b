"""A step's bare exchange with the parameter vector sharded over S server actors.

No backprop, as in bench/vector_exchange.py: the parameters go out to k workers, each
answers with a vector of P + 3 (as gradient sums would be), and the servers add the
replies and update the parameters. Here the vector is cut into S contiguous slices, each
held, summed and updated by its own server actor: a worker reads S slices and answers
with S slices (`num_returns=S`), and server s adds the k replies' slice s. Everything goes
through Ray's object store, as nnps's steps do across nodes, where the one server's
(k + 1) vectors per step are what limits it (docs/performance.md, "Beyond one machine").

The driver submits each step's calls and passes the references on (actor to actor, the
driver never reads a vector); S = 1 runs the same loop with one server, so the rows differ
in the sharding alone. Sync SGD: step t + 1's workers read what step t's servers wrote.

    --nodes 1       one local Ray (servers and workers on one node: the store is shared
                    memory, a "transfer" is a copy into and out of it)
    --nodes split   ray.cluster_utils.Cluster on this machine: the servers on a head node,
                    each worker on a node of its own, so every vector crosses between two
                    raylets' object stores (over loopback TCP here, a NIC on a cluster)

Each count runs twice: with the given vectors and with 784-30-10's (23,860 float32), whose
time is Ray's per-step cost for that many calls and objects. On one node the run also
checks bench/scaling.py's model: the byte rate of one process is fitted to the 1-server
row (its large-minus-small time), and the other rows are predicted as their small-vector
time plus the model's transfer for S servers on this machine's cores.

Not built into `nnps train`: nnps has one server (see docs/performance.md for why and
where that stops being enough). This measures what sharding would buy on this machine.

Run: .venv/bin/python bench/sharded_exchange.py [--size 1863690] [--workers 2]
     [--servers 1,2,4] [--nodes 1|split]
"""

from __future__ import annotations

import itertools
import os
import sys
import time

import numpy as np
import ray

from scaling import Cluster, transfer  # bench/scaling.py, beside this script
from nnps.worker.gradient_worker import keep_freed_memory

STEPS = 20
SMALL = 23_860  # 784-30-10's parameters


@ray.remote(num_cpus=1)
class Worker:
    def __init__(self) -> None:
        keep_freed_memory()

    def reply(self, *slices: np.ndarray) -> tuple[np.ndarray, ...] | np.ndarray:
        # Reads every slice of the parameters, writes a fresh reply slice for each server;
        # the last slice carries the 3 extra numbers (cost, correct, examples).
        out = tuple(np.full(s.size + (3 if i == len(slices) - 1 else 0), s[0] + 1.0, s.dtype)
                    for i, s in enumerate(slices))  # fmt: skip
        return out if len(out) > 1 else out[0]


@ray.remote(num_cpus=0, resources={"server": 1})
class Shard:
    def __init__(self, size: int) -> None:
        keep_freed_memory()
        self.params = np.zeros(size, np.float32)
        self.total: np.ndarray | None = None

    def current(self) -> np.ndarray:
        return self.params

    def apply(self, *replies: np.ndarray) -> np.ndarray:
        if self.total is None:
            self.total = np.empty_like(replies[0])
        np.copyto(self.total, replies[0])
        for r in replies[1:]:
            self.total += r
        self.params -= 1e-3 * self.total[: self.params.size]
        return self.params  # the next step's slice, by reference


def slices(size: int, servers: int) -> list[int]:
    bounds = np.linspace(0, size, servers + 1).astype(int)
    return [int(hi - lo) for lo, hi in itertools.pairwise(bounds)]


def exchange(size: int, servers: int, workers: list) -> float:
    """Best of 3 x STEPS steps with `servers` shards, seconds per step."""
    shards = [Shard.remote(n) for n in slices(size, servers)]
    params = [s.current.remote() for s in shards]
    ray.get(params)
    best = float("inf")
    for block in range(4):  # block 0 warms up
        t0 = time.perf_counter()
        for _ in range(STEPS):
            replies = [w.reply.options(num_returns=servers).remote(*params) for w in workers]
            replies = [r if servers > 1 else [r] for r in replies]
            params = [s.apply.remote(*[r[i] for r in replies]) for i, s in enumerate(shards)]
        ray.get(params)
        if block:
            best = min(best, (time.perf_counter() - t0) / STEPS)
    for s in shards:
        ray.kill(s)
    return best


def main() -> None:
    arg = lambda name, default: sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default
    size, k = int(arg("--size", 1_863_690)), int(arg("--workers", 2))
    counts = [int(s) for s in arg("--servers", "1,2,4").split(",")]
    nodes = arg("--nodes", "1")
    cluster = None
    if nodes == "split":
        from ray.cluster_utils import Cluster as RayCluster

        cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"server": 64},
                                                                "include_dashboard": False})  # fmt: skip
        for _ in range(k):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
    else:
        ray.init(address="local", num_cpus=max(k, os.cpu_count() or 1), resources={"server": 64},
                 include_dashboard=False, log_to_driver=False, configure_logging=False)  # fmt: skip
    try:
        workers = [Worker.remote() for _ in range(k)]
        ray.get([w.__ray_ready__.remote() for w in workers])
        rows = {s: exchange(size, s, workers) for s in counts}
        small = {s: exchange(SMALL, s, workers) for s in counts}
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    where = "one node" if nodes == "1" else f"servers on a head node, each of the {k} workers on its own node"
    print(f"{k} workers, vectors of {size:,} float32 ({4 * size / 1e6:.1f} MB), {where}; "
          f"ms per exchange through Ray's object store, best of 3 x {STEPS}")  # fmt: skip
    one = Cluster(hosts=1, cores=os.cpu_count() or 1, nic=float("inf"), rate=1.0)
    per_rate = {s: transfer(size, k, s, one).seconds - transfer(SMALL, k, s, one).seconds for s in counts}
    fitted = per_rate[counts[0]] / (rows[counts[0]] - small[counts[0]])  # bytes/s of one process
    print(f"{'servers':>7} {'ms':>8} {'speed':>6} {'small ms':>9} {'model ms':>9} {'bottleneck':>11}")
    for s, t in rows.items():
        predicted = small[s] + per_rate[s] / fitted if nodes == "1" else float("nan")
        bound = transfer(size, k, s, one).bottleneck if nodes == "1" else "-"
        ms = f"{t * 1e3:8.2f} {rows[counts[0]] / t:5.2f}x {small[s] * 1e3:9.2f} {predicted * 1e3:9.2f}"
        print(f"{s:>7} {ms} {bound:>11}")
    print(f"speed: x {counts[0]} server's; small: vectors of {SMALL:,}")
    fit = f"{fitted / 1e9:.2f} GB/s a process (fitted to {counts[0]} server)"
    print(f"model: small + bench/scaling.py's transfer at {fit}" if nodes == "1" else
          "model: not applicable (the simulated nodes share this machine's cores and memory)")  # fmt: skip


if __name__ == "__main__":
    main()
