"""The TCP step links (worker/step_links.py), without Ray: what each side receives and
sends, who may connect, and each way a step can break."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from nnps.worker.step_links import TOKEN_BYTES, ServerLinks, serve
from nnps.worker.step_sockets import ChannelBroken

SIZE = 5  # parameters; a reply is SIZE + 3


def echo(params: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
    """A stand-in for backprop whose answer shows what the worker received."""
    out[:SIZE] = params * 2.0
    out[SIZE:] = (indices.sum(), len(indices), -1.0)


def linked(workers: int, compute=echo) -> ServerLinks:  # type: ignore[no-untyped-def]
    server = ServerLinks("127.0.0.1", workers, SIZE + 3, np.dtype("float64"))
    for i in range(workers):
        serve(server.address, server.token, i, SIZE, np.dtype("float64"), compute)
    server.accept(timeout_s=10)
    return server


def test_each_worker_gets_the_parameters_and_its_shard_and_answers() -> None:
    server = linked(2)
    params = np.arange(SIZE, dtype=np.float64)
    replies = server.step(params, [np.array([3, 1, 4]), np.array([1, 5], np.int32)])
    np.testing.assert_array_equal(replies[0], [0, 2, 4, 6, 8, 8, 3, -1])
    np.testing.assert_array_equal(replies[1], [0, 2, 4, 6, 8, 6, 2, -1])
    # the next step reads the parameters as they are now, and an empty shard is a message too
    params += 1.0
    replies = server.step(params, [np.array([9]), np.array([], np.int64)])
    np.testing.assert_array_equal(replies[0], [2, 4, 6, 8, 10, 9, 1, -1])
    np.testing.assert_array_equal(replies[1], [2, 4, 6, 8, 10, 0, 0, -1])
    # fewer shards than workers (batch < k): only those workers are asked
    assert len(server.step(params, [np.array([7])])) == 1
    # a host that dies silently is noticed by keepalive probes, not after the step timeout
    conn = server.conns[0]
    assert conn is not None and conn.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
    server.close()


def test_a_connection_without_the_token_is_refused() -> None:
    server = ServerLinks("127.0.0.1", 1, SIZE + 3, np.dtype("float64"))
    stranger = socket.create_connection(server.address)
    stranger.sendall(bytes(TOKEN_BYTES) + (0).to_bytes(4, "little"))  # slot 0, wrong token
    serve(server.address, server.token, 0, SIZE, np.dtype("float64"), echo)
    server.accept(timeout_s=10)
    assert stranger.recv(1) == b""  # closed on it
    np.testing.assert_array_equal(server.step(np.ones(SIZE), [np.array([2])])[0], [2, 2, 2, 2, 2, 2, 1, -1])
    server.close()
    stranger.close()


def test_a_worker_that_cannot_reach_the_server_says_so_at_once() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    closed = probe.getsockname()
    probe.close()  # nothing listens there now
    assert serve(closed, bytes(TOKEN_BYTES), 0, SIZE, np.dtype("float64"), echo) is None


def test_no_worker_connecting_is_a_broken_channel() -> None:
    server = ServerLinks("127.0.0.1", 1, SIZE + 3, np.dtype("float64"))
    with pytest.raises(ChannelBroken, match=r"^workers did not connect within 0 s$"):
        server.accept(timeout_s=0.2)
    server.close()


def test_a_failed_step_breaks_the_channel() -> None:
    def fails(params: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
        raise ValueError("bad shard")

    server = ServerLinks("127.0.0.1", 2, SIZE + 3, np.dtype("float64"))
    serve(server.address, server.token, 0, SIZE, np.dtype("float64"), echo)
    serve(server.address, server.token, 1, SIZE, np.dtype("float64"), fails)
    server.accept(timeout_s=10)
    with pytest.raises(ChannelBroken, match=r"^worker 1 failed the step$"):
        server.step(np.ones(SIZE), [np.array([0]), np.array([1])])
    server.close()


def test_a_worker_that_dies_breaks_the_channel() -> None:
    """A real process connects as worker 1 and is killed: its connection closes with it."""
    server = ServerLinks("127.0.0.1", 2, SIZE + 3, np.dtype("float64"))
    serve(server.address, server.token, 0, SIZE, np.dtype("float64"), echo)
    code = ("import socket, sys, time; s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); "
            "s.sendall(bytes.fromhex(sys.argv[3]) + (1).to_bytes(4, 'little')); time.sleep(60)")  # fmt: skip
    host, port = server.address
    proc = subprocess.Popen([sys.executable, "-c", code, host, str(port), server.token.hex()])
    try:
        server.accept(timeout_s=10)
        proc.kill()
        proc.wait()
        with pytest.raises(ChannelBroken) as e:
            server.step(np.ones(SIZE), [np.array([0]), np.array([1])])
        assert re.fullmatch(r"worker 1( closed its link|'s link failed \(.+\))", str(e.value))
    finally:
        proc.kill()
        server.close()
