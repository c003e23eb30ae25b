"""What the socket channels share: the reply's layout, the framing, and the answers.

A step's reply from a worker (or a node's relay) is one flat vector in the network's dtype,

    [ P gradient sums | cost, correct, examples ]          # (P + N_STATS,)

where every entry is a sum over the shard's examples (core/steps.py), so replies add.
On a socket, a shard of indices is `int64 n` then n `int64` indices, and an answer is
one byte: 1 = the step's sums are ready (in the step file, or following on the link),
0 = the step failed there.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

import numpy as np

from nnps.core.network import N_STATS
from nnps.core.steps import ChannelBroken

Array = np.ndarray
CONNECT_TIMEOUT_S = 60.0  # a worker process Ray is still starting can take a while
OK, FAILED = b"\x01", b"\x00"
CAUSE_CHARS = 300  # of a failed step's cause, sent after FAILED


def broken(what: str, e: OSError) -> ChannelBroken:
    """ChannelBroken for an OS error: "worker 1 closed its socket (Connection reset by peer)"."""
    return ChannelBroken(f"{what} ({e.strerror or type(e).__name__})")


def reply_size(params: int) -> int:
    """A reply's length for P parameters: the sums, then cost, correct and examples."""
    return params + N_STATS


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """n bytes, or None at EOF (the other side closed or died)."""
    chunks, left = [], n
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_into(conn: socket.socket, buf: Array) -> bool:
    """Fill `buf` from the connection, no copy; False at EOF."""
    view, got = memoryview(buf).cast("B"), 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def send_shard(conn: socket.socket, shard: Array) -> None:
    conn.sendall(len(shard).to_bytes(8, "little") + shard.astype(np.int64, copy=False).tobytes())


def read_shard(conn: socket.socket) -> Array | None:
    """What send_shard sent: the shard's int64 indices, or None at EOF."""
    head = recv_exact(conn, 8)
    data = None if head is None else recv_exact(conn, 8 * int.from_bytes(head, "little"))
    return None if data is None else np.frombuffer(data, np.int64)


def failure(e: BaseException) -> bytes:
    """The answer of a worker whose step raised: FAILED, then its cause (2-byte length, UTF-8)."""
    cause = f"{type(e).__name__}: {e}".splitlines()[0][:CAUSE_CHARS].encode(errors="replace")
    return FAILED + len(cause).to_bytes(2, "little") + cause


def read_answer(conn: socket.socket, who: str, channel: str) -> None:
    """The one-byte answer of `who` ("worker 1"); ChannelBroken unless it is OK, with the
    worker's cause when it failed the step."""
    answer = recv_exact(conn, 1)
    if answer is None:
        raise ChannelBroken(f"{who} closed its {channel}")
    if answer != OK:
        head = recv_exact(conn, 2)
        cause = recv_exact(conn, int.from_bytes(head, "little")) if head else None
        raise ChannelBroken(f"{who} failed the step" + (f": {cause.decode(errors='replace')}" if cause else ""))


def accept_workers(listener: socket.socket, conns: list[socket.socket | None], timeout_s: float,
                   read_slot: Callable[[socket.socket], int]) -> None:  # fmt: skip
    """Fill `conns` (one per worker slot) from `listener`: each connection says its slot
    (`read_slot`, -1 if it did not); one that does not, or names a taken or unknown slot, is
    closed and does not count. ChannelBroken if the slots are not all filled in time."""
    deadline = time.monotonic() + timeout_s
    while any(c is None for c in conns):
        listener.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            raise ChannelBroken(f"workers did not connect within {timeout_s:.0f} s") from None
        slot = read_slot(conn)
        if not 0 <= slot < len(conns) or conns[slot] is not None:
            conn.close()  # not a worker of ours
            continue
        conns[slot] = conn
