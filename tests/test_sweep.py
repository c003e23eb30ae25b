"""`nnps sweep` on a real embedded Ray Tune, run as a user runs it. The oracle for a trial
is `core.training.train` run once, serially, on the same config and split: a trial,
trained one epoch per call and perhaps killed and retried, must end with its weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ray.tune.search.basic_variant import BasicVariantGenerator

from nnps.cli.main import main
from nnps.cluster.sweep_spec import SweepSpec, domains
from nnps.core import checkpoint, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import load_path
from nnps.core.training import train
from tests.conftest import MNIST_10K
from tests.test_distributed import actor_pids

pytestmark = pytest.mark.ray
NNPS = str(Path(sys.executable).parent / "nnps")
SEED_NET = ["--data", str(MNIST_10K), "--hidden", "30", "--epochs", "2"]


def sweep(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([NNPS, "sweep", *args], capture_output=True, text=True, timeout=600)
    assert not check or r.returncode == 0, r.stderr[-3000:]
    return r


def result(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "result.json").read_text())


def serial_weights(trial: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the trial's final weights, the same config trained in one serial call to its epochs)."""
    config = TrainConfig.from_dict(json.loads((trial / "config.json").read_text()))
    epochs = len((trial / "metrics.jsonl").read_text().splitlines())
    data = validation.for_config(config, load_path(MNIST_10K))
    expected = train(config.replace(epochs=epochs), data)["params"]
    return checkpoint.load(str(trial / "final.npz")).params, expected


def test_the_validation_split_is_seeded_and_disjoint(mnist10k) -> None:
    a = validation.carve(mnist10k, 0.1, seed=0)
    assert len(a.y_test) == 1000 and len(a.y_train) == len(mnist10k.y_train) - 1000
    rows = {r.tobytes() for r in mnist10k.x_train}
    assert {r.tobytes() for r in a.x_test} <= rows and not {r.tobytes() for r in a.x_test} & {r.tobytes() for r in a.x_train}
    assert np.array_equal(validation.carve(mnist10k, 0.1, seed=0).x_test, a.x_test)
    assert not np.array_equal(validation.carve(mnist10k, 0.1, seed=1).x_test, a.x_test)


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "3:1"], "--lr '3:1': an empty range (needs lo < hi)"),
    (["--lr", "0:1:log"], "--lr '0:1:log': a log range needs lo > 0"),
    (["--activation", "relu:tanh"], "--activation takes a choice (a,b,c), not a range: 'relu:tanh'"),
    (["--data", "mnist,kmnist", "--lr", "1,3"], "--data cannot vary in a sweep (every trial shares it); give it one value"),
    (["--lr", "1,3", "--concurrency", "64"], "--concurrency 64: this machine has"),
    (["--lr", "1,3", "--workers", "2"], "--workers 2: a trial takes 3 CPUs (its process and 2 workers); this machine has"),
    (["--lr", "1,3", "--workers", "1", "--concurrency", "2"], "--concurrency 2: this machine has"),
    (["--lr", "1,3", "--workers", "x"], "--workers must be a count or auto, got 'x'"),
    (["--lr", "1,1"], "--lr '1,1': a choice is listed twice"),
    (["--lr", "1,3", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--batch-size", "10,0"], "--batch-size must be >= 1, got 0"),
    (["--hidden", "30"], "nothing varies: give some flag a list (a,b) or a range (lo:hi)"),
    (["--lr", "1,3", "--bogus", "1"], "No such option: --bogus"),
    (["--lr", "1,3", "--partitioned"], "--partitioned: nnps sweep reads the table once on the driver"),
])  # fmt: skip
def test_bad_flags_are_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--data", str(MNIST_10K), *args, "--run-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    usage = "No such option" in message  # a usage error, as `nnps train --bogus` is: exit 2
    assert e.value.code == (2 if usage else 1) and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_an_asha_sweep_end_to_end(tmp_path: Path) -> None:
    s = tmp_path / "s"
    r = sweep(*SEED_NET, "--lr", "0.5:4:log", "--batch-size", "10,50", "--samples", "8", "--scheduler", "asha",
              "--run-dir", str(s))  # fmt: skip
    line = r.stderr.splitlines()[0]
    assert line.startswith("sweep: 8 trials of 2 epochs, 2 at a time, each in-process (the cost model on the largest "
                           "trial, 784-30-10 at batch 50: in-process ") and line.endswith(
                           "), asha; --lr 0.5..4.0 (log), --batch-size {10, 50}"), line  # fmt: skip
    res = result(s)
    trials = res["trials"]
    assert [t["trial"] for t in trials] == [f"trial-{i:05d}" for i in range(8)]
    assert res["epochs_fifo"] == 16 and res["epochs_trained"] == sum(t["epochs"] for t in trials) < 16
    assert {t["state"] for t in trials} == {"done", "stopped"}
    # every trial read the data in place from the object store: one copy, however many trials ran
    assert res["data"] == {"results_seen": res["epochs_trained"], "trials_with_a_copy": []}
    assert all(0.5 <= t["params"]["lr"] <= 4 and t["params"]["batch_size"] in (10, 50) for t in trials)
    for t in trials:  # each trial is exactly the serial run of its config, to its epochs
        got, expected = serial_weights(s / "trials" / t["trial"])
        assert np.array_equal(got, expected), t["trial"]
    best = res["best"]
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in trials)
    ev = subprocess.run([NNPS, "evaluate", str(s / "trials" / best["trial"] / "final.npz"), "--data", str(MNIST_10K),
                         "--json"], capture_output=True, text=True, check=True)  # fmt: skip
    assert best["test_accuracy"] == json.loads(ev.stdout)["accuracy"]
    shown = subprocess.run([NNPS, "sweep", "--show", str(s)], capture_output=True, text=True, check=True).stdout
    assert f"best: {best['trial']} (" in shown and f"test {best['test_accuracy']:.2%}" in shown
    assert (s / "curves.png").stat().st_size > 10_000
    assert ui_run_names(s) == [f"s/trial-{i:05d}" for i in range(8)]


def ui_run_names(sweep_dir: Path) -> list[str]:
    """What `nnps ui SWEEP_DIR` lists, read over HTTP as the page reads it."""
    p = subprocess.Popen([NNPS, "ui", str(sweep_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("nnps ui: http://127.0.0.1:"), line
        with urllib.request.urlopen(line.split()[2] + "api/runs", timeout=30) as r:
            return [run["name"] for run in json.loads(r.read())]
    finally:
        p.terminate()
        p.communicate(timeout=30)  # and close its pipes


def test_grid_and_random_trials_are_a_function_of_the_seed(tmp_path: Path) -> None:
    grid = result_of(tmp_path / "g", "--lr", "1,3", "--hidden", "10,20x5")
    assert sorted((t["params"]["lr"], tuple(t["params"]["hidden"])) for t in grid) == [
        (1.0, (10,)), (1.0, (20, 5)), (3.0, (10,)), (3.0, (20, 5))]
    a = result_of(tmp_path / "a", "--lr", "0.1:3:log", "--batch-size", "10:100", "--samples", "3")
    spec = SweepSpec.load(tmp_path / "a")  # the trials are Tune's draw from the space with the run's --seed
    assert [t["params"] for t in a] == drawn(spec, seed=0) != drawn(spec, seed=1)


def drawn(spec: SweepSpec, seed: int) -> list[dict]:
    """The configs Tune's seeded generator draws from the sweep's space, without running them."""
    g = BasicVariantGenerator(random_state=seed)
    g.add_configurations({"s": {"run": lambda c: None, "config": domains(spec), "num_samples": spec.samples}})
    return [t.config for t in iter(g.next_trial, None)]


def result_of(s: Path, *args: str) -> list[dict]:
    sweep("--data", str(MNIST_10K), "--epochs", "1", "--scheduler", "fifo", *args, "--run-dir", str(s))
    return result(s)["trials"]


def test_a_killed_driver_resumes_to_the_same_sweep(tmp_path: Path) -> None:
    args = [*SEED_NET[:-2], "--epochs", "3", "--lr", "0.5:4:log", "--batch-size", "10,50", "--samples", "6",
            "--concurrency", "1"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    sweep(*args, "--run-dir", str(whole))
    proc = subprocess.Popen([NNPS, "sweep", *args, "--run-dir", str(cut)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(cut.glob("trials/trial-*/metrics.jsonl"))) < 3:  # mid-sweep: the third trial has an epoch
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
    proc.wait()
    assert not (cut / "result.json").exists()
    for state in (cut / "tune").glob("experiment_state-*.json"):
        state.write_bytes(b"")  # what a kill during Tune's background copy of its state leaves
    r = sweep("--resume", "--run-dir", str(cut))
    assert "sweep: 6 trials of 3 epochs" in r.stderr
    a, b = result(whole), result(cut)
    assert b["trials"] == a["trials"] and b["best"] == a["best"]  # same trials, stops, accuracies, best
    best = a["best"]["trial"]
    assert np.array_equal(checkpoint.load(str(whole / "trials" / best / "final.npz")).params,
                          checkpoint.load(str(cut / "trials" / best / "final.npz")).params)  # fmt: skip


def test_a_sweep_killed_before_tune_saved_its_state_resumes_from_the_trials_files(tmp_path: Path) -> None:
    s = tmp_path / "s"
    args = [*SEED_NET, "--lr", "1,3", "--scheduler", "fifo", "--concurrency", "1", "--run-dir", str(s)]
    proc = subprocess.Popen([NNPS, "sweep", *args], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    metrics = s / "trials" / "trial-00000" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shutil.rmtree(s / "tune")  # as a driver killed before Tune first saved leaves it: the trials' files only
    (s / "tune-state.pkl").unlink()
    sweep("--resume", "--run-dir", str(s))
    trials = result(s)["trials"]
    assert [(t["trial"], t["params"]["lr"], t["epochs"]) for t in trials] == [("trial-00000", 1.0, 2),
                                                                              ("trial-00001", 3.0, 2)]
    for t in trials:
        got, expected = serial_weights(s / "trials" / t["trial"])
        assert np.array_equal(got, expected), t["trial"]


def test_a_killed_trial_process_is_retried_to_identical_weights(tmp_path: Path) -> None:
    s = tmp_path / "s"
    proc = subprocess.Popen([NNPS, "sweep", "--data", str(MNIST_10K), "--hidden", "100", "--lr", "1,3", "--epochs",
                             "5", "--scheduler", "fifo", "--concurrency", "1", "--run-dir", str(s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = s / "trials" / "trial-00000" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (pid,) = actor_pids("ImplicitFunc")
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "trial-00000  its process failed; Tune runs it again from its last epoch" in err
    for t in result(s)["trials"]:
        assert t["epochs"] == 5
        got, expected = serial_weights(s / "trials" / t["trial"])
        assert np.array_equal(got, expected), t["trial"]


def test_trials_with_ray_workers_of_their_own(tmp_path: Path) -> None:
    """--workers 1: each trial drives a Ray worker in its placement group, reading the
    sweep's one copy of the data; its weights are the serial run's."""
    s = tmp_path / "s"
    r = sweep(*SEED_NET, "--batch-size", "100", "--lr", "1,3", "--workers", "1", "--concurrency", "1",
              "--scheduler", "fifo", "--run-dir", str(s))  # fmt: skip
    assert r.stderr.startswith("sweep: 2 trials of 2 epochs, 1 at a time, each with 1 Ray worker (--concurrency 1, "
                               "--workers 1), fifo; --lr {1.0, 3.0}\n"), r.stderr  # fmt: skip
    res = result(s)
    assert res["data"] == {"results_seen": 4, "trials_with_a_copy": []}
    for t in res["trials"]:
        trial = s / "trials" / t["trial"]
        rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
        assert json.loads((trial / "config.json").read_text())["workers"] == 1
        assert len(rows) == 2 and all(r["channels"]["steps"]["unix"] > 0 for r in rows)  # steps on the worker
        got, expected = serial_weights(trial)
        assert np.array_equal(got, expected), t["trial"]
