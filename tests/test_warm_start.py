"""Warm start (cluster/warm_start.py): steps in-process while Ray starts, then the
workers; the run equals serial SGD wherever the handover falls."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import ray
from threadpoolctl import threadpool_info

from nnps.cluster.ray_executor import RayExecutor
from nnps.cluster.warm_start import WarmStart
from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.rundir import RunDir
from nnps.core.threads import blas_cap, blas_threads
from nnps.core.training import train
from tests.conftest import MNIST_10K

pytestmark = pytest.mark.ray

# 20 steps an epoch, momentum (optimizer state to hand over), checkpoints every 7 steps:
# chunks end at 1, 7, 14, 20, 21, ... so the handover below falls mid-epoch, at step 7.
CFG = TrainConfig(data="mnist-10k", hidden=(20,), batch_size=500, epochs=3, lr=0.5, optimizer="momentum",
                  dtype="float64", seed=3, checkpoint_every=7, workers=2)  # fmt: skip


class Handover:
    """For train(): a make_executor whose WarmStart's workers "come up" once the driver has
    run `after` steps in-process, as `build(plan)`, and a reporter that counts the steps."""

    def __init__(self, after: int, build: Callable) -> None:
        self.after, self.build, self.step = after, build, 0
        self.ready: Future = Future()
        self.said: list[str] = []
        self.plan = self.warm = None

    def make(self, plan, dataset) -> WarmStart:
        self.plan, self.warm = plan, WarmStart(plan, dataset, self.ready, self.said.append)
        return self.warm

    def run_start(self, *args) -> None: ...
    def epoch_start(self, *args) -> None: ...
    def epoch_end(self, row) -> None: ...

    def advance(self, steps: int, *args) -> None:
        self.step += steps
        if self.step >= self.after and not self.ready.done():
            try:
                self.ready.set_result(self.build(self.plan))
            except BaseException as e:  # as a failed start on the start thread would
                self.ready.set_exception(e)


def test_handover_mid_epoch_equals_serial(mnist10k, tmp_path: Path) -> None:
    serial = train(CFG.replace(workers=0), mnist10k, RunDir(str(tmp_path / "serial")))
    h = Handover(7, lambda plan: RayExecutor(plan, mnist10k, 2))  # the workers "start" after 7 steps
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        warm = train(CFG, mnist10k, RunDir(str(tmp_path / "warm")), make_executor=h.make, reporter=h)
        on_workers = h.ready.result().channels()
    finally:
        ray.shutdown()
    assert h.warm.handed_over_at == 7
    assert on_workers["steps"] == {"unix": 60 - 7, "ray": 0}  # every later step ran on the workers
    assert h.warm.channels()["steps"] == {"in-process": 7, "unix": 60 - 7, "ray": 0}
    assert len(h.said) == 1 and re.fullmatch(r"warm start: 7 steps ran in-process while Ray and the workers started "
                                             r"\([\d.]+ s\); 2 workers go on from step 7", h.said[0]), h.said  # fmt: skip
    assert np.max(np.abs(warm["params"] - serial["params"])) < 1e-9
    # the epoch's running sums crossed over too: epoch 1's training cost and accuracy
    rows = [json_rows(tmp_path / name) for name in ("serial", "warm")]
    for s_row, w_row in zip(*rows, strict=True):
        for key in ("train_cost", "train_accuracy", "test_cost", "test_accuracy"):
            assert abs(s_row[key] - w_row[key]) < 1e-9, (key, s_row, w_row)


def test_float32_weights_do_not_depend_on_the_handover_step(mnist10k, tmp_path: Path) -> None:
    """In float32 the in-process steps compute the workers' shard sums and add them in
    worker order: handing over at step 7, at step 14, or running every step on the
    workers gives the same weights, bit for bit (a run is a pure function of its config)."""
    cfg = CFG.replace(dtype="float32")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        finals = {}
        for after in (7, 14):
            h = Handover(after, lambda plan: RayExecutor(plan, mnist10k, 2))
            finals[after] = train(cfg, mnist10k, RunDir(str(tmp_path / f"warm{after}")), make_executor=h.make,
                                  reporter=h)["params"]  # fmt: skip
            assert h.warm.handed_over_at == after
        workers = train(cfg, mnist10k, RunDir(str(tmp_path / "workers")),
                        make_executor=lambda plan, ds: RayExecutor(plan, ds, 2))["params"]  # fmt: skip
    finally:
        ray.shutdown()
    serial = train(cfg.replace(workers=0), mnist10k)["params"]
    assert finals[7].dtype == np.float32
    assert np.array_equal(finals[7], finals[14]) and np.array_equal(finals[7], workers)
    assert not np.array_equal(serial, workers)  # one sum over the batch rounds otherwise: the check can fail


def json_rows(run: Path) -> list[dict]:
    return RunDir(str(run)).read_metrics()


def nnps_train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip


def test_cli_warm_run_equals_serial(mnist10k, tmp_path: Path) -> None:
    """A fresh `nnps train --workers 2`: the real start thread, ray.init and shutdown."""
    args = ["--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "10", "--epochs", "1", "--steps", "3000",
            "--lr", "3.0", "--dtype", "float64", "--seed", "4"]  # fmt: skip
    out = nnps_train(*args, "--workers", "2", "--run-dir", str(tmp_path / "warm"))
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("warm start: ")]
    assert len(said) == 1 and re.fullmatch(r"warm start: (\d+ steps ran in-process while Ray and the workers started "
                                           r"\([\d.]+ s\); 2 workers go on from step \d+|every step ran in-process; "
                                           r"Ray and the workers took [\d.]+ s to start \(--no-warm-start waits for "
                                           r"them\))", said[0]), said  # fmt: skip
    # Ray's notice that token authentication is on is not shown (connect.hiding)
    assert "Token authentication" not in out.stderr + out.stdout
    # nor Ray's error line about actor constructor arguments in the object store (worker/training_data.py)
    assert "constructor arguments in the object store" not in out.stderr + out.stdout
    serial = train(TrainConfig(data="mnist-10k", hidden=(20,), batch_size=10, epochs=1, steps=3000, lr=3.0,
                               dtype="float64", seed=4, workers=0), mnist10k)["params"]  # fmt: skip
    final = checkpoint.load(str(tmp_path / "warm" / "final.npz")).params
    assert np.max(np.abs(final - serial)) < 1e-9


def test_cli_default_runs_are_reproducible_bit_for_bit(tmp_path: Path) -> None:
    """Two default float32 `nnps train --workers 2` runs, one warm-started (its handover
    step set by how fast Ray starts) and one that waits for the workers: the same bits."""
    args = ["--data", str(MNIST_10K), "--hidden", "30", "--batch-size", "100", "--epochs", "2", "--workers", "2"]
    for name, extra in (("warm", []), ("cold", ["--no-warm-start"])):
        out = nnps_train(*args, *extra, "--run-dir", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
    warm, cold = (checkpoint.load(str(tmp_path / name / "final.npz")) for name in ("warm", "cold"))
    assert warm.params.dtype == np.float32 and np.array_equal(warm.params, cold.params)


def test_cli_failed_start_fails_the_run_and_keeps_its_checkpoints(tmp_path: Path) -> None:
    """The workers cannot start (more CPUs asked than the embedded Ray has): the run,
    in-process meanwhile, stops with that one line and keeps the checkpoints it wrote."""
    run = tmp_path / "run"
    out = nnps_train("--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "10", "--epochs", "1000",
                     "--checkpoint-every", "100", "--workers", "2", "--run-dir", str(run),
                     env={"NNPS_WORKER_THREADS": "4096"})  # fmt: skip
    assert out.returncode == 1
    assert re.fullmatch(r"error: 2 workers x 4096 CPUs need 8192 CPUs; the Ray cluster has \d+\n",
                        out.stderr.splitlines(True)[-1])  # fmt: skip
    assert "Traceback" not in out.stderr
    kept = RunDir(str(run)).checkpoints()
    # the in-process steps' checkpoints (the run dir keeps the last few) from before the start failed
    assert kept and all(step % 100 == 0 and step > 0 for step, _ in kept)
    assert not (run / "final.npz").exists()
    checkpoint.load(str(run / kept[-1][1]))  # whole, readable


def ray_processes() -> set[int]:
    """Pids of Ray's raylets and agents on this machine (zombies excluded)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and re.search(rb"raylet|ray::DashboardAgent|ray::RuntimeEnvAgent", cmdline):
            found.add(int(proc.name))
    return found


def test_sigterm_while_ray_starts_shuts_it_down(tmp_path: Path) -> None:
    """SIGTERM (`ray job stop`, kill) in the warm phase: Ray is still shut down, not left
    running (a killed driver's agents held their port for minutes, slowing the next start)."""
    before = ray_processes()
    p = subprocess.Popen([sys.executable, "-m", "nnps.cli.main", "train", "--data", str(MNIST_10K), "--workers", "2",
                          "--batch-size", "10", "--epochs", "1000", "--log-progress", "--run-dir", str(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in p.stdout:  # type: ignore[union-attr]
            if line.startswith("NNPS_PROGRESS "):  # a step ran: the warm phase
                break
        p.terminate()
        p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes() - before


def test_blas_cap_holds_under_blas_threads() -> None:
    """While the start thread forks Ray's processes, no product may use BLAS's thread pool,
    not even one that asks for threads (blas_cap; a 2-thread product beside a fork hung)."""

    def threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with blas_threads(2):
        assert threads() == {2}
        with blas_cap(1):
            assert threads() == {1}
            with blas_threads(2):
                assert threads() == {1}
            assert threads() == {1}
        assert threads() == {2}
