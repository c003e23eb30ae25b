"""A node's relay: one TCP link to the server for all the workers on a node.

The first worker on each node holds the node's link (links.py), so the parameters cross once per
node and the server reads the node's sum, not k_node replies (bench/scaling.py: `host_sum`):

    server --link--> relay: each member's shard, then the parameters, into the node's step file
    relay --Unix sockets--> the other workers (members): their shards (unix.py)
    members --> relay:      one byte each when their sums are in their slots
    relay:                  its own shard's sums, straight into the link's reply
    relay --link--> server: ONE reply, the node's sum

Every entry of a reply is a sum over examples, so the node's sum is what the server would have
added itself. A member that dies makes the relay answer the step as failed. The step file's
cleanup and the faults: docs/architecture.md, "Which channel runs where" and "Equivalence and faults".

Left out: nested relays (a tree of nodes), and a relay on the server's node that reads the
server's own step file instead of a link (one TCP copy over loopback per step, kept simple).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nnps.core.steps import ChannelBroken, Sums
from nnps.worker.channels.step_file import Mapped, NodeBuffers
from nnps.worker.channels.unix import ServerSockets

Array = np.ndarray


class NodeRelay:
    """The relay's side of a node's step: the step file its members map, their sockets,
    and the sum of their replies with its own."""

    def __init__(self, size: int, members: int, dtype: str) -> None:
        self.spec = NodeBuffers.create(size, members, dtype)  # slots for the members only
        self.mapped = Mapped(self.spec)
        self.sockets = ServerSockets(self.spec)

    @property
    def params(self) -> Array:
        """Where the link reads each step's parameters: the members read them there."""
        return self.mapped.params

    def accept(self, timeout_s: float) -> None:
        """Wait for the members to connect, then remove the step file's and socket's names
        (the members have mapped the file: UnixEnd.start maps it before its
        thread connects)."""
        try:
            self.sockets.accept(timeout_s)
        finally:
            self.spec.unlink()

    def step(self, sums: Sums, shards: list[Array], out: Array) -> None:
        """shards[0] is the relay's own, shards[1 + i] member i's (an empty one not sent): the
        node's sum of all their replies into `out`. ChannelBroken if a member fails."""
        asked = [i for i, s in enumerate(shards[1:]) if len(s)]
        for i in asked:  # the members start on their shards
            self.sockets.send_one(i, shards[1 + i])
        sums(self.mapped.params, shards[0], out)  # (P + N_STATS,) and the relay on its own
        for i in asked:  # in member order, so the sum's rounding is the same every run
            self.sockets.answer(i)
            out += self.mapped.replies[i]  # the node's sum, added while slower members still compute

    def close(self) -> None:
        """Close the members' sockets (their threads read EOF and end)."""
        self.sockets.close()
        self.spec.unlink()


def relay_sums(relay: NodeRelay | None, sums: Sums) -> Callable[[Array, list[Array], Array], None]:
    """What a link computes for a message of shards: the relay's node sum, or, for a
    worker alone on its node (no relay), its one shard's sums."""

    def compute(params: Array, shards: list[Array], out: Array) -> None:
        if relay is not None:
            relay.step(sums, shards, out)
        elif len(shards) != 1:
            raise ChannelBroken(f"a worker alone on its node got {len(shards)} shards")
        else:
            sums(params, shards[0], out)

    return compute
