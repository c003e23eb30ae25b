"""Bounded and asynchronous training on real Ray actors, over each channel: the staleness
bound holds, the record replays to the same float64 weights, and faults stall nobody."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from nnps.cli.jobs import _print_status
from nnps.cluster.driver import replay
from nnps.cluster.ray_executor import ray_session
from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.progress import parse_last
from nnps.core.rundir import RunDir
from nnps.core.record import RECORD, UpdateLog
from nnps.core.training import train
from tests.conftest import MNIST_10K
from tests.test_distributed import CFG, KillAfter, actor_pids

pytestmark = pytest.mark.ray

ASYNC = CFG.replace(data=str(MNIST_10K), workers=2, consistency="async")
TRANSPORTS = ("unix", "tcp", "ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def run_async(cfg: TrainConfig, run: Path, mnist10k, resume: bool = False, reporter=None,
              executors: list | None = None) -> dict:  # fmt: skip
    """Train on the module's Ray into `run`; the summary (the executors made to `executors`)."""
    made = [] if executors is None else executors
    with ray_session(cfg) as factory:

        def make(plan, ds):
            made.append(factory(plan, ds))
            return made[-1]

        return train(cfg, mnist10k, RunDir(str(run)), resume=resume, make_executor=make, reporter=reporter)


def record(run: Path) -> UpdateLog:
    return UpdateLog.from_bytes((run / RECORD).read_bytes(), str(run / RECORD))


def replayed(run: Path) -> float:
    """Replay the run in this process: max |w - final.npz|."""
    return replay(RunDir(str(run)))["max_abs_diff"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode,tau", [("async", None), ("bounded", 1)])
def test_each_channel_serves_it_and_the_run_replays(transport: str, mode: str, tau: int | None, mnist10k,
                                                    tmp_path: Path) -> None:  # fmt: skip
    cfg = ASYNC.replace(transport=transport, consistency=mode, staleness=tau)
    summary = run_async(cfg, tmp_path, mnist10k)
    log = record(tmp_path)
    assert sorted(log.rows[:, 0]) == list(range(60))  # every step's batch is one update, once
    staleness = log.staleness()
    if tau is not None:
        assert staleness.max() <= tau
    assert summary["channels"]["steps"][transport] == 60 and summary["channels"]["fallbacks"] == []
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (rows[-1]["staleness"]["mode"], rows[-1]["staleness"]["tau"], rows[-1]["staleness"]["workers"]) == (mode, tau, 2)
    histogram = {str(s): int((staleness == s).sum()) for s in set(staleness.tolist())}
    assert rows[-1]["staleness"]["histogram"] == histogram
    assert replayed(tmp_path) < 1e-9


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_worker_killed_stalls_nobody_and_its_update_is_recomputed(transport: str, mnist10k, tmp_path: Path) -> None:
    """SIGKILL a worker mid-run: the other goes on (updates applied while the dead one's task
    is out, so that task is stale by several versions when it lands), and the dead one's task
    is recomputed on the parameters it was sent (Ray's retry over `ray`; over `unix` and
    `tcp` the channel breaks and every task out is sent again by Ray calls): each step's
    batch is applied once, and the replay, which computes each update on its recorded
    version, equals the run."""
    cfg = ASYNC.replace(transport=transport, steps=300, epochs=2)
    # killed before the next chunk's first update, not a few ms after: on a fast run those ms
    # can take the run near its end, leaving the survivor no updates to go on with
    killer = KillAfter("GradientWorker", after=100, delay_s=0)
    summary = run_async(cfg, tmp_path, mnist10k, reporter=killer)
    assert killer.killed and killer.killed[0] not in actor_pids("GradientWorker")
    log = record(tmp_path)
    assert sorted(log.rows[:, 0]) == list(range(300))
    assert log.staleness(100).max() >= 3, log.histogram(100, 300)  # the survivor went on meanwhile
    if transport != "ray":
        (fell,) = summary["channels"]["fallbacks"]
        assert (fell["from"], fell["to"]) == (transport, "ray") and fell["step"] >= 100
    assert replayed(tmp_path) < 1e-9


def test_a_worker_killed_in_bounded_mode_keeps_the_bound(mnist10k, tmp_path: Path) -> None:
    """In bounded mode the others go on until the bound stops them (TAU updates past the dead
    worker's task), then wait for its recomputed update: none is staler than TAU."""
    cfg = ASYNC.replace(consistency="bounded", staleness=2, steps=300, epochs=2)
    killer = KillAfter("GradientWorker", after=100)
    run_async(cfg, tmp_path, mnist10k, reporter=killer)
    assert killer.killed
    log = record(tmp_path)
    assert sorted(log.rows[:, 0]) == list(range(300)) and log.staleness().max() <= 2
    assert replayed(tmp_path) < 1e-9


def test_a_server_killed_is_rebuilt_and_the_record_rewinds(mnist10k, tmp_path: Path) -> None:
    cfg = ASYNC.replace(checkpoint_every=20)
    # killed 10 ms after the chunk that passes 10 updates (it ends at the checkpoint at 20): 40 updates and two chunks
    # to go, so that the kill lands inside the run, with updates in flight to lose, however fast the machine
    killer = KillAfter("ParameterServer", after=10)
    executors: list = []
    run_async(cfg, tmp_path, mnist10k, reporter=killer, executors=executors)
    assert killer.killed and executors[0].servers_built == 2
    assert sorted(record(tmp_path).rows[:, 0]) == list(range(60))  # the lost updates are not in it
    assert replayed(tmp_path) < 1e-9


def test_a_resumed_run_replays_whole(mnist10k, tmp_path: Path) -> None:
    cfg = ASYNC.replace(consistency="bounded", staleness=2, checkpoint_every=10)
    run_async(cfg.replace(steps=30), tmp_path, mnist10k)
    assert len(record(tmp_path).rows) == 30
    run_async(cfg, tmp_path, mnist10k, resume=True)
    assert sorted(record(tmp_path).rows[:, 0]) == list(range(60))
    assert checkpoint.load(str(tmp_path / "final.npz")).step == 60
    assert replayed(tmp_path) < 1e-9


def test_cli_runs_async_and_replays(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "nnps.cli.main", "train", "--data", str(MNIST_10K), "--hidden", "20", "--batch-size",
            "50", "--steps", "60", "--epochs", "1", "--dtype", "float64", "--workers", "2", "--consistency", "bounded",
            "--staleness", "1", "--run-dir", str(run), "--log-progress"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert out.returncode == 0, out.stderr[-2000:]
    done = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"done: 60 steps \(unix 60\); bounded \(TAU 1\), 2 workers, staleness max 1, mean [\d.]+; "
                        r"test accuracy [\d.]+%; weights in .*final\.npz", done), done  # fmt: skip
    # what `nnps status` shows of it: the job's last progress record (here read off its stdout)
    progress = parse_last(out.stdout)
    assert progress is not None
    status = io.StringIO()
    with contextlib.redirect_stdout(status):
        _print_status({"job_id": "nnps-x", "status": "SUCCEEDED", "progress": progress})
    line = status.getvalue().splitlines()[0]
    assert "  steps by channel (unix 60)  bounded (TAU 1), 2 workers, staleness max 1, mean " in line, line
    again = subprocess.run([sys.executable, "-m", "nnps.cli.main", "replay", str(run), "--json"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout)
    assert result["updates"] == 60 and result["max_abs_diff"] < 1e-9
    final, replay_npz = (checkpoint.load(str(run / name)) for name in ("final.npz", "replay.npz"))
    assert np.max(np.abs(final.params - replay_npz.params)) < 1e-9


def test_replay_is_a_check(tmp_path: Path) -> None:
    """A record the run could not have made (a step twice, a step skipped, a version too
    stale, a worker it did not have) and weights that are not the run's: one line, exit 1,
    naming the first update at fault or where the weights part."""
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", "--data", str(MNIST_10K), "--hidden", "20",
                    "--batch-size", "100", "--epochs", "3", "--workers", "2", "--consistency", "bounded",
                    "--staleness", "2", "--run-dir", str(run)], check=True, capture_output=True, timeout=300)  # fmt: skip
    record = run / "updates.npy"
    rows = np.load(record)
    n = len(rows)

    def replay_of(edit) -> tuple[int, str]:
        edited = rows.copy()
        edit(edited)
        np.save(record, edited)
        out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "replay", str(run)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        np.save(record, rows)
        return out.returncode, out.stderr

    def twice(r):
        r[7, 0] = r[6, 0]
    where = f"error: replay: {record}: "
    assert replay_of(twice) == (1, where + f"update 7 takes step {rows[6, 0]}'s batch again (update 6 took it)\n")

    def skipped(r):
        r[9, 0] = n + 4
    assert replay_of(skipped) == (1, where + f"update 9 takes step {n + 4}'s batch; a run of {n} updates takes "
                                             f"steps 0..{n - 1}\n")  # fmt: skip

    def stale(r):
        r[20, 2] = 17
    assert replay_of(stale) == (1, where + "update 20 was computed on version 17, 3 behind: more than TAU 2\n")

    def stranger(r):
        r[11, 1] = 2
    assert replay_of(stranger) == (1, where + "update 11 is worker 2's; the run had workers 0..1\n")

    # weights that are not the run's: the last epoch's final.npz nudged, the checkpoints before it left alone
    with np.load(run / "final.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w1"] = arrays["w1"] + np.float32(1e-3)
    with open(run / "final.npz", "wb") as f:
        np.savez(f, **arrays)
    code, err = replay_of(lambda r: None)
    earlier = max(int(p.name[5:14]) for p in run.glob("ckpt-*.npz") if int(p.name[5:14]) < n)
    assert code == 1 and err == (f"error: replay: the replayed weights differ from {run / 'final.npz'} by 0.001 "
                                 f"(more than float32's 1e-05): they agree up to update {earlier} and part by update "
                                 f"{n}; the replayed weights are in {run / 'replay.npz'}\n"), err  # fmt: skip


def test_replay_of_a_sync_run_is_one_line(tiny_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "sync"
    subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", "--data", str(tiny_npz), "--workers", "0",
                    "--steps", "3", "--run-dir", str(run)], check=True, capture_output=True)  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "replay", str(run)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == (f"error: replay: {run} is a sync run, a pure function of its config: train it again "
                          f"with the same flags to reproduce it\n")  # fmt: skip


def test_driver_killed_then_resumed_replays_whole(tmp_path: Path) -> None:
    """kill -9 of an async `nnps train` mid-run, then --resume: the record was written
    before each checkpoint, so the resumed run's record covers every update, and replays."""
    from tests.test_driver_kill import kill_after_a_checkpoint, resume

    run = tmp_path / "run"
    args = ["train", "--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "50", "--epochs", "10", "--steps",
            "1000", "--dtype", "float64", "--checkpoint-every", "20", "--workers", "2", "--consistency", "async",
            "--run-dir", str(run)]  # fmt: skip
    kill_after_a_checkpoint(args, run)
    resume(run)
    assert sorted(record(run).rows[:, 0]) == list(range(1000))
    assert replayed(run) < 1e-9


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_optimizers_schedules_and_l2_replay(optimizer: str, mnist10k, tmp_path: Path) -> None:
    cfg = ASYNC.replace(consistency="bounded", staleness=2, optimizer=optimizer, l2=1e-3, schedule="cosine",
                        lr=0.5 if optimizer == "momentum" else 0.01)  # fmt: skip
    summary = run_async(cfg, tmp_path, mnist10k)
    assert summary["staleness"]["max"] <= 2
    assert replayed(tmp_path) < 1e-9
