"""One step: what a worker computes, what carries it, and the two loops that take every step.

A step from the server's side, whatever carries it (this process, or Ray workers over a
channel: cluster/transport.py picks it, worker/channels/ are the channels):

    sync_steps                                  run_updates (bounded and async)
    for each step:                              while updates are to be applied:
        shards = split_batch(batch(step), k)        while a worker is free and the gate allows:
        replies = carrier.step(params, shards)          tasks.send(worker, params, batch(t))
        server.apply(*replies)                      worker, reply = tasks.receive()
                                                    server.apply(reply)

and from a worker's: `ShardWorker.gradient_sums(params, indices)`, ONE flat vector

    [sum_x dC_x/dW^1, sum_x dC_x/db^1, ..., sum_x C_x, n_correct, m]      # (P + N_STATS,)

so replies add. A channel is four operations (`StepChannel`: open, send, receive,
close); a synchronous step is the sends then the receives, written once here, and a
channel that can do better overrides that one method. A channel that cannot carry a step
raises `ChannelBroken`; the step was not applied, so the transport gives the same step to
the next channel. The two loops are the only callers of `Server.apply` besides the replay
of a record (core/record.py), which recomputes what they did.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol

import numpy as np

from nnps.core.costs import cost_sum
from nnps.core.metrics import evaluation_size, target_sums
from nnps.core.network import N_STATS, Network
from nnps.core.parts import Route
from nnps.core.sampler import split_batch
from nnps.core.server import Server
from nnps.core.staleness import Gate

Array = np.ndarray
EVAL_CHUNK = 5000  # rows per forward pass when evaluating: bounds memory for wide nets


class Batches(Protocol):
    """Which examples step t uses: core/sampler.Sampler (or one batch again, to time a step)."""

    def batch(self, step: int) -> Array: ...


class Carrier(Protocol):
    """What carries synchronous steps: `OneChannel(InProcessChannel(worker))` below, or
    cluster/transport.Transport (a chain of channels that falls back along it)."""

    def open(self, params: Array, step: int) -> Array:
        """Ready to carry steps (a channel opened); returns where the server is to keep its
        parameters from now on (a channel may share them in place with the workers):
        `params`, or its own array with them copied in."""

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
    server.params = carrier.open(server.params, server.step)
    while server.step < stop and server.diverged_at is None:
        batch = sampler.batch(server.step)
        shards = split_batch(batch, k) if route is None else route.shards(batch)
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


class ChannelBroken(Exception):
    """A channel cannot carry this step (a worker or host gone, a port blocked, no room for
    a step file): the transport closes it and gives the same step to the next channel."""


class StepChannel(ABC):
    name: str  # as the run's record and `--transport` call it

    @abstractmethod
    def open(self, params: Array) -> Array | None:
        """Connect the workers. A channel that shares the parameters in place (the step
        file) returns its array for them, `params` copied in, where the server is to keep
        them from now on; the others return None. ChannelBroken if it cannot."""

    @abstractmethod
    def send(self, i: int, params: Array, indices: Array) -> None:
        """Start worker i on `indices` with these parameters (taken now: the server goes on
        updating its own). ChannelBroken if it broke."""

    @abstractmethod
    def receive(self) -> tuple[int, Array]:
        """The first reply to arrive from the workers sent work: (i, reply). ChannelBroken if it broke."""

    def step(self, params: Array, shards: list[Array]) -> list[Array]:
        """One synchronous step: shard i (non-empty) to worker i, the replies back in worker
        order, to add up in that order. ChannelBroken if it broke."""
        for i, shard in enumerate(shards):
            self.send(i, params, shard)
        replies = dict(self.receive() for _ in shards)
        return [replies[i] for i in range(len(shards))]

    @abstractmethod
    def close(self) -> None:
        """Close for good; the workers' threads end. Safe to call twice, and on a broken channel."""

    def describe(self) -> dict[str, Any]:
        """What the run's record keeps of this channel beyond its step count (e.g. the
        workers of each TCP link)."""
        return {}


class InProcessChannel(StepChannel):
    """Steps computed here, by one ShardWorker over the whole training set (`--workers 0`,
    the warm start's steps while Ray starts): worker i's shard computed at its send, as
    worker i would compute it, into a reply buffer of its own (reused). It cannot break."""

    name = "in-process"

    def __init__(self, worker: ShardWorker) -> None:
        self.worker = worker
        self.replies: list[Array] = []
        self.done: list[tuple[int, Array]] = []

    def open(self, params: Array) -> None:
        return None

    def send(self, i: int, params: Array, indices: Array) -> None:
        while len(self.replies) <= i:
            self.replies.append(np.empty(params.size + N_STATS, params.dtype))
        self.done.append((i, self.worker.gradient_sums(params, indices, self.replies[i])))

    def receive(self) -> tuple[int, Array]:
        return self.done.pop(0)

    def close(self) -> None:
        self.done.clear()


class OneChannel:
    """A Carrier of one channel that cannot break (the in-process one): no chain to fall
    back along, unlike cluster/transport.Transport."""

    def __init__(self, channel: StepChannel) -> None:
        self.channel = channel

    def open(self, params: Array, step: int) -> Array:
        home = self.channel.open(params)
        return params if home is None else home

    def step(self, params: Array, shards: list[Array], step: int) -> tuple[Array, list[Array]]:
        return params, self.channel.step(params, shards)


Sums = Callable[[Array, Array, Array], Any]  # (params, indices, out): a shard's reply into out


class WorkerEnd(Protocol):
    def start(self, sums: Sums, state: dict[str, Any]) -> Any:
        """In the worker's process: start serving (a thread), return at once. `state` is the
        worker's own, kept between calls (a node relay set up by one end, used by the next)."""


class ShardWorker:
    """A worker's job as a plain object: its rows (uint8 images, or a table's standardized
    rows; with Ray, read-only views into the object store shared by a node's workers) and
    what it computes on them. worker/gradient_worker.py is this behind a Ray actor, and
    `InProcessChannel` calls it directly, so the two cannot drift apart."""

    def __init__(self, network: Network, x_train: Array, y_train: Array, x_test: Array, y_test: Array) -> None:
        self.network = network
        self.data = {"train": (x_train, y_train), "test": (x_test, y_test)}
        # uint8 images to [0, 1]; a table's rows come standardized. A dtype scalar keeps the product in dtype.
        self.scale = network.np_dtype.type(1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0)
        # A worker holding only its parts of a table (core/part_rows.py): global training
        # indices to its own rows; None: it holds the whole training set
        self.to_local: Callable[[Array], Array] | None = None

    def gradient_sums(self, params: Array, indices: Array, out: Array | None = None) -> Array:
        """The shard's reply (P + N_STATS,), into `out` where given: what every channel asks for."""
        x, labels = self.data["train"]
        P = self.network.layout.size
        if out is None:
            out = np.empty(P + N_STATS, dtype=self.network.np_dtype)
        rows = indices if self.to_local is None else self.to_local(indices)
        shard = x[rows] * self.scale  # (m, n_0), scaled where it is used
        # A diverging run overflows; the server sees the non-finite cost and stops it.
        with np.errstate(over="ignore", invalid="ignore"):
            cost, correct = self.network.gradient_sums(params, shard, labels[rows], out[:P])
        out[P:] = (cost, correct, len(indices))
        return out

    def evaluate(self, params: Array, split: str = "test", lo: int = 0, hi: int | None = None) -> Array:
        """Sums over rows lo:hi of a split that add across chunks and workers (core/metrics.py):
        [sum of C_x, confusion matrix (n_L x n_L) flattened], or a regression's target sums."""
        x, labels = self.data[split]
        hi = len(labels) if hi is None else hi
        net = self.network
        total = np.zeros(evaluation_size(net), dtype=np.float64)
        for start in range(lo, hi, EVAL_CHUNK):
            stop = min(start + EVAL_CHUNK, hi)
            with np.errstate(over="ignore", invalid="ignore"):
                if net.regression:
                    z, a = net.last_layer(params, x[start:stop] * self.scale)
                    y = net.desired(labels[start:stop])
                    total[0] += cost_sum(net.cost, net.output, z, a, y)
                    total[1] += stop - start
                    total[2:] += target_sums(a.astype(np.float64), y.astype(np.float64))
                    continue
                cost, confusion = net.cost_and_confusion(params, x[start:stop] * self.scale,
                                                         labels[start:stop].astype(np.intp))  # fmt: skip
            total[0] += cost
            total[1:] += confusion.ravel()
        return total
