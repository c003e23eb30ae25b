"""Beyond one machine: where a step's bytes go with W workers and S server shards on H hosts.

core/costmodel.py predicts a step on the cluster at hand, to choose the number of workers.
This module answers the planning question behind it: on a cluster that is not here, how
does the step scale with workers, and when does one parameter server stop being enough?

A synchronous step moves, per step, V = 4P bytes (P float32 parameters) each way per worker:

    broadcast   server s writes its slice (V / S); each host with workers fetches it once
                (Ray's object store pulls an object once per node) and every worker reads it
    gather      each worker writes its gradient sums cut into S slices; server s reads the
                W replies' slice s, adds them and steps its slice

The model places the processes (workers spread evenly over the hosts, servers round-robin
over them: Ray places actors wherever CPUs are free) and counts, for every resource, the
bytes it must handle in a step:

    a server process   (W + 1) x V / S      at `rate` (one process through Ray's objects:
                                              serialization, copies, the sum and the update)
    a worker process   2 x V                 at `rate` (reads the parameters, writes its reply)
    a host's cores     its processes' bytes  at cores x `rate`
    a host's NIC       bytes leaving it, and arriving, at `nic` each way

The transfer time is the largest load / capacity (the bottleneck; the others overlap with
it), and a step costs

    t_step = t_shard(b / W) + c + transfer

with t_shard the backprop of one worker's shard and c the per-step coordination (both
measured: costmodel.step_seconds, `nnps bench`). One server stops being enough when its
own term is the bottleneck; S servers divide that term until a NIC or the hosts' cores
take over, which `servers_needed` finds.

What it leaves out: stragglers (a synchronous step waits for its slowest worker; here all
shards take t_shard), contention between the NIC and the copies for memory bandwidth,
Ray's per-object costs growing with W x S objects a step (bench/sharded_exchange.py
measures them on one host), summing a host's replies before they leave it, and any
overlap of the transfers with the backprop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cluster:
    """H hosts of `cores` cores each; `nic` bytes/s each way per host (math.inf on one
    host); `rate` bytes/s that one process moves through Ray's object store; `host_rate`
    bytes/s of the summing on a host (transfer's host_sum; None: `rate`; through a step
    file as nnps uses on one node, 4-5 GB/s measured)."""

    hosts: int
    cores: int
    nic: float
    rate: float
    host_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("hosts", "cores"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("nic", "rate", "host_rate"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 bytes/s, got {getattr(self, name)}")


@dataclass(frozen=True)
class Transfer:
    """One step's transfer: the seconds of the bottleneck and which resource it is."""

    seconds: float
    bottleneck: str  # "server", "worker", "host sum", "host cores", "NIC"
    loads: dict[str, float]  # resource -> seconds it would take alone


def placement(workers: int, servers: int, hosts: int) -> tuple[list[int], list[int]]:
    """Host of each worker (spread evenly) and of each server (round-robin)."""
    return [w * hosts // workers for w in range(workers)], [s % hosts for s in range(servers)]


def transfer(params: int, workers: int, servers: int, cluster: Cluster, itemsize: int = 4,
             host_sum: bool = False) -> Transfer:  # fmt: skip
    """The bytes each resource handles in one step, and the slowest of them. host_sum: the
    replies of a host's workers are first summed on that host (by one process there), so
    each server gets one reply slice per host instead of one per worker (what nnps's node
    relays do for its one server across nodes: worker/channels/relay.py)."""
    if workers < 1 or servers < 1:
        raise ValueError(f"workers and servers must be >= 1, got {workers} and {servers}")
    v = params * itemsize  # one full vector
    on_worker, on_server = placement(workers, servers, cluster.hosts)
    slice_ = v / servers
    hosts_with_workers = sorted(set(on_worker))
    cpu = [0.0] * cluster.hosts  # bytes the processes on each host move
    nic_out = [0.0] * cluster.hosts
    nic_in = [0.0] * cluster.hosts
    senders = hosts_with_workers if host_sum else on_worker  # where the replies come from
    for s, hs in enumerate(on_server):
        cpu[hs] += (len(senders) + 1) * slice_  # the reply slices in, one parameter slice out
        for h in hosts_with_workers:  # the parameter slice, once per host with workers
            if h != hs:
                nic_out[hs] += slice_
                nic_in[h] += slice_
        for hw in senders:  # each reply slice for server s
            if hw != hs:
                nic_out[hw] += slice_
                nic_in[hs] += slice_
    for hw in on_worker:
        cpu[hw] += 2 * v  # a worker reads the parameters and writes its reply
    loads = {"server": (len(senders) + 1) * slice_ / cluster.rate, "worker": 2 * v / cluster.rate}
    if host_sum:  # one process per host reads its workers' replies and writes their sum
        most = max(on_worker.count(h) for h in hosts_with_workers)
        loads["host sum"] = (most + 1) * v / (cluster.host_rate or cluster.rate)
        for h in hosts_with_workers:
            cpu[h] += (on_worker.count(h) + 1) * v
    loads["host cores"] = max(cpu) / (cluster.cores * cluster.rate)
    loads["NIC"] = max(max(nic_out), max(nic_in)) / cluster.nic
    bottleneck = max(loads, key=loads.__getitem__)
    return Transfer(loads[bottleneck], bottleneck, loads)


def step_seconds(shard_seconds: float, coordination: float, params: int, workers: int, servers: int,
                 cluster: Cluster, host_sum: bool = False) -> float:  # fmt: skip
    """t_step = t_shard(b / W) + c + transfer (module docstring)."""
    moved = transfer(params, workers, servers, cluster, host_sum=host_sum)
    return shard_seconds + coordination + moved.seconds


def servers_needed(params: int, workers: int, cluster: Cluster, most: int = 64,
                   host_sum: bool = False) -> int:  # fmt: skip
    """The number of servers, up to `most`, with the shortest transfer, counting a further
    server only where it shortens the best so far by over 1%: 1 while the single server is
    not the bottleneck."""
    best = transfer(params, workers, 1, cluster, host_sum=host_sum).seconds
    needed = 1
    for s in range(2, most + 1):
        t = transfer(params, workers, s, cluster, host_sum=host_sum).seconds
        if t < best * 0.99:
            best, needed = t, s
    return needed
