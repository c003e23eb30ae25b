"""`StepChannel`: how one step's messages travel between the parameter server and its workers.

The server's loop is the same whatever carries the step (cluster/parameter_server.py):

    channel.open(params)                   # once: connect the workers' ends
    replies = channel.step(params, shards) # per step: shard i to worker i, the replies back
    channel.close()

or, for bounded and asynchronous training, `send(i, params, indices)` to one worker and
`receive() -> (i, reply)` from whichever answers first.

`step` returns the replies to add up (one per worker, or one per node where a relay has
summed its node's: wire.py gives their layout). A channel that cannot carry a step raises
`ChannelBroken`, from `open` or from `step`; the step was not applied, so the transport
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
    def step(self, params: Array, shards: list[Array]) -> list[Array]:
        """Shard i (non-empty) to worker i; the replies to add up. ChannelBroken if it broke."""

    # Bounded and asynchronous training (core/staleness.py): each worker on its own.

    def send(self, i: int, params: Array, indices: Array) -> None:
        """Start worker i on one batch with these parameters (taken now: the server goes on
        updating its own). ChannelBroken if it broke."""
        raise NotImplementedError(f"the {self.name} channel has no asynchronous steps")

    def receive(self) -> tuple[int, Array]:
        """The first reply to arrive from the workers sent work: (i, reply). ChannelBroken if it broke."""
        raise NotImplementedError(f"the {self.name} channel has no asynchronous steps")

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
