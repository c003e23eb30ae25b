"""TCP links: the framing of the `tcp` channel (tcp.py) on each end of a link.

The server listens on a port of its node (any free one, or NNPS_LINK_PORT's: core/environment.py);
each node's relay (relay.py) connects to it, and a step is one message each way, in the network's
dtype, read straight into preallocated arrays (`recv_into`), no pickling:

    g times: int64 n, then n int64 indices (shard of each worker)  (server -> relay)
    the P parameters                                               (server -> relay)
    one byte: 1 = the reply follows, 0 = the step failed           (relay -> server)
    the reply: P + N_STATS sums (wire.py)                          (relay -> server)

Security: anyone who reaches the port may connect, so a connection first says a 16-byte token the
server handed its workers through Ray's (authenticated) calls, or is closed. The traffic is not
encrypted, like Ray's own object transfers between nodes.

A worker that cannot connect within LINK_CONNECT_TIMEOUT_S (a firewall, a network policy between
pods) says so to the server's Ray call. A closed or reset connection, a step longer than
LINK_STEP_TIMEOUT_S or a silent host (`keep_alive`) raises `ChannelBroken`. Why TCP across nodes,
and the faults: docs/architecture.md, "Which channel runs where" and "Equivalence and faults".
"""

from __future__ import annotations

import hmac
import secrets
import select
import socket
import threading
from typing import Callable

import numpy as np

from nnps.core.steps import ChannelBroken
from nnps.worker.channels.wire import (CONNECT_TIMEOUT_S, OK, accept_workers, broken, failure,
                                       read_answer, read_shard, recv_exact, recv_into, reply_size,
                                       send_shard)  # fmt: skip

Array = np.ndarray
TOKEN_BYTES = 16
LINK_STEP_TIMEOUT_S = 600.0  # a step of a huge shard can take long; a dead node, forever
LINK_CONNECT_TIMEOUT_S = 10.0  # from a worker to its server's node


UNACKED_LIMIT_MS = 15_000  # TCP_USER_TIMEOUT: sent bytes unacknowledged this long end the link


def keep_alive(conn: socket.socket) -> None:
    """Probe an idle link after 5 s, every 2 s, and give up after 5 unanswered probes; and
    end it when bytes it sent stay unacknowledged for 15 s. Keepalive alone does not cover
    a host that vanishes while this end is sending (the parameters, a reply): probes are
    only sent on an idle link, and the kernel retransmits for ~15 minutes before it gives
    up (a cut-off host hung `nnps train` for more than 5 minutes, tests/test_hosts.py)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 5),
                          ("TCP_USER_TIMEOUT", UNACKED_LIMIT_MS)):  # fmt: skip
        if hasattr(socket, option):  # Linux names; elsewhere the system's defaults stand
            conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class ServerLinks:
    """The server's end: a TCP listener on its node's address, then one link per group of
    workers (`groups`: each a list of worker indices, the relay first)."""

    def __init__(self, host: str, groups: list[list[int]], size: int, dtype: np.dtype, port: int = 0) -> None:
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self.groups = groups
        self.listener = socket.create_server((host, port), backlog=len(groups) + 8)
        self.address = (host, self.listener.getsockname()[1])
        self.conns: list[socket.socket | None] = [None] * len(groups)
        self.replies = [np.empty(reply_size(size), dtype) for _ in groups]  # (P + N_STATS,) each
        self.empty = np.empty(0, np.int64)

    def accept(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Wait for every relay to connect with the token and its link's number;
        ChannelBroken if one does not. Connections without the token are closed."""

        def read_slot(conn: socket.socket) -> int:
            conn.settimeout(5.0)  # for the hello: a silent stranger must not stall the start
            try:
                hello = recv_exact(conn, TOKEN_BYTES + 4)
            except OSError:
                hello = None
            if hello is None or not hmac.compare_digest(hello[:TOKEN_BYTES], self.token):
                return -1
            conn.settimeout(LINK_STEP_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages go at once
            keep_alive(conn)
            return int.from_bytes(hello[TOKEN_BYTES:], "little")

        accept_workers(self.listener, self.conns, timeout_s, read_slot)

    def step(self, params: Array, shards: list[Array]) -> list[Array]:
        """Send each link its workers' shards (shards[i] is worker i's; missing ones are
        empty) and the parameters, then read every link's reply. Links whose relay has no
        shard (batch < k) are not asked."""
        asked = [g for g, members in enumerate(self.groups) if members[0] < len(shards)]
        for g in asked:
            self.send(g, params, [shards[i] if i < len(shards) else self.empty for i in self.groups[g]])
        return [self.reply(g) for g in asked]

    def send(self, g: int, params: Array, shards: list[Array]) -> None:
        """Link g its workers' shards (one each, in member order) and these parameters."""
        conn = self.conns[g]
        assert conn is not None and len(shards) == len(self.groups[g])  # accept() filled every slot
        try:
            for shard in shards:
                send_shard(conn, shard)
            conn.sendall(memoryview(params).cast("B"))
        except OSError as e:  # reset, unreachable or timed out: the worker or its node is gone
            raise broken(f"{self.who(g)}'s link failed", e) from None

    def first_reply(self, waiting: set[int]) -> tuple[int, Array]:
        """The first of the `waiting` links to answer, and its reply."""
        by_fd = {self.conns[g].fileno(): g for g in waiting}  # type: ignore[union-attr]
        ready, _, _ = select.select(list(by_fd), [], [], LINK_STEP_TIMEOUT_S)
        if not ready:
            raise ChannelBroken(f"no link answered within {LINK_STEP_TIMEOUT_S:.0f} s")
        return by_fd[ready[0]], self.reply(by_fd[ready[0]])

    def reply(self, g: int) -> Array:
        """Link g's answer and reply (into its buffer); ChannelBroken if the step failed there
        or the link did (reset, unreachable or timed out: the worker or its node is gone)."""
        conn = self.conns[g]
        assert conn is not None
        try:
            read_answer(conn, self.who(g), "link")
            if not recv_into(conn, self.replies[g]):
                raise ChannelBroken(f"{self.who(g)} closed its link mid-reply")
        except OSError as e:
            raise broken(f"{self.who(g)}'s link failed", e) from None
        return self.replies[g]

    def who(self, g: int) -> str:
        """Link g's workers, for messages: "worker 2", or "workers 0, 1 (node relay)"."""
        members = self.groups[g]
        if len(members) == 1:
            return f"worker {members[0]}"
        return f"workers {', '.join(map(str, members))} (node relay)"

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                conn.close()
        self.listener.close()


def serve(address: tuple[str, int], token: bytes, g: int, shards: int, params: Array,
          compute: Callable[[Array, list[Array], Array], None],
          on_end: Callable[[], None] | None = None) -> threading.Thread | None:  # fmt: skip
    """Link g's end (its relay's): connect and say the token and g (now, so that the
    caller can tell the server whether it could: a port a firewall drops must not cost the
    server its accept timeout), then, in a daemon thread, for each message read the
    `shards` shards and the parameters into `params`, compute the reply
    (`compute(params, shards, out)`: relay.relay_sums) and send it. None if the server
    could not be reached; the thread ends (calling `on_end`) when the server closes the link."""
    try:  # the server listens before it asks the workers to connect: no retries needed
        conn = socket.create_connection(address, timeout=LINK_CONNECT_TIMEOUT_S)
        conn.sendall(token + g.to_bytes(4, "little"))
    except OSError:
        if on_end is not None:
            on_end()
        return None
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    keep_alive(conn)  # a server whose host died: the thread ends instead of waiting forever
    reply = np.empty(reply_size(params.size), params.dtype)

    def read_shards() -> list[Array] | None:
        got = []
        for _ in range(shards):
            if (shard := read_shard(conn)) is None:
                return None
            got.append(shard)
        return got

    def run() -> None:
        with conn:
            try:
                while (indices := read_shards()) is not None and recv_into(conn, params):
                    try:
                        compute(params, indices, reply)
                    except Exception as e:  # the step goes to the server's next channel; the cause with it
                        conn.sendall(failure(e))
                        continue
                    conn.sendall(OK)
                    conn.sendall(memoryview(reply).cast("B"))
            except OSError:  # the server is gone
                return
            finally:
                if on_end is not None:
                    on_end()

    thread = threading.Thread(target=run, daemon=True, name=f"nnps-link-{g}")
    thread.start()
    return thread
