"""The `tcp` channel: one TCP link per node, for workers on other nodes than the server's.

`open` groups the workers by node (in order of first appearance); each group's first worker is its
relay (relay.py), which serves its members over a step file and Unix sockets (`RelayEnd`, then
unix.UnixEnd) and connects the node's link to the server's port (`LinkEnd`, links.py); a worker
alone on its node ends its link itself. A link that cannot be made (a port a firewall drops, a relay
whose members did not connect) breaks the channel at `open`: docs/architecture.md, "Which channel
runs where".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError

from nnps.core.environment import LINK_PORT
from nnps.core.errors import ConfigError
from nnps.core.steps import ChannelBroken, StepChannel, Sums
from nnps.worker.channels import links
from nnps.worker.channels.relay import NodeRelay, relay_sums
from nnps.worker.channels.unix import UnixEnd
from nnps.worker.channels.wire import CONNECT_TIMEOUT_S, broken

Array = np.ndarray


def node_groups(placement: list[str]) -> list[list[int]]:
    """The workers' indices grouped by node (each worker's node id), in order of first
    appearance: each group's first worker relays the others' steps."""
    groups: dict[str, list[int]] = {}
    for i, node in enumerate(placement):
        groups.setdefault(node, []).append(i)
    return list(groups.values())


@dataclass(frozen=True)
class RelayEnd:
    """Make this worker its node's relay for `members` others: returns the step file they
    are to serve (unix.UnixEnd) before this worker's LinkEnd."""

    members: int
    size: int
    dtype: str

    def start(self, sums: Sums, state: dict[str, Any]) -> Any:
        state["relay"] = NodeRelay(self.size, self.members, self.dtype)
        return state["relay"].spec


@dataclass(frozen=True)
class LinkEnd:
    """Connect link g to the server and serve it: `shards` shards a step (the relay's own,
    then its members'). Returns None, or why not (the port or the members not reached)."""

    address: tuple[str, int]
    token: bytes
    g: int
    shards: int
    size: int
    dtype: str

    def start(self, sums: Sums, state: dict[str, Any]) -> str | None:
        relay: NodeRelay | None = state.pop("relay", None)
        if relay is not None:
            try:
                relay.accept(CONNECT_TIMEOUT_S)
            except ChannelBroken as e:
                relay.close()
                return f"could not reach its members: {e}"
        # The link thread's own buffers: a Ray call the server makes after a broken link
        # writes a fresh array, so the two never share an output.
        params = relay.params if relay is not None else np.empty(self.size, self.dtype)
        on_end = relay.close if relay is not None else None
        if links.serve(self.address, self.token, self.g, self.shards, params, relay_sums(relay, sums), on_end) is None:
            return f"could not reach {self.address[0]}:{self.address[1]}"
        return None


class TcpChannel(StepChannel):
    """alone (bounded/async): a link per worker, since each reply is an update of its own
    and a relay's sum of its node's replies would merge them."""

    name = "tcp"

    def __init__(self, workers: list, placement: list[str], alone: bool = False) -> None:
        self.workers = workers
        self.groups = [[i] for i in range(len(workers))] if alone else node_groups(placement)
        self.links: links.ServerLinks | None = None
        self.waiting: set[int] = set()

    def open(self, params: Array) -> None:
        size, dtype = params.size, params.dtype.name
        try:
            self.links = links.ServerLinks(ray.util.get_node_ip_address(), self.groups, size, params.dtype,
                                           LINK_PORT.port())  # fmt: skip
        except OSError as e:  # NNPS_LINK_PORT taken, say
            raise broken("cannot listen for links", e) from None
        except ConfigError as e:  # a bad NNPS_LINK_PORT on the server's node
            raise ChannelBroken(str(e)) from None
        relays = [self.workers[members[0]] for members in self.groups]
        try:
            for relay, members in zip(relays, self.groups):
                if len(members) > 1:
                    spec = ray.get(relay.serve_channel.remote(RelayEnd(len(members) - 1, size, dtype)))
                    ray.get([self.workers[i].serve_channel.remote(UnixEnd(spec, j)) for j, i in enumerate(members[1:])])
            address, token = self.links.address, self.links.token
            failed = ray.get([w.serve_channel.remote(LinkEnd(address, token, g, len(members), size, dtype))
                              for g, (w, members) in enumerate(zip(relays, self.groups))])  # fmt: skip
            for g, why in enumerate(failed):
                if why is not None:
                    raise ChannelBroken(f"{self.links.who(g)} {why}")
            self.links.accept()
        except RayError as e:
            raise ChannelBroken(f"a worker could not serve its link ({type(e).__name__})") from None
        return None

    def step(self, params: Array, shards: list[Array]) -> list[Array]:
        """The parameters once per node's link, the node's replies summed by its relay: one
        reply per node (the default sends and receives would merge nothing)."""
        assert self.links is not None  # opened
        return self.links.step(params, shards)

    def send(self, i: int, params: Array, indices: Array) -> None:
        assert self.links is not None and self.groups[i] == [i]  # opened with a link per worker
        self.links.send(i, params, [indices])
        self.waiting.add(i)

    def receive(self) -> tuple[int, Array]:
        assert self.links is not None
        g, reply = self.links.first_reply(self.waiting)
        self.waiting.discard(g)
        return g, reply

    def close(self) -> None:
        if self.links is not None:
            self.links.close()  # the relays' threads read EOF, end, and close their members' sockets
            self.links = None

    def describe(self) -> dict[str, Any]:
        return {"groups": self.groups}
