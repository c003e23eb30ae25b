"""Faults during the warm start (cluster/warm_start.py): a worker or the parameter server
SIGKILLed in each window of the handover, and the run still ends with the weights of an
uninterrupted one (float64, 1e-9).

The windows, in the order a warm-started run meets them:

    start         the workers' processes are up, their data not yet fetched (RayExecutor.__init__)
    server-start  the server's process has just been created (RayExecutor._start_server)
    handover      the in-process state is about to be loaded into the server (RayExecutor.load)
    first-chunk   the first chunk of steps on the workers has been sent (RayExecutor.run)

Before `start` Ray itself is starting and neither a worker nor a server exists yet;
`test_cli_server_killed_as_it_appears` kills the first server of a real `nnps train` run
whenever it first shows up, however the threads interleave.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from nnps.cluster.ray_executor import RayExecutor
from nnps.core import checkpoint
from nnps.core.rundir import RunDir
from nnps.core.training import train
from tests.conftest import MNIST_10K
from tests.test_distributed import actor_pids, local_ray  # noqa: F401 (local_ray: the module's Ray, autouse)
from tests.test_warm_start import CFG, Handover

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def serial(mnist10k) -> np.ndarray:
    return train(CFG.replace(workers=0), mnist10k)["params"]


def sigkill(pid: int) -> int:
    os.kill(pid, signal.SIGKILL)
    return pid


class Faulty(RayExecutor):
    """A RayExecutor that SIGKILLs one of its processes (`who`: "worker" or "server") once,
    at one moment (`window`) of the warm start."""

    def __init__(self, plan, dataset, window: str, who: str) -> None:
        self.window, self.who, self.killed = window, who, []
        super().__init__(plan, dataset, 2)

    def _kill(self, window: str) -> None:
        if window != self.window or self.killed:
            return
        if self.who == "server":
            self.killed.append(sigkill(ray.get(self.server.pid.remote())))
        else:
            self.killed.append(sigkill(ray.get(self.workers[1].where.remote())[0]))

    def _start_server(self, snapshot):
        server = super()._start_server(snapshot)
        if self.window == "server-start" and not self.killed:
            self.killed.append(sigkill(ray.get(server.pid.remote())))
        return server

    def restore(self, snapshot) -> None:
        super().restore(snapshot)
        self._kill("start")  # __init__ asks every worker for ready() next

    def load(self, snapshot) -> None:
        self._kill("handover")
        super().load(snapshot)

    def run(self, start: int, stop: int) -> None:
        super().run(start, stop)
        self._kill("first-chunk")

    def close(self) -> None:
        self.pids_at_end = [pid for pid, _ in self.placement()]
        super().close()


FAULTS = [("start", "worker"), ("start", "server"), ("server-start", "server"), ("handover", "server"),
          ("handover", "worker"), ("first-chunk", "server"), ("first-chunk", "worker")]  # fmt: skip


@pytest.mark.parametrize("window,who", FAULTS)
def test_fault_in_each_window_equals_an_uninterrupted_run(window: str, who: str, mnist10k, serial,
                                                          tmp_path: Path) -> None:  # fmt: skip
    h = Handover(7, lambda plan: Faulty(plan, mnist10k, window, who))  # the workers "come up" after 7 steps
    rd = RunDir(str(tmp_path / "run"))
    out = train(CFG, mnist10k, rd, make_executor=h.make, reporter=h)
    ex: Faulty = h.ready.result()
    assert ex.killed, "the fault was not injected"
    assert h.warm.handed_over_at == 7 and h.said[0].startswith("warm start: 7 steps ran in-process")
    diff = float(np.max(np.abs(out["params"] - serial)))
    print(f"warm-start fault {window}/{who}: max |w - w_serial| = {diff:.3g}")  # shown with pytest -s
    assert diff < 1e-9
    if who == "server":  # a server was started again: at once, at the handover, or from a checkpoint
        assert ex.servers_built == 2
        assert ex.killed[0] not in actor_pids("ParameterServer")
    else:  # Ray restarted the worker, which fetched the data again by itself
        assert ex.servers_built == 1
        assert ex.killed[0] not in ex.pids_at_end and len(set(ex.pids_at_end)) == 2
    assert [s for s, _ in rd.checkpoints()][-1] == 56  # every 7 steps, then final.npz at 60
    assert checkpoint.load(str(tmp_path / "run" / "final.npz")).meta["step"] == 60


def test_server_that_never_starts_is_one_error(mnist10k) -> None:
    """A server that dies every time it starts: a ClusterError saying so, not Ray's traceback."""
    from nnps.core.errors import ClusterError
    from nnps.core.plan import plan_run

    class Doomed(RayExecutor):
        def _start_server(self, snapshot):
            server = super()._start_server(snapshot)
            sigkill(ray.get(server.pid.remote()))
            return server

    with pytest.raises(ClusterError, match=r"^the parameter server died each of 4 times it was started "
                                           r"\(\w+\); see Ray's logs"):  # fmt: skip
        Doomed(plan_run(CFG, mnist10k, None, False), mnist10k, 2)


def test_cli_server_killed_as_it_appears(mnist10k, tmp_path: Path) -> None:
    """A real `nnps train --workers 2` (its own embedded Ray, the start thread): the first
    ParameterServer process is SIGKILLed as soon as it exists, wherever the run then is.
    It ends with exit 0, no traceback, and serial SGD's weights."""
    ray.shutdown()  # this test's run starts its own Ray
    before = set(actor_pids("ParameterServer"))
    # 400 steps of 784-100-10 at batch 500: long enough in-process for the workers to take over
    cfg = CFG.replace(hidden=(100,), epochs=20, workers=0)
    args = ["--data", str(MNIST_10K), "--hidden", "100", "--batch-size", "500", "--epochs", "20", "--lr", "0.5",
            "--optimizer", "momentum", "--dtype", "float64", "--seed", "3", "--checkpoint-every", "7"]  # fmt: skip
    p = subprocess.Popen([sys.executable, "-m", "nnps.cli.main", "train", *args, "--workers", "2", "--log-progress",
                          "--run-dir", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and p.poll() is None and time.monotonic() < deadline:
            new = set(actor_pids("ParameterServer")) - before
            if new:
                killed = sigkill(min(new))
            time.sleep(0.01)
        stdout, stderr = p.communicate(timeout=300)
    finally:
        p.kill()
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert killed is not None, "the run ended before a server appeared"
    assert p.returncode == 0, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert re.search(r"^done: 400 steps", stderr, re.M), stderr
    final = checkpoint.load(str(tmp_path / "run" / "final.npz")).params
    assert np.max(np.abs(final - train(cfg, mnist10k)["params"])) < 1e-9
