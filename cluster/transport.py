"""Which channel carries a run's steps, and what happens when one breaks: the one policy.

From the user's `--transport` (TrainConfig.transport) and the placement (every worker on
the server's node, or not), `chain` gives an ordered list of channels ending in plain Ray
calls (worker/channels/):

    --transport   workers on the server's node   workers on other nodes
    auto          unix, ray                      tcp, ray
    unix          unix, ray                      unix, ray (unix refuses at open: ray)
    tcp           tcp, ray                       tcp, ray
    ray           ray                            ray

`unix` first where it can run: the vectors stay in a /dev/shm file the processes map and
a step's messages are indices and one byte each;
`tcp` across nodes: one link per node carries the parameters once and the node's summed
reply; `ray` always works, and Ray restarts a dead worker and retries its call.
(docs/architecture.md has this table; tests/test_transport.py holds it to `chain`.)

`Transport` runs the chain inside the parameter server: the first channel is opened at the
first step; a channel that raises `ChannelBroken` (at open, at a step, a send or a receive)
is closed and the SAME step, or every task out, goes to the next one, so no step is lost
or applied twice (`_carry`, the one fallback path). Synchronous steps try
the first channel again REOPEN_AFTER steps later (then at doubling intervals while it
fails) when it broke mid-run (a worker lost; one refused at open is not tried again): a
worker Ray restarted serves it again, and the steps return to it. It records
what ran: steps per channel, and each fallback and reopening with its step and reason
(`record`). Left out: reopening in bounded and async runs (their tasks are out
continuously; they stay on the next channel).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import numpy as np

from nnps.core.config import TRANSPORTS
from nnps.core.steps import ChannelBroken, StepChannel

Array = np.ndarray
T = TypeVar("T")
REOPEN_AFTER, REOPEN_MAX = 20, 5000  # steps after a fall back before the first channel is tried again; at most


def chain(setting: str, one_node: bool) -> tuple[str, ...]:
    """The channels to try, in order, for `--transport setting`; `one_node`: every worker
    is on the server's node."""
    if setting not in TRANSPORTS:
        raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}; got {setting!r}")
    if setting == "auto":
        return ("unix", "ray") if one_node else ("tcp", "ray")
    return ("ray",) if setting == "ray" else (setting, "ray")


class Transport:
    """A chain of channels made on demand (`make(name)`), the first that works carrying
    the steps."""

    def __init__(self, names: tuple[str, ...], make: Callable[[str], StepChannel]) -> None:
        if not names or names[-1] != "ray":
            raise ValueError(f"a chain ends in plain Ray calls, got {names!r}")
        self.names, self.make = names, make
        self.at = 0  # the index in `names` of the channel in use
        self.channel: StepChannel | None = None  # once opened
        self.home: Array | None = None  # where the open channel keeps the parameters, if it does
        self.steps = dict.fromkeys(names, 0)
        self.fallbacks: list[dict[str, Any]] = []
        self.described: dict[str, Any] = {}
        self.retry_at: int | None = None  # sync steps after a channel broke mid-run: when to try the first again
        self.retry_every = REOPEN_AFTER
        self.out: dict[int, tuple[Array, Array]] = {}  # worker -> (params, indices) of its task out (send)
        self.sent: set[int] = set()  # the tasks out sent on the channel in use

    def _opened(self, params: Array, step: int) -> StepChannel:
        """The current channel, opened now if it is not (falling back as it must)."""
        while self.channel is None:
            channel = self.make(self.names[self.at])
            try:
                self.home = channel.open(params)
                self.channel = channel
                self.described.update(channel.describe())
            except ChannelBroken as e:
                channel.close()
                self._fall_back(step, e)
        return self.channel

    def open(self, params: Array, step: int) -> Array:
        """Open the current channel if none is (falling back as it must); returns where
        the server is to keep its parameters: the channel's own array, `params` copied in,
        or `params` itself."""
        self._opened(params, step)
        if self.home is None:
            return params
        if self.home is not params:
            self.home[...] = params
        return self.home

    def step(self, params: Array, shards: list[Array], step: int) -> tuple[Array, list[Array]]:
        """One step's replies; returns the parameters' home too, which changes when a
        channel that kept them breaks and the step goes to the next (cf. `params`)."""
        self._reopen(params, step)

        def on(channel: StepChannel) -> tuple[Array, list[Array]]:
            home = self.open(params, step)
            return home, channel.step(home, shards)

        return self._carry(step, params, on)

    # Bounded and asynchronous training: one worker's batch at a time. Each task out is kept
    # (its parameters copied) until its reply is in, so that a channel that breaks with
    # tasks out has the next one compute the same tasks on the same parameters.

    def send(self, i: int, params: Array, indices: Array, step: int) -> None:
        """Start worker i on `indices` with (a copy of) `params`."""
        self.out[i] = (params.copy(), indices)
        self._carry(step, self.out[i][0], self._send_unsent, count=False)

    def receive(self, step: int) -> tuple[int, Array]:
        """The first reply in from the tasks out: (worker, reply)."""

        def on(channel: StepChannel) -> tuple[int, Array]:
            self._send_unsent(channel)  # after a fall back: every task out, again, on this channel
            return channel.receive()

        i, reply = self._carry(step, next(iter(self.out.values()))[0], on)
        del self.out[i]
        self.sent.discard(i)
        return i, reply

    def _send_unsent(self, channel: StepChannel) -> None:
        for i in [i for i in self.out if i not in self.sent]:
            channel.send(i, *self.out[i])
            self.sent.add(i)

    def _carry(self, step: int, params: Array, action: Callable[[StepChannel], T], count: bool = True) -> T:
        """`action` on the channel in use, opened if it is not; where it raises ChannelBroken,
        the channel is closed and the same action runs on the next: the one fallback path.
        `count`: a step (or an update's reply) done, counted on the channel that carried it."""
        while True:
            channel = self._opened(params, step)
            try:
                result = action(channel)
            except ChannelBroken as e:
                self._broke(step, e)
                continue
            self.steps[channel.name] += count
            return result

    def _reopen(self, params: Array, step: int) -> None:
        """After a fall back, try the first channel again now and then (REOPEN_AFTER steps,
        doubling while it fails): a worker Ray restarted can serve it again. Recorded as the
        fall back was."""
        if self.at == 0 or self.retry_at is None or step < self.retry_at or self.out:
            return
        channel = self.make(self.names[0])
        try:
            home = channel.open(params)
        except ChannelBroken:
            channel.close()
            self.retry_every = min(2 * self.retry_every, REOPEN_MAX)
            self.retry_at = step + self.retry_every
            return
        if self.channel is not None:
            self.channel.close()
        self.fallbacks.append({"step": step, "from": self.names[self.at], "to": self.names[0],
                               "reason": "reopened: every worker answers on it again"})  # fmt: skip
        self.channel, self.home, self.at = channel, home, 0
        self.described.update(channel.describe())

    def _broke(self, step: int, error: ChannelBroken) -> None:
        assert self.channel is not None
        self.channel.close()
        self.channel = None
        self.sent.clear()  # the tasks it had are lost with it
        self._fall_back(step, error)
        if self.at == 1:  # the first channel broke mid-run (a worker lost): worth trying again later
            self.retry_at, self.retry_every = step + REOPEN_AFTER, REOPEN_AFTER

    def _fall_back(self, step: int, error: ChannelBroken) -> None:
        if self.at + 1 >= len(self.names):
            raise RuntimeError(f"the last channel, {self.names[self.at]}, broke: {error}")  # ray never raises it
        self.fallbacks.append({"step": step, "from": self.names[self.at], "to": self.names[self.at + 1],
                               "reason": str(error)})  # fmt: skip
        self.at += 1
        self.home = None
        self.retry_at = None  # a channel refused at open (the placement, a port) is not tried again

    def record(self) -> dict[str, Any]:
        """What ran: {"chain", "steps" (by channel), "fallbacks" ([{step, from, to, reason}]),
        and what the channel in use describes (the TCP links' "groups")}."""
        return {"chain": list(self.names), "steps": dict(self.steps), "fallbacks": list(self.fallbacks),
                **self.described}  # fmt: skip

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
