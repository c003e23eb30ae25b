"""Sync SGD on real Ray actors: equal to serial SGD, and faults survived.

One local Ray per module (4 logical CPUs on this 2-core machine, so 3 workers fit). The
fault tests kill real processes with SIGKILL, found by the actors' process titles.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import ray
from threadpoolctl import threadpool_info

from nnps.cluster.ray_executor import ray_session
from nnps.cluster.transport import REOPEN_AFTER
from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError, DivergenceError
from nnps.core.rundir import RunDir
from nnps.core.plan import plan_run
from nnps.core.training import train
from nnps.worker import training_data
from nnps.worker.channels.step_file import PREFIX, SHM_DIR, Mapped, NodeBuffers
from nnps.worker.channels.unix import ServerSockets, UnixEnd
from nnps.worker.gradient_worker import GradientWorker

pytestmark = pytest.mark.ray

CFG = TrainConfig(data="mnist-10k", hidden=(20,), batch_size=50, epochs=1, steps=60, lr=3.0, dtype="float64",
                  seed=2, checkpoint_every=20)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial(mnist10k) -> np.ndarray:
    return train(CFG, mnist10k)["params"]


def train_on_ray(cfg: TrainConfig, dataset, run_dir: RunDir | None = None, reporter=None,
                 executors: list | None = None) -> np.ndarray:  # fmt: skip
    """Train on the module's Ray; the executors made (one per server rebuild) go to `executors`."""
    made = [] if executors is None else executors
    with ray_session(cfg) as factory:

        def make(plan, ds):
            made.append(factory(plan, ds))
            return made[-1]

        return train(cfg, dataset, run_dir, make_executor=make, reporter=reporter)["params"]


def step_files() -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"{PREFIX}*"))


def record(steps: dict[str, int], fallbacks: list | None = None, **rest) -> dict:
    """A run's channel record (cluster/transport.py: Transport.record)."""
    chain = [name for name in steps]
    return {"chain": chain, "steps": steps, "fallbacks": fallbacks or [], **rest}


# Each transport on this one node: unix (the default here), tcp (what runs across nodes;
# here one link for the node, relayed by worker 0), ray.
TRANSPORTS = ("unix", "tcp", "ray")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("workers", [1, 3])
def test_k_workers_equal_serial(workers: int, transport: str, mnist10k, serial) -> None:
    executors: list = []
    params = train_on_ray(CFG.replace(workers=workers, transport=transport), mnist10k, executors=executors)
    assert np.max(np.abs(params - serial)) < 1e-9
    # the channel asked for carried every step, and nothing fell back
    steps = {transport: 60, "ray": 0} if transport != "ray" else {"ray": 60}
    groups = {"groups": [list(range(workers))]} if transport == "tcp" else {}
    assert executors[0].channels() == record(steps, **groups)
    assert step_files() == []  # the run's step files (and sockets) went with its server


def test_unix_by_default_on_one_node(mnist10k) -> None:
    executors: list = []
    train_on_ray(CFG.replace(workers=2, steps=10), mnist10k, executors=executors)
    assert executors[0].channels() == record({"unix": 10, "ray": 0})


def free_cpus_become(n: float, wait_s: float = 20.0) -> bool:
    deadline = time.monotonic() + wait_s
    while ray.available_resources().get("CPU", 0) != n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_workers_run_and_reserve_their_blas_threads(mnist10k, serial, monkeypatch) -> None:
    """NNPS_WORKER_THREADS=2 (what 2 workers of a wide network get on 5 cores): the worker
    asks Ray for 2 CPUs, its BLAS runs 2 threads, and the sums equal serial SGD's."""
    monkeypatch.setenv("NNPS_WORKER_THREADS", "2")
    executors: list = []
    params = train_on_ray(CFG.replace(workers=1), mnist10k, executors=executors)
    assert np.max(np.abs(params - serial)) < 1e-9
    assert executors[0].threads == 2
    assert free_cpus_become(4)  # the run closed: its worker's 2 CPUs are back (Ray frees them in a while)
    with ray_session(CFG.replace(workers=1)) as factory:
        ex = factory(plan_run(CFG, mnist10k, None, False), mnist10k)
        try:
            assert free_cpus_become(2)
            blas = ray.get(ex.workers[0].__ray_call__.remote(
                lambda self: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]))  # fmt: skip
            assert blas and set(blas) == {2}
        finally:
            ex.close()


def test_bad_threads_setting_is_one_line(mnist10k, monkeypatch) -> None:
    monkeypatch.setenv("NNPS_WORKER_THREADS", "two")
    with pytest.raises(ConfigError, match=r"NNPS_WORKER_THREADS='two': expected a whole number >= 1, or auto"):
        train_on_ray(CFG.replace(workers=1), mnist10k)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_batch_smaller_than_the_workers(transport: str, mnist10k) -> None:
    """Batch 2 over 3 workers: the third gets no shard (and no message) each step; over
    tcp worker 0 relays the steps of 1 and 2, the batch goes to 0 and 1, and 2 idles."""
    cfg = CFG.replace(batch_size=2, workers=3, transport=transport)
    executors: list = []
    params = train_on_ray(cfg, mnist10k, executors=executors)
    assert np.max(np.abs(params - train(cfg.replace(workers=0), mnist10k)["params"])) < 1e-9
    groups = {"groups": [[0, 1, 2]]} if transport == "tcp" else {}
    assert executors[0].channels() == record({transport: 60, "ray": 0}, **groups)


def actor_pids(title: str) -> list[int]:
    """This test's processes (descendants of the test process: the Ray it started, the
    `nnps train` it ran) whose title Ray set to `ray::<title>...`. Not another run's on the
    machine: a fault test must never kill a user's training."""
    parent, titles = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            titles[int(proc.name)] = (proc / "cmdline").read_bytes()
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # it just exited
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 0)
        return False

    return sorted(pid for pid, cmd in titles.items() if cmd.startswith(f"ray::{title}".encode()) and ours(pid))


class AfterSteps:
    """A Reporter that calls `fire()` once, when `after` steps are done."""

    def __init__(self, after: int) -> None:
        self.after, self.done, self.fired = after, 0, False

    def run_start(self, *a) -> None: ...
    def epoch_start(self, *a) -> None: ...
    def epoch_end(self, *a) -> None: ...

    def advance(self, steps: int, *a) -> None:
        self.done += steps
        if self.done >= self.after and not self.fired:
            self.fired = True
            self.fire()

    def fire(self) -> None:
        raise NotImplementedError


class KillAfter(AfterSteps):
    """SIGKILLs one `title` process `delay_s` after the chunk that reaches `after` steps:
    while the next steps are in flight, or (delay_s=0) before the next chunk's first step."""

    def __init__(self, title: str, after: int, pick: Callable[[], int] | None = None, delay_s: float = 0.01) -> None:
        super().__init__(after)
        self.title, self.killed, self.pick, self.delay_s = title, [], pick, delay_s

    def fire(self) -> None:
        pid = self.pick() if self.pick else actor_pids(self.title)[0]
        self.killed.append(pid)
        threading.Timer(self.delay_s, os.kill, (pid, signal.SIGKILL)).start()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_worker_killed_mid_run(transport: str, mnist10k, serial) -> None:
    executors: list = []
    # over tcp the node's link is relayed by worker 0: kill its member, worker 1, and the
    # relay fails the step
    member = (lambda: ray.get(executors[0].workers[1].where.remote())[0]) if transport == "tcp" else None
    # killed before the next chunk's first step (10..20, where the chunk that passes 10 steps
    # ends: at most at the checkpoint at 20), so that the reopening, REOPEN_AFTER steps later,
    # falls inside the run's 60 steps whatever the machine's speed
    killer = KillAfter("GradientWorker", after=10, pick=member, delay_s=0)
    params = train_on_ray(CFG.replace(workers=2, transport=transport), mnist10k, reporter=killer, executors=executors)
    assert killer.killed and killer.killed[0] not in actor_pids("GradientWorker")
    assert np.max(np.abs(params - serial)) < 1e-9
    assert step_files() == []
    done = executors[0].channels()
    if transport == "ray":  # Ray restarted the worker and retried its call
        assert done == record({"ray": 60})
        return
    # the dead worker's socket closed (or the relay failed the step): the same step went
    # over Ray calls, and REOPEN_AFTER steps later, with Ray's restarted worker, the steps
    # went back to the fast channel
    assert len(done["fallbacks"]) == 2, done
    fell, back = done["fallbacks"]
    assert 10 <= fell["step"] <= 20 and (fell["from"], fell["to"]) == (transport, "ray"), done
    assert back == {"step": fell["step"] + REOPEN_AFTER, "from": "ray", "to": transport,
                    "reason": "reopened: every worker answers on it again"}, done  # fmt: skip
    assert done["steps"] == {transport: 60 - REOPEN_AFTER, "ray": REOPEN_AFTER}, done
    broken = r"worker [01] closed its socket( \(.+\))?" if transport == "unix" else r"workers 0, 1 \(node relay\) failed the step(: .+)?"
    assert re.fullmatch(broken, fell["reason"]), fell


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_killed_mid_run_is_rebuilt_from_checkpoint(transport: str, mnist10k, serial, tmp_path: Path) -> None:
    killer = KillAfter("ParameterServer", after=30)
    rd = RunDir(str(tmp_path))
    executors: list = []
    params = train_on_ray(CFG.replace(workers=2, transport=transport), mnist10k, rd, reporter=killer,
                          executors=executors)  # fmt: skip
    assert killer.killed
    assert np.max(np.abs(params - serial)) < 1e-9
    assert [s for s, _ in rd.checkpoints()] == [20, 40, 60]
    ex = executors[0]
    assert len(executors) == 1 and ex.servers_built == 2
    # the new server opened its chain afresh and carried every step on it: from the
    # checkpoint at 20 (or 40) to 60, after the first's 30 or more
    done = ex.channels()
    assert done["fallbacks"] == [] and done["steps"][transport] >= 30 + 20, done
    assert step_files() == []  # the killed server's step file went too


def test_divergence_on_ray(mnist10k) -> None:
    cfg = CFG.replace(workers=2, activation="relu", output="softmax", cost="cross-entropy", lr=1e30, dtype="float32",
                      weight_init="scaled", checkpoint_every=None)  # fmt: skip
    with pytest.raises(DivergenceError, match=r"training diverged: cost became nan at step \d+ \(epoch 1\)"):
        train_on_ray(cfg, mnist10k)


def test_unreachable_address_is_one_line_within_seconds(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", "--data", "/nonexistent", "--workers", "2",
                          "--address", "127.0.0.1:1"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == "error: cannot reach Ray at 127.0.0.1:1: Connection refused\n"
    assert time.monotonic() - t0 < 10


def test_more_cpus_than_the_embedded_ray_has_is_one_line(tiny_npz: Path, tmp_path: Path) -> None:
    """Ray would wait forever for CPUs its embedded instance will never have."""
    env = {**os.environ, "NNPS_WORKER_THREADS": "4096"}
    out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", "--data", str(tiny_npz), "--workers", "2",
                          "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert re.fullmatch(r"error: 2 workers x 4096 CPUs need 8192 CPUs; the Ray cluster has \d+\n", out.stderr.splitlines(True)[-1])


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])  # field 10, minflt


def test_worker_steps_reuse_their_memory(mnist10k) -> None:
    """A worker's steps take no fresh pages from the kernel once warm (keep_freed_memory):
    784-1024-1024-10 at 128 examples faulted ~740 pages per step without it."""
    plan = plan_run(CFG.replace(hidden=(1024, 1024), dtype="float32", batch_size=128), mnist10k, None, False)
    name, holder = training_data.share((mnist10k.x_train, mnist10k.y_train, mnist10k.x_test, mnist10k.y_test))
    worker = GradientWorker.remote(plan.network, name)
    pid = ray.get(worker.where.remote())[0]
    spec = NodeBuffers.create(plan.network.layout.size, 1, "float32")  # the unix channel's step file
    sockets = ServerSockets(spec)
    try:
        Mapped(spec).params[...] = plan.start.params
        ray.get(worker.serve_channel.remote(UnixEnd(spec, 0)))
        sockets.accept()
        shard = np.arange(128)
        for _ in range(2):  # warm
            sockets.send_one(0, shard)
            sockets.answer(0)
        before = minor_faults(pid)
        for _ in range(5):
            sockets.send_one(0, shard)
            sockets.answer(0)
        assert (minor_faults(pid) - before) / 5 < 100
    finally:
        sockets.close()
        spec.unlink()
        ray.kill(worker)
        ray.kill(holder)


def test_a_worker_raising_keeps_its_cause_and_is_not_taken_for_the_server(mnist10k) -> None:
    """A label the network has no output for: a step raises on the worker that draws it
    (the socket channel names the cause as the step goes to Ray calls, which fail with it);
    in evaluation, the worker's error is said as such, the healthy server kept."""
    from dataclasses import replace

    from nnps.core.errors import ClusterError

    y = mnist10k.y_train.copy()
    y[:] = 200  # every training label out of range: the first step fails on every worker
    bad_train = replace(mnist10k, y_train=y)
    made: list = []
    with pytest.raises(ClusterError, match=r"^a step failed on a worker: IndexError: "):
        train_on_ray(CFG.replace(workers=2), bad_train, executors=made)
    (fell,) = made[0].channels()["fallbacks"]
    assert re.fullmatch(r"worker [01] failed the step: IndexError: .+", fell["reason"]), fell
    y = mnist10k.y_test.copy()
    y[123] = 200  # one test label out of range: training runs, the epoch's evaluation fails
    made = []
    with pytest.raises(ClusterError, match=r"^evaluation failed on a worker: \w+Error: "):
        train_on_ray(CFG.replace(workers=2), replace(mnist10k, y_test=y), executors=made)
    assert len(made) == 1 and made[0].servers_built == 1  # no rebuild of a server that was never lost
