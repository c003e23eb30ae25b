"""`nnps train --address` across real hosts (tests/hosts.py: network namespaces on one
machine, each with its own address and interface): the workers on the other host reach
the server over the TCP links across a real interface, and the run equals serial SGD.
The links listen on one known port (NNPS_LINK_PORT, in the Ray nodes' environment), which
a test blocks with nftables."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.training import train
from tests.conftest import MNIST_10K
from tests.hosts import Hosts, available

pytestmark = pytest.mark.ray

ARGS = ["--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "50", "--epochs", "1", "--steps", "60",
        "--lr", "3.0", "--dtype", "float64", "--seed", "2"]  # fmt: skip
LINK_PORT = 47000
CFG = TrainConfig(data=str(MNIST_10K), hidden=(20,), batch_size=50, epochs=1, steps=60, lr=3.0, dtype="float64", seed=2)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    why = available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-host tests must run in CI: {why}")
        pytest.skip(f"no network namespaces here: {why}")
    h = Hosts([2, 2], env={"NNPS_LINK_PORT": str(LINK_PORT)})
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def serial(mnist10k) -> np.ndarray:
    return train(CFG, mnist10k)["params"]


def train_across(hosts: Hosts, run: Path, *args: str, err: list | None = None) -> dict:
    """`nnps train --address HEAD` on the head's host; its --json summary (its stderr to `err`)."""
    out = hosts.run(0, sys.executable, "-m", "nnps.cli.main", "train", "--address", hosts.address, *ARGS, *args,
                    "--run-dir", str(run), "--json", check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    if err is not None:
        err.append(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("workers", [2, 4])
def test_two_hosts_equal_serial_over_tcp_links(workers: int, hosts: Hosts, serial, tmp_path: Path) -> None:
    summary = train_across(hosts, tmp_path / "run", "--workers", str(workers))
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    channels = summary["channels"]
    assert summary["metrics"]["channels"] == channels  # metrics.jsonl's last row has the same record
    assert (channels["chain"], channels["steps"], channels["fallbacks"]) == (["tcp", "ray"], {"tcp": 60, "ray": 0}, [])
    # one link per host, relayed by its first worker: 1 or 2 workers on each of the 2 hosts
    groups = channels["groups"]
    assert len(groups) == 2 and sorted(len(g) for g in groups) == [workers // 2] * 2, groups


def test_a_throttled_host_is_slower_and_still_equal(hosts: Hosts, serial, tmp_path: Path) -> None:
    fast = train_across(hosts, tmp_path / "fast", "--workers", "2")
    hosts.shape(1, "20mbit")  # each step moves 2 x 127 KB of float64 vectors to and from the other host
    try:
        slow = train_across(hosts, tmp_path / "slow", "--workers", "2")
    finally:
        hosts.unshape(1)
    final = checkpoint.load(str(tmp_path / "slow" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    assert slow["channels"]["steps"] == {"tcp": 60, "ray": 0}
    print(f"2 hosts, 60 steps: {fast['train_seconds']:.3f} s unshaped, {slow['train_seconds']:.3f} s at 20 Mbit/s")
    # 60 steps x 254 KB at 2.5 MB/s is about 6 s of transfer, against well under a second unshaped
    assert slow["train_seconds"] > 3 * fast["train_seconds"]



def test_a_blocked_link_port_falls_back_to_ray_calls_from_the_first_step(hosts: Hosts, serial,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    """Both hosts drop TCP to the links' port from the other (wherever Ray put the server):
    the other host's worker cannot connect, says so within 10 s, and every step goes by Ray
    calls; the user is told in one line."""
    for i in (0, 1):
        hosts.block(i, LINK_PORT)
    err: list = []
    try:
        summary = train_across(hosts, tmp_path / "run", "--workers", "2", err=err)
    finally:
        for i in (0, 1):
            hosts.unblock(i)
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    channels = summary["channels"]
    assert channels["steps"] == {"tcp": 0, "ray": 60}, channels
    (fell,) = channels["fallbacks"]
    assert (fell["step"], fell["from"], fell["to"]) == (0, "tcp", "ray")
    assert re.fullmatch(rf"worker [01] could not reach 198\.51\.100\.[12]:{LINK_PORT}", fell["reason"]), fell
    notes = [line for line in err[0].splitlines() if line.startswith("note:")]
    assert notes == [f"note: from step 0 the steps went over ray instead of tcp: {fell['reason']}"], err[0][-2000:]


def test_a_host_cut_off_mid_run_and_the_run_finishes_equal(hosts: Hosts, mnist10k, tmp_path: Path) -> None:
    """The second host's interface goes down mid-run: its worker is lost with it (and the
    server, if Ray put it there). The link ends within ~15 s (keepalive, and the limit on
    unacknowledged bytes: the server may be sending when the host goes), Ray declares the
    node dead and restarts the worker on the head's host, and the run ends equal to serial."""
    import time

    steps = ["--steps", "3000", "--epochs", "15", "--checkpoint-every", "500"]
    run = tmp_path / "run"
    p = hosts.popen(0, sys.executable, "-m", "nnps.cli.main", "train", "--address", hosts.address, *ARGS, *steps,
                    "--workers", "2", "--run-dir", str(run), "--json")  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob("ckpt-*.npz")):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hosts.cut(1)
        cut_at = time.monotonic()
        out, err = p.communicate(timeout=400)
    finally:
        p.kill()
    assert p.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 3000 and "Traceback" not in err
    expected = train(CFG.replace(steps=3000, epochs=15), mnist10k)["params"]
    assert np.max(np.abs(checkpoint.load(str(run / "final.npz")).params - expected)) < 1e-9
    print(f"host cut off: done {time.monotonic() - cut_at:.0f} s after the cut; {summary['channels']}")
