"""The TCP step links (worker/channels/links.py) and the node relays behind them
(worker/channels/relay.py), without Ray: what each side receives and sends, who may connect,
and each way a step can break."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnps.worker.channels.links import TOKEN_BYTES, ServerLinks, serve
from nnps.worker.channels.relay import NodeRelay, relay_sums
from nnps.worker.channels.step_file import SHM_DIR, Mapped
from nnps.worker.channels.unix import serve as serve_slot
from nnps.core.steps import ChannelBroken

SIZE = 5  # parameters; a reply is SIZE + N_STATS (3)


def echo(params: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
    """A stand-in for backprop whose answer shows what the worker received."""
    out[:SIZE] = params * 2.0
    out[SIZE:] = (indices.sum(), len(indices), -1.0)


def fails(params: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
    raise ValueError("bad shard")


def alone(g: int, server: ServerLinks, sums=echo):  # type: ignore[no-untyped-def]
    """Link g's end for a worker alone on its node."""
    params = np.empty(SIZE, np.float64)
    return serve(server.address, server.token, g, 1, params, relay_sums(None, sums))


def linked(workers: int) -> ServerLinks:
    server = ServerLinks("127.0.0.1", [[i] for i in range(workers)], SIZE, np.dtype("float64"))
    for i in range(workers):
        alone(i, server)
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
    assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 15_000  # a vanished host while sending
    server.close()


def test_a_connection_without_the_token_is_refused() -> None:
    server = ServerLinks("127.0.0.1", [[0]], SIZE, np.dtype("float64"))
    stranger = socket.create_connection(server.address)
    stranger.sendall(bytes(TOKEN_BYTES) + (0).to_bytes(4, "little"))  # slot 0, wrong token
    alone(0, server)
    server.accept(timeout_s=10)
    assert stranger.recv(1) == b""  # closed on it
    np.testing.assert_array_equal(server.step(np.ones(SIZE), [np.array([2])])[0], [2, 2, 2, 2, 2, 2, 1, -1])
    server.close()
    stranger.close()


def test_a_worker_that_cannot_reach_the_server_says_so_at_once() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    closed = probe.getsockname()
    probe.close()  # nothing listens there now
    ended: list[bool] = []
    compute, on_end = relay_sums(None, echo), lambda: ended.append(True)
    assert serve(closed, bytes(TOKEN_BYTES), 0, 1, np.empty(SIZE), compute, on_end) is None
    assert ended == [True]  # a relay's members are let go at once


def test_no_worker_connecting_is_a_broken_channel() -> None:
    server = ServerLinks("127.0.0.1", [[0]], SIZE, np.dtype("float64"))
    with pytest.raises(ChannelBroken, match=r"^workers did not connect within 0 s$"):
        server.accept(timeout_s=0.2)
    server.close()


def test_a_failed_step_breaks_the_channel() -> None:
    server = ServerLinks("127.0.0.1", [[0], [1]], SIZE, np.dtype("float64"))
    alone(0, server)
    alone(1, server, fails)
    server.accept(timeout_s=10)
    with pytest.raises(ChannelBroken, match=r"^worker 1 failed the step: ValueError: bad shard$"):  # its cause kept
        server.step(np.ones(SIZE), [np.array([0]), np.array([1])])
    server.close()


def test_a_worker_that_dies_breaks_the_channel() -> None:
    """A real process connects as worker 1 and is killed: its connection closes with it."""
    server = ServerLinks("127.0.0.1", [[0], [1]], SIZE, np.dtype("float64"))
    alone(0, server)
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


def relayed(server: ServerLinks, g: int, members: int, member_sums=echo):  # type: ignore[no-untyped-def]
    """Link g's end for a node of 1 + `members` workers: a relay and its members' threads,
    each member computing into its slot of the relay's step file."""
    relay = NodeRelay(SIZE, members, "float64")
    for j in range(members):
        mapped = Mapped(relay.spec)  # mapped before the relay removes the file's name
        serve_slot(relay.spec, j, lambda idx, m=mapped, j=j: member_sums(m.params, idx, m.replies[j]))
    relay.accept(timeout_s=10)
    compute = relay_sums(relay, echo)
    thread = serve(server.address, server.token, g, 1 + members, relay.params, compute, relay.close)
    return relay, thread


def test_a_node_relay_answers_with_its_nodes_sum() -> None:
    # workers 0, 2 and 3 on one node (0 relays), worker 1 alone on another
    server = ServerLinks("127.0.0.1", [[0, 2, 3], [1]], SIZE, np.dtype("float64"))
    relay, _ = relayed(server, 0, 2)
    alone(1, server)
    server.accept(timeout_s=10)
    # the step file and its socket are already unlinked: nothing to leave behind in /dev/shm
    assert list(SHM_DIR.glob(f"{Path(relay.spec.path).name}*")) == []
    params = np.arange(SIZE, dtype=np.float64)
    shards = [np.array([3, 1]), np.array([4]), np.array([1, 5, 9]), np.array([2, 6])]
    node, other = server.step(params, shards)
    # the node's reply is the sum of what its three workers would have answered
    np.testing.assert_array_equal(node, [0, 6, 12, 18, 24, 4 + 15 + 8, 2 + 3 + 2, -3])
    np.testing.assert_array_equal(other, [0, 2, 4, 6, 8, 4, 1, -1])
    # batch < k: missing shards are empty, and a node whose relay has none is not asked
    params += 1.0
    node, other = server.step(params, [np.array([7]), np.array([8]), np.array([2])])
    np.testing.assert_array_equal(node, [4, 8, 12, 16, 20, 9, 2, -2])
    np.testing.assert_array_equal(other, [2, 4, 6, 8, 10, 8, 1, -1])
    (node,) = server.step(params, [np.array([5])])
    np.testing.assert_array_equal(node, [2, 4, 6, 8, 10, 5, 1, -1])
    server.close()


def test_a_relays_member_that_fails_fails_the_nodes_step() -> None:
    server = ServerLinks("127.0.0.1", [[0, 1]], SIZE, np.dtype("float64"))
    relay, thread = relayed(server, 0, 1, member_sums=fails)
    server.accept(timeout_s=10)
    with pytest.raises(ChannelBroken, match=r"^workers 0, 1 \(node relay\) failed the step: ChannelBroken: worker \d "
                                            r"failed the step: ValueError: bad shard$"):  # fmt: skip
        server.step(np.ones(SIZE), [np.array([0]), np.array([1])])
    server.close()  # as the parameter server does: the relay's thread ends and closes its node's sockets
    thread.join(timeout=10)
    member = relay.sockets.conns[0]
    assert not thread.is_alive() and member is not None and member.fileno() == -1
