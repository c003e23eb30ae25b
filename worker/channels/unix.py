"""The `unix` channel: the step file in /dev/shm and a Unix socket per worker, on one node.

The vectors stay in the step file (step_file.py; `open` returns the parameters in it, which the
optimizer updates in place). The server listens on `<step file>.sock`; worker i's thread
(`UnixEnd`) maps the file, connects and says i. Per step the server sends worker i its shard
(wire.py) and reads one byte: 1 = sums written to slot i, 0 = the step failed there.

A dead worker's EOF raises `ChannelBroken`; a dead server's EOF ends the workers' threads; a
SIGKILLed server's socket file is swept with its step file (same prefix). No authentication
beyond the file's mode: the socket is the server's user's (0600), like the step file. Why this
channel on one node, and its fallback: docs/architecture.md, "Which channel runs where".
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ray
from ray.exceptions import RayError

from nnps.core.steps import ChannelBroken, StepChannel, Sums
from nnps.worker.channels.step_file import Mapped, NodeBuffers
from nnps.worker.channels.wire import (CONNECT_TIMEOUT_S, OK, accept_workers, broken, failure,
                                       read_answer, read_shard, recv_exact, send_shard)  # fmt: skip

Array = np.ndarray


def socket_path(spec: NodeBuffers) -> str:
    return spec.path + ".sock"


class ServerSockets:
    """The server's end: a listening socket, then one connection per worker."""

    def __init__(self, spec: NodeBuffers) -> None:
        self.path = socket_path(spec)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self.listener.listen(spec.workers + 8)  # room for a stray connection or two beside the workers
        self.conns: list[socket.socket | None] = [None] * spec.workers

    def accept(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Wait for every worker to connect and say its slot; ChannelBroken if one does not."""

        def read_slot(conn: socket.socket) -> int:
            conn.settimeout(None)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            hello = recv_exact(conn, 4)
            return int.from_bytes(hello, "little") if hello is not None else -1

        accept_workers(self.listener, self.conns, timeout_s, read_slot)

    def send_one(self, i: int, shard: Array) -> None:
        """Shard i to worker i."""
        conn = self.conns[i]
        assert conn is not None
        try:
            send_shard(conn, shard)
        except OSError as e:
            raise broken(f"worker {i} closed its socket", e) from None

    def first_answer(self, waiting: set[int]) -> int:
        """The first of the `waiting` workers to answer (its sums are in its slot)."""
        if len(waiting) == 1:  # no need to ask the kernel which
            (i,) = waiting
            self.answer(i)
            return i
        by_fd = {self.conns[i].fileno(): i for i in waiting}  # type: ignore[union-attr]
        ready, _, _ = select.select(list(by_fd), [], [])
        self.answer(by_fd[ready[0]])
        return by_fd[ready[0]]

    def answer(self, i: int) -> None:
        """Wait for worker i's answer: its sums are in its slot. ChannelBroken if it failed or died."""
        conn = self.conns[i]
        assert conn is not None
        try:
            read_answer(conn, f"worker {i}", "socket")
        except OSError as e:  # reset mid-read: the worker died
            raise broken(f"worker {i} closed its socket", e) from None

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                conn.close()
        self.listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def serve(spec: NodeBuffers, i: int, compute: Callable[[Array], None]) -> threading.Thread:
    """Worker i's end, in a daemon thread: connect, then for each message compute the
    shard's sums into slot i (`compute(indices)`) and answer. Ends at the server's EOF."""

    def run() -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                conn.connect(socket_path(spec))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        with conn:
            try:
                conn.sendall(i.to_bytes(4, "little"))
                while (indices := read_shard(conn)) is not None:
                    try:
                        compute(indices)
                        answer = OK
                    except Exception as e:  # the step goes to the server's next channel; the cause with it
                        answer = failure(e)
                    conn.sendall(answer)
            except OSError:  # the server is gone (a reset, when it closed with our answer unread)
                return

    thread = threading.Thread(target=run, daemon=True, name=f"nnps-steps-{i}")
    thread.start()
    return thread


@dataclass(frozen=True)
class UnixEnd:
    """Worker i's end: map the step file (before connecting: a node relay removes the
    file's name once its members are connected), then serve slot i, reading the shared
    parameters, or its own parameter slot where the file has one per worker."""

    spec: NodeBuffers
    i: int

    def start(self, sums: Sums, state: dict[str, Any]) -> None:
        mapped = Mapped(self.spec)
        params = mapped.param_slots[self.i] if self.spec.param_slots > 1 else mapped.params
        serve(self.spec, self.i, lambda indices: sums(params, indices, mapped.replies[self.i]))


class UnixChannel(StepChannel):
    """own_params (bounded/async): a parameter slot per worker, which `send` fills with the
    version that worker is to use, instead of one set every worker reads in place."""

    name = "unix"

    def __init__(self, workers: list, placement: list[str], node: str, own_params: bool = False) -> None:
        self.workers, self.placement, self.node = workers, placement, node  # node ids: each worker's, the server's
        self.own_params = own_params
        self.mapped: Mapped | None = None
        self.sockets: ServerSockets | None = None
        self.waiting: set[int] = set()  # workers sent work and not yet answered (send/receive)

    def open(self, params: Array) -> Array | None:
        away = [i for i, n in enumerate(self.placement) if n != self.node]
        if away:
            raise ChannelBroken(f"worker{'s' * (len(away) > 1)} {', '.join(map(str, away))} on another node than "
                                f"the server, which a step file cannot reach")  # fmt: skip
        k = len(self.workers)
        try:
            self.mapped = Mapped(NodeBuffers.create(params.size, k, params.dtype.name, k if self.own_params else 1))
        except OSError as e:  # no /dev/shm, or no room in it
            raise broken("no step file in /dev/shm", e) from None
        spec = self.mapped.spec
        try:
            self.sockets = ServerSockets(spec)
            ray.get([w.serve_channel.remote(UnixEnd(spec, i)) for i, w in enumerate(self.workers)])
            self.sockets.accept()
        except RayError as e:
            raise ChannelBroken(f"a worker could not serve its socket ({type(e).__name__})") from None
        except OSError as e:
            raise broken("the step socket failed", e) from None
        if self.own_params:
            return None
        self.mapped.params[...] = params
        return self.mapped.params

    def send(self, i: int, params: Array, indices: Array) -> None:
        """Sync: every worker reads the one set of parameters in the file in place, which the
        server keeps there (`open` returned it); bounded/async: worker i's own slot, filled now."""
        assert self.sockets is not None and self.mapped is not None  # opened
        if self.own_params:
            self.mapped.param_slots[i][...] = params
        elif params is not self.mapped.params:  # the server kept them elsewhere (the transport's job)
            raise ValueError("the unix channel's steps read the parameters from its step file")
        self.sockets.send_one(i, indices)
        self.waiting.add(i)

    def receive(self) -> tuple[int, Array]:
        assert self.sockets is not None and self.mapped is not None
        i = self.sockets.first_answer(self.waiting)
        self.waiting.discard(i)
        return i, self.mapped.replies[i]

    def close(self) -> None:
        if self.sockets is not None:
            self.sockets.close()  # the workers' threads read EOF and end
            self.sockets = None
        if self.mapped is not None:
            self.mapped.spec.unlink()  # the mapping stays valid: the server's parameters live on in it
