"""One step protocol, and the two loops that use it: every optimizer step nnps takes.

Whatever carries a step, in this process or to Ray workers over a channel
(cluster/transport.py), it is asked for the same thing: the gradient sums of shards of a
mini-batch, computed on given parameters. The synchronous loop hands out a whole step's
shards and applies their sum once; the bounded/asynchronous loop hands one worker one
step's batch and applies each reply as it arrives, as the staleness gate (core/staleness.py)
allows. These two loops are the only callers of `Server.apply` besides the replay of a
record (core/record.py), which recomputes what they did.

    sync_steps                                  run_updates
    for each step:                              while updates are to be applied:
        shards = split(batch(step), k)              while a worker is free and the gate allows:
        replies = carrier.step(params, shards)          tasks.send(worker, params, batch(t))
        server.apply(*replies)                      worker, reply = tasks.receive()
                                                    server.apply(reply)
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from nnps.core.network import N_STATS
from nnps.core.parts import Route
from nnps.core.sampler import split
from nnps.core.server import Server
from nnps.core.shard import ShardWorker
from nnps.core.staleness import Gate

Array = np.ndarray


class Batches(Protocol):
    """Which examples step t uses: core/sampler.Sampler (or one batch again, to time a step)."""

    def batch(self, step: int) -> Array: ...


class Carrier(Protocol):
    """What carries synchronous steps: `InProcessCarrier` below, or cluster/transport.Transport."""

    def params(self, params: Array, step: int) -> Array:
        """Where the server is to keep its parameters from now on (a channel may share
        them in place with the workers): `params`, or its own array with them copied in."""

    def step(self, params: Array, shards: list[Array], step: int) -> tuple[Array, list[Array]]:
        """(the parameters' home, which a fall back may change; the replies to add up, in order)."""


class Tasks(Protocol):
    """What carries bounded and asynchronous updates: cluster/transport.Transport."""

    def send(self, i: int, params: Array, indices: Array, step: int) -> None: ...
    def receive(self, step: int) -> tuple[int, Array]: ...


def sync_steps(carrier: Carrier, server: Server, sampler: Batches, k: int, stop: int,
               route: Route | None = None) -> None:  # fmt: skip
    """Apply synchronous steps until `stop` (or divergence): each step's batch split over
    k shards as the workers take them (`route`: each index to the worker holding its row,
    an empty shard kept in place), their sums added in shard order, one optimizer step."""
    server.params = carrier.params(server.params, server.step)
    while server.step < stop and server.diverged_at is None:
        batch = sampler.batch(server.step)
        shards = split(batch, k) if route is None else route.shards(batch)
        server.params, replies = carrier.step(server.params, shards, server.step)
        server.apply(*replies)


def run_updates(tasks: Tasks, server: Server, draw: Callable[[int, int], Array], workers: int, tau: int | None,
                stop: int) -> list[tuple[int, int, int]]:  # fmt: skip
    """Apply updates until `stop` (or divergence), each worker's reply as it arrives, the
    next step sent to a free worker when the gate lets it (`draw(worker, t)`: its batch, the
    sampler's batch t, or with --partitioned the worker's own); returns the rows (t, worker, d)."""
    gate, free, t, rows = Gate(tau), list(range(workers)), server.step, []
    while server.step < stop and server.diverged_at is None:
        while free and t < stop and gate.may_start(server.step):
            i = free.pop(0)
            gate.start(i, t, server.step)
            tasks.send(i, server.params, draw(i, t), server.step)
            t += 1
        i, reply = tasks.receive(server.step)
        step, version = gate.finish(i)
        server.apply(reply)
        rows.append((step, i, version))
        free.append(i)
    while gate.out:  # diverged with tasks out: collect them, apply nothing
        gate.finish(tasks.receive(server.step)[0])
    return rows


class InProcessCarrier:
    """Steps computed here, by one ShardWorker over the whole training set: each shard's
    sums as the worker holding it would compute them (one reply buffer per shard, reused)."""

    def __init__(self, worker: ShardWorker) -> None:
        self.worker = worker
        self.replies: list[Array] = []

    def params(self, params: Array, step: int) -> Array:
        return params

    def step(self, params: Array, shards: list[Array], step: int) -> tuple[Array, list[Array]]:
        if len(shards) == 1:
            return params, [self.worker.gradient_sums(params, shards[0])]
        while len(self.replies) < len(shards):
            self.replies.append(np.empty(params.size + N_STATS, params.dtype))
        return params, [self.worker.gradient_sums(params, s, out) for s, out in zip(shards, self.replies)]
