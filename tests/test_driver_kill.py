"""The driver killed mid-run (kill -9 of `nnps train`), then `nnps train --resume`:
the run ends with the weights of one that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnps.core import checkpoint
from nnps.core.training import train
from tests.conftest import MNIST_10K
from tests.test_distributed import CFG, step_files

pytestmark = pytest.mark.ray

# 2,000 steps (about a second on the workers here): a kill after the 40th lands mid-run, not after its end
STEPS = 2000
ARGS = ["train", "--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "50", "--epochs", "10", "--steps", str(STEPS),
        "--lr", "3.0", "--dtype", "float64", "--seed", "2", "--checkpoint-every", "20", "--workers", "2",
        "--no-warm-start"]  # killed while its server runs: no steps in-process first  # fmt: skip


def nnps(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnps.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)  # fmt: skip


def kill_after_a_checkpoint(args: list[str], run: Path, least: int = 40) -> None:
    """`nnps *args` SIGKILLed (its embedded Ray with it) once it has checkpointed step `least` or later."""
    driver = nnps(*args)
    try:
        deadline = time.monotonic() + 120
        # the checkpoint directory keeps the last 3: any checkpoint from step `least` on will do
        while not [p for p in run.glob("ckpt-*.npz") if int(p.stem[5:]) >= least]:
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate()  # reaps it and closes its pipes
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # the embedded Ray it started
        except ProcessLookupError:
            pass
    assert not (run / "final.npz").exists()


def resume(run: Path) -> None:
    """`nnps train --run-dir RUN --resume`, to its end; it must succeed."""
    resumed = nnps("train", "--run-dir", str(run), "--resume")
    try:
        _, err = resumed.communicate(timeout=180)
    finally:
        try:
            os.killpg(resumed.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert resumed.returncode == 0, err


def test_driver_killed_then_resumed(mnist10k, tmp_path: Path) -> None:
    expected = train(CFG.replace(epochs=10, steps=STEPS), mnist10k)["params"]
    run = tmp_path / "run"
    kill_after_a_checkpoint([*ARGS, "--run-dir", str(run)], run)
    assert step_files()  # the killed run's server left its step file behind...
    resume(run)
    assert step_files() == []  # ...which the next server on the node swept away; its own went with it
    final = checkpoint.load(str(run / "final.npz"))
    assert final.step == STEPS
    assert np.max(np.abs(final.params - expected)) < 1e-9


def test_a_killed_driver_leaves_no_ray_behind(tmp_path: Path) -> None:
    """SIGKILL of `nnps train` alone (not its process group): its embedded Ray, the agents
    included, is gone within seconds (cluster/reaper.py), not a minute later."""
    from nnps.cluster.reaper import descendants

    run = tmp_path / "run"
    driver = nnps(*ARGS, "--epochs", "1000", "--steps", "1000000", "--run-dir", str(run))  # the last of a flag counts
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob("ckpt-*.npz")):  # the workers are stepping
            assert driver.poll() is None and time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        ray_pids = set(descendants(driver.pid))
        names = {pid: (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]) for pid in ray_pids}
        assert any(b"raylet" in n for n in names.values()) and any(b"DashboardAgent" in n for n in names.values())
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate()
        deadline = time.monotonic() + 15
        while alive := {pid for pid in ray_pids if running(pid)}:
            assert time.monotonic() < deadline, {pid: names[pid] for pid in alive}
            time.sleep(0.2)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
