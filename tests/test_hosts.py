"""`nnps train --address` across real hosts (tests/hosts.py: network namespaces on one
machine, each with its own address and interface): the workers on the other host reach
the server over the TCP links across a real interface, and the run equals serial SGD."""

from __future__ import annotations

import json
import os
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
CFG = TrainConfig(data=str(MNIST_10K), hidden=(20,), batch_size=50, epochs=1, steps=60, lr=3.0, dtype="float64", seed=2)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    why = available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-host tests must run in CI: {why}")
        pytest.skip(f"no network namespaces here: {why}")
    h = Hosts([2, 2])
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def serial(mnist10k) -> np.ndarray:
    return train(CFG, mnist10k)["params"]


def train_across(hosts: Hosts, run: Path, *args: str) -> dict:
    """`nnps train --address HEAD` on the head's host; its --json summary."""
    out = hosts.run(0, sys.executable, "-m", "nnps.cli.main", "train", "--address", hosts.address, *ARGS, *args,
                    "--run-dir", str(run), "--json", check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("workers", [2, 4])
def test_two_hosts_equal_serial_over_tcp_links(workers: int, hosts: Hosts, serial, tmp_path: Path) -> None:
    summary = train_across(hosts, tmp_path / "run", "--workers", str(workers))
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    channels = summary["metrics"]["channels"]
    assert (channels["link"], channels["ray"], channels["socket_error"]) == (60, 0, None), channels
    # one link per host, relayed by its first worker: 1 or 2 workers on each of the 2 hosts
    groups = channels["link_groups"]
    assert len(groups) == 2 and sorted(len(g) for g in groups) == [workers // 2] * 2, groups


def test_a_throttled_host_is_slower_and_still_equal(hosts: Hosts, serial, tmp_path: Path) -> None:
    fast = train_across(hosts, tmp_path / "fast", "--workers", "2")
    hosts.shape(1, "20mbit")  # each step moves 2 x 127 KB of float64 vectors to and from the other host
    try:
        slow = train_across(hosts, tmp_path / "slow", "--workers", "2")
    finally:
        hosts.run(1, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    final = checkpoint.load(str(tmp_path / "slow" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    assert slow["metrics"]["channels"]["link"] == 60
    print(f"2 hosts, 60 steps: {fast['train_seconds']:.3f} s unshaped, {slow['train_seconds']:.3f} s at 20 Mbit/s")
    # 60 steps x 254 KB at 2.5 MB/s is about 6 s of transfer, against well under a second unshaped
    assert slow["train_seconds"] > 3 * fast["train_seconds"]



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
    print(f"host cut off: done {time.monotonic() - cut_at:.0f} s after the cut; {summary['metrics']['channels']}")
