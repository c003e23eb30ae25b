"""Submission and status against a real Ray head on 127.0.0.1 (`ray start --head --block`),
through the dashboard's HTTP Jobs API only, with Ray's token authentication on."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnps.cli.main import app
from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.training import train
from tests.conftest import MNIST_10K, S3_BUCKET, free_port

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent
runner = CliRunner()


@pytest.fixture(scope="module")
def head(tmp_path_factory, s3):
    """A Ray head with its dashboard on 127.0.0.1, token auth on; the jobs it runs use this
    virtualenv's python (PATH), as a cluster's image would provide nnps's dependencies, and
    reach the test's S3 API with its credentials in their environment, as a cluster's
    nodes would have theirs.

    The token is Ray's default token file (~/.ray/auth_token, made if missing), not an
    env var: Ray caches the token a process first used, and earlier tests' local Ray
    instances use that file."""
    token_file = Path.home() / ".ray" / "auth_token"
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(32))
    token = token_file.read_text().strip()
    dash, gcs = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}", **s3)
    log_path = tmp_path_factory.mktemp("head") / "head.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 90
    while True:
        try:
            req = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(req, timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "Ray head did not come up in 90 s"
            time.sleep(0.5)
    yield address  # the client side sets nothing: nnps finds the token as Ray's CLI does
    os.killpg(proc.pid, signal.SIGTERM)  # this head's own process group, never a broad `ray stop`
    try:
        proc.wait(timeout=5)  # `ray start --block` stopping every process in turn took 30 s and more
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def status(address: str, job: str) -> dict:
    code, out = cli("status", job, "--address", address, "--json")
    assert code == 0, out
    return json.loads(out)


TRAIN = ["--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "50", "--epochs", "2", "--lr", "3.0",
         "--dtype", "float64", "--seed", "2", "--workers", "2"]  # fmt: skip


def test_submit_watch_fetch_equals_local(head: str, mnist10k, tmp_path: Path) -> None:
    run_dir = tmp_path / "cluster-run"
    code, out = cli("submit", "--address", head, "--run-dir", str(run_dir), "--json", *TRAIN)
    assert code == 0, out
    job = json.loads(out)["job_id"]
    seen_running = None
    deadline = time.monotonic() + 240
    while (s := status(head, job))["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if s["status"] == "RUNNING" and "progress" in s:
            seen_running = s
        assert time.monotonic() < deadline, s
        time.sleep(0.3)
    assert s["status"] == "SUCCEEDED", s
    assert seen_running is not None, "never saw RUNNING with progress"
    p = seen_running["progress"]
    assert p["total_steps"] == 400 and 0 <= p["step"] <= 400 and p["epochs"] == 2
    assert s["progress"]["step"] == 400 and s["progress"]["epochs_done"] == 2
    code, out = cli("fetch", job, "--address", head, "--out", str(tmp_path / "results"))
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["config.json", "final.npz", "metrics.jsonl"]
    local = train(TrainConfig(data=str(MNIST_10K), hidden=(20,), batch_size=50, epochs=2, lr=3.0, dtype="float64",
                              seed=2), mnist10k)  # fmt: skip
    remote = checkpoint.load(str(tmp_path / "results" / "final.npz"))
    assert np.max(np.abs(remote.params - local["params"])) < 1e-9
    code, out = cli("jobs", "--address", head, "--json")
    assert job in [j["job_id"] for j in json.loads(out)]
    # in an 80-column terminal the id and the run directory are whole, each on one line
    listing = runner.invoke(app, ["jobs", "--address", head], env={"COLUMNS": "80"}).stdout.splitlines()
    mine = next(i for i, line in enumerate(listing) if line.startswith(job + " "))
    assert listing[mine].split()[:2] == [job, "SUCCEEDED"]
    assert listing[mine + 1].split() == ["run", "directory", str(run_dir)]
    # nnps logs: a line per epoch as `nnps train` prints it, the same numbers as metrics.jsonl; --json the records
    code, log = cli("logs", job, "--address", head)
    rows = [json.loads(line) for line in (tmp_path / "results" / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert code == 0 and "NNPS_PROGRESS" not in log and len(epochs) == 2, log
    assert "job_manager.py" not in log and "Running entrypoint" not in log  # Ray's notices of the start
    assert epochs[1].startswith(f"epoch   2  step     400  train cost {rows[1]['train_cost']:.4f}  ")
    assert f"test acc {rows[1]['test_accuracy']:.2%}" in epochs[1]
    code, raw = cli("logs", job, "--address", head, "--json")
    records = [json.loads(line) for line in raw.splitlines()]
    assert code == 0 and records[-1]["step"] == 400 and records[-1]["epochs_done"] == 2


def test_stop_a_running_job(head: str, tmp_path: Path) -> None:
    code, out = cli("submit", "--address", head, "--json", *TRAIN[:-4], "--epochs", "200", "--workers", "1")
    job = json.loads(out)["job_id"]
    deadline = time.monotonic() + 120
    while status(head, job)["status"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    code, out = cli("stop", job, "--address", head)
    assert (code, out) == (0, f"{job}: stop requested\n")
    while (s := status(head, job))["status"] not in ("STOPPED", "FAILED", "SUCCEEDED"):
        assert time.monotonic() < deadline + 60
        time.sleep(0.3)
    assert s["status"] == "STOPPED"


def test_failing_job_exits_non_zero_with_the_reason(head: str, capsys) -> None:
    from nnps.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["submit", "--address", head, "--wait", "--data", "/no/such/data", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert e.value.code == 1
    assert err.startswith("error: job nnps-") and err.endswith(" FAILED: /no/such/data: no such file or directory\n")
    assert err.count("\n") == 1


def test_unknown_job_and_bad_token_and_unreachable(head: str, capsys, monkeypatch) -> None:
    from nnps.cli.main import main

    def run(args: list[str]) -> tuple[int, str]:
        with pytest.raises(SystemExit) as e:
            main(args)
        return e.value.code, capsys.readouterr().err

    assert run(["status", "nnps-nope", "--address", head]) == (1, f"error: no job nnps-nope at {head}\n")
    # Ray caches the token in-process: a fresh process with a wrong one.
    env = dict(os.environ, RAY_AUTH_TOKEN="wrong-token")
    out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "jobs", "--address", head], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1 and out.stderr.startswith(f"error: cannot use Ray's Jobs API at {head}: authentication refused")
    assert out.stderr.count("\n") == 1
    assert run(["jobs", "--address", "http://127.0.0.1:1"]) == (1, "error: cannot reach Ray at http://127.0.0.1:1: Connection refused\n")


def test_submit_rejects_a_bad_train_flag_before_submitting(capsys) -> None:
    from nnps.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["submit", "--address", "http://127.0.0.1:1", "--epocs", "3"])
    assert e.value.code == 2 and "No such option: --epocs" in capsys.readouterr().err


def test_wheel_is_built_once_per_content(tmp_path: Path, monkeypatch) -> None:
    """`nnps submit` ships the same wheel for the same code without building it again."""
    from nnps.cluster import jobs

    monkeypatch.setenv("NNPS_DATA_DIR", str(tmp_path / "cache"))
    first = Path(jobs.build_wheel())
    built_at = first.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError(f"built again: {args}")

    monkeypatch.setattr(jobs.subprocess, "run", no_build)
    assert Path(jobs.build_wheel()) == first and first.stat().st_mtime_ns == built_at
    assert [p.name for p in (tmp_path / "cache" / "wheels").iterdir()] == [first.parent.name]
    # another content, another digest
    import shutil

    root = Path(jobs.__file__).resolve().parents[1]
    copy = tmp_path / "src"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", *jobs.PACKAGE_DIRS):
        if (root / name).is_dir():
            shutil.copytree(root / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(root / name, copy / name)
    assert jobs.source_digest(copy) == jobs.source_digest(root) == first.parent.name
    (copy / "core" / "network.py").write_text((copy / "core" / "network.py").read_text() + "\n# changed\n")
    assert jobs.source_digest(copy) != first.parent.name


def test_job_with_its_run_directory_on_s3(head: str, s3: dict, mnist10k, tmp_path: Path, monkeypatch) -> None:
    """What a multi-node cluster needs: the job writes its run to S3 (the test's S3 API,
    whose credentials the head's environment carries), status follows it, fetch reads it."""
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{S3_BUCKET}/jobs/run1"
    args = [*TRAIN[:6], "--epochs", "1", *TRAIN[8:14], "--workers", "1"]
    code, out = cli("submit", "--address", head, "--run-dir", uri, "--json", *args)
    assert code == 0, out
    job = json.loads(out)["job_id"]
    deadline = time.monotonic() + 240
    while (s := status(head, job))["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, s
        time.sleep(0.5)
    assert s["status"] == "SUCCEEDED", s
    assert s["run_dir"] == uri and s["progress"]["step"] == 200
    code, out = cli("fetch", job, "--address", head, "--out", str(tmp_path / "results"))
    assert code == 0, out
    local = train(TrainConfig(data=str(MNIST_10K), hidden=(20,), batch_size=50, epochs=1, lr=3.0, dtype="float64",
                              seed=2), mnist10k)  # fmt: skip
    assert np.max(np.abs(checkpoint.load(str(tmp_path / "results" / "final.npz")).params - local["params"])) < 1e-9
    assert checkpoint.load(f"{uri}/final.npz").step == 200  # read straight from S3 too


def test_ui_lists_the_dashboards_jobs_with_their_state(head: str, tmp_path: Path) -> None:
    """`nnps ui --address`: the cluster's nnps jobs beside local runs, each with Ray's state."""
    code, out = cli("submit", "--address", head, "--run-dir", str(tmp_path / "job-run"), "--json", "--wait",
                    *TRAIN[:6], "--epochs", "1", *TRAIN[8:14], "--workers", "1")  # fmt: skip
    assert code == 0, out
    job = json.loads(out)["job_id"]
    p = subprocess.Popen([sys.executable, "-m", "nnps.cli.main", "ui", "--address", head], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = p.stdout.readline().split()[2]  # type: ignore[union-attr]
        with urllib.request.urlopen(f"{url}api/runs", timeout=30) as r:
            runs = json.loads(r.read())
        mine = next(r for r in runs if r["name"] == job)
        assert mine["uri"] == str(tmp_path / "job-run") and mine["job"]["status"] == "SUCCEEDED"
        with urllib.request.urlopen(f"{url}api/runs/{mine['id']}/metrics", timeout=30) as r:
            assert [row["epoch"] for row in json.loads(r.read())["rows"]] == [1]
    finally:
        p.terminate()
        p.communicate(timeout=30)


def test_a_sweep_submitted_as_a_job(head: str, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    code, out = cli("submit", "--address", head, "--run-dir", str(sweep_dir), "--json", "--wait", "sweep",
                    "--data", str(MNIST_10K), "--lr", "1,3", "--epochs", "1", "--scheduler", "fifo")  # fmt: skip
    assert code == 0, out
    final = json.loads(out)
    assert final["status"] == "SUCCEEDED", final
    result = json.loads((sweep_dir / "result.json").read_text())
    best = result["best"]
    assert final["progress"] == {"kind": "sweep", "trials": 2, "ended": 2, "best": {
        "trial": best["trial"], "val_accuracy": best["val_accuracy"], "config": f"lr={best['params']['lr']:.4g}"}}
    code, out = cli("status", final["job_id"], "--address", head)
    assert code == 0 and f"SUCCEEDED  sweep: 2/2 trials ended, best so far {best['trial']} validation" in out, out


def test_a_wrong_token_is_one_line_naming_where_it_came_from(head: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = subprocess.run([str(BIN / "nnps"), "status", "--address", head], capture_output=True, text=True, timeout=120,
                       env={**env, "RAY_AUTH_TOKEN": "not-the-token"})  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: ") and f"authentication refused by {head}; the token used: RAY_AUTH_TOKEN" in r.stderr


def test_a_bad_sweep_is_refused_before_it_is_submitted(head: str) -> None:
    code, out = cli("submit", "--address", head, "sweep", "--data", str(MNIST_10K), "--lr", "3:1")
    assert code == 1
