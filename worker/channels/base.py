"""`StepChannel`: how one step's messages travel between the parameter server and its workers.

A channel is four operations:

    channel.open(params)              # once: connect the workers' ends
    channel.send(i, params, indices)  # worker i starts on its indices with these parameters
    channel.receive() -> (i, reply)   # the first reply in from the workers sent work
    channel.close()

A synchronous step is the sends, then the receives (`step`, written once here: the
replies to add up, in worker order); a channel that can do better overrides that one
method (tcp's links add up a node's replies before they travel; ray puts the parameters
in the object store once for all of a step's calls). A channel that cannot carry a step
raises `ChannelBroken`, from any of them; the step was not applied, so the transport
(cluster/transport.py) closes it and gives the same step to the next channel of its chain.

A channel's worker end is a small picklable object (`WorkerEnd`) that the server hands to
each worker's `GradientWorker.serve_channel`; its `start` runs in the worker's process
and serves the channel from a thread of its own, computing with the worker's `Sums`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol

import numpy as np

Array = np.ndarray
Sums = Callable[[Array, Array, Array], None]  # (params, indices, out): a shard's reply into out


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


class WorkerEnd(Protocol):
    def start(self, sums: Sums, state: dict[str, Any]) -> Any:
        """In the worker's process: start serving (a thread), return at once. `state` is the
        worker's own, kept between calls (a node relay set up by one end, used by the next)."""
