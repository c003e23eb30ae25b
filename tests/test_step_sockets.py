"""The step sockets (worker/channels/unix.py), without Ray: what each side receives, and
each way a step can break."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from nnps.worker.channels.step_file import NodeBuffers, sweep_stale
from nnps.worker.channels.unix import ServerSockets, serve, socket_path
from nnps.core.steps import ChannelBroken


def exchange(server: ServerSockets, shards: list[np.ndarray]) -> None:
    """One synchronous step as UnixChannel takes it: every shard sent, then every answer."""
    for i, shard in enumerate(shards):
        server.send_one(i, shard)
    waiting = set(range(len(shards)))
    while waiting:
        waiting.discard(server.first_answer(waiting))


@pytest.fixture
def spec():
    s = NodeBuffers.create(size=4, workers=2, dtype="float64")
    yield s
    s.unlink()
    assert not Path(socket_path(s)).exists()  # unlink takes the socket with the file


def test_each_worker_gets_its_shard_and_the_server_waits_for_both(spec: NodeBuffers) -> None:
    server = ServerSockets(spec)
    seen: list[list] = [[], []]
    done = [threading.Event(), threading.Event()]

    def compute_for(i: int):
        def compute(indices: np.ndarray) -> None:
            seen[i].append(indices.tolist())
            if len(seen[i]) == 2:
                done[i].set()
        return compute

    threads = [serve(spec, i, compute_for(i)) for i in (1, 0)]  # the order they connect does not matter
    server.accept(timeout_s=10)
    exchange(server, [np.array([3, 1, 4]), np.array([1, 5], np.int32)])
    exchange(server, [np.array([9]), np.array([], np.int64)])  # an empty shard is still a message
    assert seen == [[[3, 1, 4], [9]], [[1, 5], []]]
    server.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()  # the server's EOF ends them
    assert not Path(socket_path(spec)).exists()


def test_a_failed_step_breaks_the_channel(spec: NodeBuffers) -> None:
    server = ServerSockets(spec)

    def fails(indices: np.ndarray) -> None:
        raise ValueError("bad shard")

    serve(spec, 0, lambda idx: None)
    serve(spec, 1, fails)
    server.accept(timeout_s=10)
    with pytest.raises(ChannelBroken, match=r"^worker 1 failed the step: ValueError: bad shard$"):  # its cause kept
        exchange(server, [np.array([0]), np.array([1])])
    server.close()


def test_a_worker_that_dies_breaks_the_channel(spec: NodeBuffers) -> None:
    """A real process connects as worker 1 and is killed: its socket closes with it."""
    server = ServerSockets(spec)
    serve(spec, 0, lambda idx: None)
    code = ("import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall((1).to_bytes(4, 'little')); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, socket_path(spec)])
    try:
        server.accept(timeout_s=10)
        proc.kill()
        proc.wait()
        with pytest.raises(ChannelBroken) as e:
            exchange(server, [np.array([0]), np.array([1])])
        assert re.fullmatch(r"worker 1 closed its socket( \(.+\))?", str(e.value))
    finally:
        proc.kill()
        server.close()


def test_a_connection_that_does_not_name_a_free_slot_is_dropped(spec: NodeBuffers) -> None:
    server = ServerSockets(spec)
    strays = []
    for slot in (7, 0, 0):  # there is no slot 7, and slot 0 is taken by the time the second 0 asks
        stray = socket.socket(socket.AF_UNIX)
        stray.connect(socket_path(spec))
        stray.sendall(slot.to_bytes(4, "little"))
        strays.append(stray)
    serve(spec, 1, lambda idx: None)
    server.accept(timeout_s=10)
    try:
        assert strays[0].recv(1) == b"" and strays[2].recv(1) == b""  # the server closed them
        assert server.conns[0] is not None and server.conns[1] is not None
    finally:
        for stray in strays:
            stray.close()
        server.close()


def test_workers_that_never_connect_break_the_channel(spec: NodeBuffers) -> None:
    server = ServerSockets(spec)
    serve(spec, 0, lambda idx: None)
    with pytest.raises(ChannelBroken, match=r"^workers did not connect within 0 s$"):
        server.accept(timeout_s=0.3)
    server.close()


def test_a_dead_server_s_socket_is_swept_with_its_step_file() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = NodeBuffers(f"/dev/shm/nnps-step-{int(gone.stdout)}-0badcafe", 4, 1, "float64")
    Path(stale.path).write_bytes(b"x")
    Path(socket_path(stale)).write_bytes(b"")
    assert sorted(sweep_stale()) == sorted([Path(stale.path).name, Path(socket_path(stale)).name])
