"""Per-step cost of the distributed path against the serial one, side by side in one run.

For 784-30-10 (the seed's network) at batch 10 .. 10,000, in one local Ray session:

    serial      ms per step of the in-process path (--workers 0) at its best BLAS thread
                count (1, 2 or as it picks; the mode column says which)
    N=k unix    ms per step with k workers over the `unix` channel: the vectors in a /dev/shm
                file the processes share, indices and acknowledgements through Unix sockets
                (worker/channels/unix.py; nnps's default on one node)
    N=k tcp     indices, parameters and replies through TCP links, one per node, relayed by
                its first worker (worker/channels/tcp.py; nnps's default across nodes)
    N=k ray     a Ray actor call per worker, the vectors inline or through the object store
    overhead    step time minus the compute inside it (the in-process time of one shard of
                batch/k on one thread), also in units of Ray's own no-op actor round trip,
                measured in the same run

--nodes split runs on ray.cluster_utils.Cluster instead: a head node with no CPUs and one
node of 1 CPU per worker, all on this machine, so that every step crosses nodes (Ray's
object stores and TCP over loopback, not a network); its default transports are tcp and ray.
--nodes pair puts both workers on one node of 2 CPUs beside the head instead, where a
node's relay carries the steps of both. bench/hosts_overhead.py measures the same across
hosts with their own interfaces (network namespaces), shaped to a link speed.

Run: .venv/bin/python bench/step_overhead.py [--quick] [--hidden 1024,1024] [--batches 256]
     [--transports unix,tcp,ray] [--nodes split|pair]
"""

from __future__ import annotations

import os
import sys

import ray

from nnps.cluster.calibrate import measure, round_trip


def main() -> None:
    quick = "--quick" in sys.argv
    hidden = (30,)
    if "--hidden" in sys.argv:
        hidden = tuple(int(h) for h in sys.argv[sys.argv.index("--hidden") + 1].split(","))
    batches = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    if "--batches" in sys.argv:
        batches = [int(b) for b in sys.argv[sys.argv.index("--batches") + 1].split(",")]
    nodes = sys.argv[sys.argv.index("--nodes") + 1] if "--nodes" in sys.argv else "one"
    split = nodes in ("split", "pair")
    names = "tcp,ray" if split else "unix,tcp,ray"
    if "--transports" in sys.argv:
        names = sys.argv[sys.argv.index("--transports") + 1]
    transports = tuple(names.split(","))
    cluster = None
    if split:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for cpus in [1, 1] if nodes == "split" else [2]:
            cluster.add_node(num_cpus=cpus)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
    else:
        cpus = max(2, os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rt = round_trip()
    where = {"split": "; nodes: a head without CPUs and 2 of 1 CPU each, on this machine",
             "pair": "; nodes: a head without CPUs and 1 of 2 CPUs, on this machine"}  # fmt: skip
    where = where.get(nodes, "")
    net = "-".join(map(str, hidden))
    print(f"network 784-{net}-10; Ray no-op actor round trip: {rt * 1e3:.2f} ms{where}\n")
    print(f"{'batch':>6} {'N':>2} {'mode':>14} {'ms/step':>8} {'ex/s':>9} {'vs serial':>9} {'overhead ms':>11} {'RTs':>5}")
    serial = {}
    for r in measure(hidden, batches, [1, 2], transports=transports):
        if r.workers == 0:
            serial[r.batch] = r.seconds
            print(f"{r.batch:>6} {0:>2} {r.mode:>14} {r.seconds * 1e3:>8.2f} {r.examples_per_s:>9,.0f} {'1.00x':>9}")
            continue
        over = max(r.seconds - r.compute, 0.0)
        print(f"{'':>6} {r.workers:>2} {r.mode:>14} {r.seconds * 1e3:>8.2f} {r.examples_per_s:>9,.0f} "
              f"{serial[r.batch] / r.seconds:>8.2f}x {over * 1e3:>11.2f} {over / rt:>5.1f}")  # fmt: skip
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


if __name__ == "__main__":
    main()
