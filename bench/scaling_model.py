"""Projected: steps across hosts with 1 and with enough server shards (bench/scaling.py).

Not a measurement of a cluster (none is here): the model of bench/scaling.py, fed with
what this machine measures in the same run (one worker's backprop of its shard on one
thread, and the best single process, both core/costmodel.step_seconds) and with rates
given on the command line:

    --rate  bytes/s one process moves through Ray's object store (default 1.5e9: the
            wide network's vectors through one server actor on the 16-core machine,
            docs/performance.md; bench/sharded_exchange.py fits it on the machine it runs on)
    --nic   bytes/s each way per host (default 1.25e9, 10 GbE; an assumption)
    --per-host  workers per host (default 8, each on one BLAS thread, as nnps runs workers
            across nodes; 16-core hosts)
    --host-rate  bytes/s of summing a host's replies (default 4.6e9: 8 workers' vectors
            through the step file on the 16-core machine, bench/vector_exchange.py)

For each network, batch and number of hosts it prints the step with one server and with
the servers `servers_needed` asks for, which resource bounds each, and the speed against
the best single process measured here; then, if each host sums its workers' replies before
sending them (host_sum in bench/scaling.py), the step with one server ("S=1 +sum": what nnps
does across nodes since its node relays, worker/channels/relay.py) and with the servers
`servers_needed` then asks for ("+sum"; sharded servers are not built). The
per-step coordination c is the 2-worker value of core/costmodel's table at that batch plus
0.5 ms per further worker (EXTRA_PER_WORKER).

Run: .venv/bin/python bench/scaling_model.py [--rate 1.5e9] [--nic 1.25e9] [--per-host 8]
     [--host-rate 4.6e9]
"""

from __future__ import annotations

import math
import sys

from nnps.core.costmodel import DEFAULT_OVERHEAD, overhead_for, step_seconds
from nnps.core.network import Network
import scaling  # bench/scaling.py, beside this script
from nnps.core.threads import threads_for

CASES = [((784, 30, 10), "sigmoid", 1000), ((784, 30, 10), "sigmoid", 10000),
         ((784, 1024, 1024, 10), "relu", 256), ((784, 1024, 1024, 10), "relu", 4096)]  # fmt: skip
HOSTS = [2, 4, 8, 16]
WIDTHS = (16, 5, 7, 5, 4, 7, 6, 8, 10, 3, 6, 10, 7, 9, 9, 10, 9, 3, 6, 10, 9)


def main() -> None:
    arg = lambda name, default: float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
    rate, nic, per_host = arg("--rate", 1.5e9), arg("--nic", 1.25e9), int(arg("--per-host", 8))
    host_rate = arg("--host-rate", 4.6e9)
    print(f"Projected (bench/scaling.py): hosts of 16 cores, {per_host} workers each on one thread;")
    gb = (f"object store {rate / 1e9:.2f} GB/s a process, NIC {nic / 1e9:.2f} GB/s each way, "
          f"host sums {host_rate / 1e9:.2f} GB/s")  # fmt: skip
    print(f"{gb}; backprop timed here")
    head = ["network", "batch", "serial", "hosts", "W", "compute", "c", "S=1 xfer", "bound"]
    head += ["S", "xfer", "bound", "step", "vs serial", "S=1 +sum", "bound", "vs serial"]
    head += ["S", "+sum", "bound", "vs serial"]
    print(" ".join(f"{h:>{n}}" for h, n in zip(head, WIDTHS, strict=True)))
    for sizes, activation, batch in CASES:
        network = Network(list(sizes), activation=activation, cost="cross-entropy")
        serial = step_seconds(network, batch, threads_for(network, batch))
        name = "-".join(map(str, sizes))
        for hosts in HOSTS:
            w = hosts * per_host
            cluster = scaling.Cluster(hosts, cores=16, nic=nic, rate=rate, host_rate=host_rate)
            compute = step_seconds(network, math.ceil(batch / w), 1)
            c = overhead_for(w, batch, DEFAULT_OVERHEAD)
            p = network.layout.size
            one = scaling.transfer(p, w, 1, cluster)
            s = scaling.servers_needed(p, w, cluster)
            many = scaling.transfer(p, w, s, cluster)
            ts = scaling.step_seconds(compute, c, p, w, s, cluster)
            relayed = scaling.transfer(p, w, 1, cluster, host_sum=True)
            t_relayed = scaling.step_seconds(compute, c, p, w, 1, cluster, host_sum=True)
            s_sum = scaling.servers_needed(p, w, cluster, host_sum=True)
            summed = scaling.transfer(p, w, s_sum, cluster, host_sum=True)
            t_sum = scaling.step_seconds(compute, c, p, w, s_sum, cluster, host_sum=True)
            row = [name, batch, serial, hosts, w, compute, c, one.seconds, one.bottleneck, s]
            row += [many.seconds, many.bottleneck, ts, f"{serial / ts:.2f}x"]
            row += [relayed.seconds, relayed.bottleneck, f"{serial / t_relayed:.2f}x"]
            row += [s_sum, summed.seconds, summed.bottleneck, f"{serial / t_sum:.2f}x"]
            cells = [f"{v * 1e3:.2f}" if isinstance(v, float) else str(v) for v in row]  # seconds -> ms
            print(" ".join(f"{v:>{n}}" for v, n in zip(cells, WIDTHS, strict=True)))
            name = ""
    print("ms throughout. serial: the best single process here; compute: one worker's shard on one")
    print("thread, here; c: coordination; xfer: the bottleneck's transfer, 1 and S servers; step: compute")
    print("+ c + xfer. +sum: the transfer if each host sums its workers' replies first, with 1 server")
    print("(nnps's node relays) and with S (sharded servers: not built)")


if __name__ == "__main__":
    main()
