"""Sync SGD on real Ray actors: equal to serial SGD, and faults survived.

One local Ray per module (4 logical CPUs on this 2-core machine, so 3 workers fit). The
fault tests kill real processes with SIGKILL, found by the actors' process titles.
"""

from __future__ import annotations

import dataclasses
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

from nnps.cluster.ray_executor import compiled_wanted, ray_session, shared_wanted, sockets_wanted
from nnps.core.config import TrainConfig
from nnps.core.errors import ClusterError, DivergenceError
from nnps.core.rundir import RunDir
from nnps.core.training import plan_run, train
from nnps.worker import training_data
from nnps.worker.gradient_worker import GradientWorker
from nnps.worker.node_buffers import PREFIX, SHM_DIR, Mapped, NodeBuffers

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


def set_path(monkeypatch, path: str) -> None:
    """Steps over the compiled graph, Ray calls ("plain"), the step sockets or the TCP links
    (which the executor uses across nodes; here forced on one node without the step file):
    one link for the node, relayed by its first worker ("link"), or one per worker
    ("link-each", NNPS_NODE_RELAY=0)."""
    monkeypatch.setenv("NNPS_RAY_COMPILED", "1" if path == "graph" else "0")
    monkeypatch.setenv("NNPS_STEP_SOCKETS", "1" if path == "socket" else "0")
    monkeypatch.setenv("NNPS_STEP_LINKS", "1" if path.startswith("link") else "0")
    monkeypatch.setenv("NNPS_NODE_RELAY", "0" if path == "link-each" else "1")


# The step sockets need the step file, the links work without it.
PATHS = [(p, v) for p in ("graph", "plain", "socket") for v in ("shm", "store") if (p, v) != ("socket", "store")]
PATHS += [("link", "store"), ("link-each", "store")]


@pytest.mark.parametrize("path,vectors", PATHS)
@pytest.mark.parametrize("workers", [1, 3])
def test_k_workers_equal_serial(workers: int, path: str, vectors: str, mnist10k, serial, monkeypatch) -> None:
    set_path(monkeypatch, path)
    monkeypatch.setenv("NNPS_SHARED_MEMORY", "1" if vectors == "shm" else "0")
    executors: list = []
    params = train_on_ray(CFG.replace(workers=workers), mnist10k, executors=executors)
    assert np.max(np.abs(params - serial)) < 1e-9
    # the path asked for is the one that ran every step, with the vectors where asked
    ex = executors[0]
    assert ex.steps_by_path == ({"graph": 60, "plain": 0} if path == "graph" else {"graph": 0, "plain": 60})
    if path != "graph":
        channel = {"plain": "ray", "link-each": "link"}.get(path, path)
        counts = {c: 60 * (c == channel) for c in ("socket", "link", "ray")}
        # one link for the node's workers, relayed by worker 0, or one per worker
        groups = {"link": [list(range(workers))], "link-each": [[i] for i in range(workers)]}.get(path)
        assert ex.channels() == {**counts, "socket_error": None, "link_groups": groups}
    assert len(ex.step_files) == (1 if vectors == "shm" else 0)
    assert step_files() == []  # the run's step file (and socket) went with its server


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


def test_server_threads_reach_the_server(mnist10k, monkeypatch) -> None:
    monkeypatch.setenv("NNPS_SERVER_THREADS", "3")
    with ray_session(CFG.replace(workers=1)) as factory:
        ex = factory(plan_run(CFG, mnist10k, None, False), mnist10k)
        try:
            assert ray.get(ex.server.__ray_call__.remote(lambda self: self.server.threads)) == 3
        finally:
            ex.close()


@pytest.mark.parametrize("name", ["NNPS_WORKER_THREADS", "NNPS_SERVER_THREADS"])
def test_bad_threads_setting_is_one_line(name: str, mnist10k, monkeypatch) -> None:
    monkeypatch.setenv(name, "two")
    with pytest.raises(ClusterError, match=rf"{name}='two': expected a whole number >= 1, or auto"):
        train_on_ray(CFG.replace(workers=1), mnist10k)


def test_batch_smaller_than_the_workers_over_sockets(mnist10k, monkeypatch) -> None:
    """Batch 2 over 3 workers: the third gets no shard (and no message) each step."""
    set_path(monkeypatch, "socket")
    cfg = CFG.replace(batch_size=2, workers=3)
    executors: list = []
    params = train_on_ray(cfg, mnist10k, executors=executors)
    assert np.max(np.abs(params - train(cfg.replace(workers=0), mnist10k)["params"])) < 1e-9
    done = {"socket": 60, "link": 0, "ray": 0, "socket_error": None, "link_groups": None}
    assert executors[0].channels() == done


def test_batch_smaller_than_the_workers_over_links(mnist10k, monkeypatch) -> None:
    set_path(monkeypatch, "link")
    monkeypatch.setenv("NNPS_SHARED_MEMORY", "0")
    cfg = CFG.replace(batch_size=2, workers=3)
    executors: list = []
    params = train_on_ray(cfg, mnist10k, executors=executors)
    assert np.max(np.abs(params - train(cfg.replace(workers=0), mnist10k)["params"])) < 1e-9
    # worker 0 relays the steps of 1 and 2; the batch of 2 goes to 0 and 1, and 2 idles
    done = {"socket": 0, "link": 60, "ray": 0, "socket_error": None, "link_groups": [[0, 1, 2]]}
    assert executors[0].channels() == done


def actor_pids(title: str) -> list[int]:
    """Processes whose title Ray set to `ray::<title>...`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:  # not a process, or it just exited
            continue
        if proc.name.isdigit() and cmd.startswith(f"ray::{title}".encode()):
            pids.append(int(proc.name))
    return sorted(pids)


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
    """SIGKILLs one `title` process a few ms after `after` steps, while the next are in flight."""

    def __init__(self, title: str, after: int, pick: Callable[[], int] | None = None) -> None:
        super().__init__(after)
        self.title, self.killed, self.pick = title, [], pick

    def fire(self) -> None:
        pid = self.pick() if self.pick else actor_pids(self.title)[0]
        self.killed.append(pid)
        threading.Timer(0.01, os.kill, (pid, signal.SIGKILL)).start()


def test_compiled_graph_by_default_on_one_node(mnist10k, monkeypatch) -> None:
    monkeypatch.delenv("NNPS_RAY_COMPILED", raising=False)
    plan = plan_run(CFG, mnist10k, None, False)  # 784-20-10: 15,680 multiply-adds per example
    big = dataclasses.replace(plan, config=CFG.replace(batch_size=16000))  # the batch alone decides below
    # the module's Ray has 4 CPUs: up to 3 workers leave a core for the server -> graph
    assert compiled_wanted(plan, 2) and compiled_wanted(big, 3)
    # 4 workers fill the CPUs: graph only for small shards (13 x 15,680 < GRAPH_MAX_SHARD_PRODUCT)
    assert compiled_wanted(plan, 4)
    assert not compiled_wanted(big, 4)  # 4,000 x 15,680 > GRAPH_MAX_SHARD_PRODUCT: plain
    monkeypatch.setenv("NNPS_RAY_COMPILED", "0")
    assert not compiled_wanted(plan, 2)


def test_step_sockets_by_default_on_one_node(mnist10k, monkeypatch) -> None:
    for name in ("NNPS_RAY_COMPILED", "NNPS_SHARED_MEMORY", "NNPS_STEP_SOCKETS"):
        monkeypatch.delenv(name, raising=False)
    executors: list = []
    train_on_ray(CFG.replace(workers=2, steps=10), mnist10k, executors=executors)
    ex = executors[0]
    assert ex.sockets_wanted and ex.compiled_wanted is False and ex.buffers is None  # closed: file gone
    assert ex.channels() == {"socket": 10, "link": 0, "ray": 0, "socket_error": None, "link_groups": None}
    assert not ex.links_wanted  # the links are for several nodes (tests/test_node_loss.py)
    monkeypatch.setenv("NNPS_RAY_COMPILED", "1")  # asking for the graph turns the sockets off
    assert not sockets_wanted()


def test_shared_memory_by_default_on_one_node(monkeypatch) -> None:
    monkeypatch.delenv("NNPS_SHARED_MEMORY", raising=False)
    assert shared_wanted()
    monkeypatch.setenv("NNPS_SHARED_MEMORY", "0")
    assert not shared_wanted()


@pytest.mark.parametrize("path", ["graph", "plain", "socket", "link", "link-each"])
def test_worker_killed_mid_run(path: str, mnist10k, serial, monkeypatch) -> None:
    set_path(monkeypatch, path)
    if path.startswith("link"):
        monkeypatch.setenv("NNPS_SHARED_MEMORY", "0")
    else:
        monkeypatch.delenv("NNPS_SHARED_MEMORY", raising=False)
    executors: list = []
    # through the node's relay (worker 0), kill its member, worker 1: the relay fails the step
    member = (lambda: ray.get(executors[0].workers[1].where.remote())[0]) if path == "link" else None
    killer = KillAfter("GradientWorker", after=20, pick=member)
    params = train_on_ray(CFG.replace(workers=2), mnist10k, reporter=killer, executors=executors)
    assert killer.killed and killer.killed[0] not in actor_pids("GradientWorker")
    assert np.max(np.abs(params - serial)) < 1e-9
    # through the shared step file: a restarted worker maps it again by itself
    files = (not path.startswith("link")) + (path == "graph")
    assert len(executors[0].step_files) == files and step_files() == []
    if path == "graph":  # the broken graph was dropped and the run finished on plain calls
        done = executors[0].steps_by_path
        assert executors[0].fallback_reason is not None and done["graph"] >= 20 and done["plain"] > 0
    if path == "socket":  # the dead worker's socket closed; the server went on with Ray calls
        done = executors[0].channels()
        assert done["socket"] >= 20 and done["ray"] > 0 and done["socket"] + done["ray"] == 60
        assert re.fullmatch(r"ChannelBroken: worker [01] closed its socket( \(.+\))?", done["socket_error"])
    if path.startswith("link"):  # the same over the TCP links
        done = executors[0].channels()
        assert done["link"] >= 20 and done["ray"] > 0 and done["link"] + done["ray"] == 60
        # one link per worker: the dead one's broke; the node's relay lost its member and
        # answered the step as failed
        broken = (r"worker [01](('s link failed \(.+\))| closed its link.*)" if path == "link-each"
                  else r"workers 0, 1 \(node relay\) failed the step")  # fmt: skip
        assert re.fullmatch(f"ChannelBroken: {broken}", done["socket_error"])
        # and the user is told (driver._on_cluster says it after the run)
        assert executors[0].link_note() == (f"note: {done['ray']} of 60 steps went over Ray calls, slower than the "
                                            f"TCP links between the nodes, which were dropped: {done['socket_error']}")  # fmt: skip
    else:
        assert executors[0].link_note() is None


def test_server_killed_mid_run_is_rebuilt_from_checkpoint(mnist10k, serial, tmp_path: Path) -> None:
    killer = KillAfter("ParameterServer", after=30)
    rd = RunDir(str(tmp_path))
    executors: list = []
    params = train_on_ray(CFG.replace(workers=2), mnist10k, rd, reporter=killer, executors=executors)
    assert killer.killed
    assert np.max(np.abs(params - serial)) < 1e-9
    assert [s for s, _ in rd.checkpoints()] == [20, 40, 60]
    # each server had its own step file; the killed one's was removed when it was replaced
    assert len(executors) == 1 and len(executors[0].step_files) == 2 and step_files() == []


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
    spec = NodeBuffers.create(plan.network.layout.size, 1, "float32")
    try:
        Mapped(spec).params[...] = plan.start.params
        name, holder = training_data.share((mnist10k.x_train, mnist10k.y_train, mnist10k.x_test, mnist10k.y_test))
        worker = GradientWorker.remote(plan.network, name)
        pid = ray.get(worker.where.remote())[0]
        shard = np.arange(128)
        ray.get([worker.gradient_sums_shared.remote(spec, 0, shard) for _ in range(2)])  # warm
        before = minor_faults(pid)
        ray.get([worker.gradient_sums_shared.remote(spec, 0, shard) for _ in range(5)])
        assert (minor_faults(pid) - before) / 5 < 100
        ray.kill(worker)
        ray.kill(holder)
    finally:
        spec.unlink()
