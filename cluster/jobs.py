"""Ray jobs through the dashboard's HTTP API: submit, status, logs, stop, list, fetch.

Everything needs only the dashboard's address (`http://HOST:8265`): Ray's `JobSubmissionClient`
speaks HTTP to it, with Ray's auth token where there is one (README.md, "Security"), and uploads a
local wheel named in the runtime environment. Progress comes from the job's log
(docs/architecture.md, "Live status"); results from its run directory, which on a multi-node
cluster should be shared storage (s3://, gs://, NFS). The Jobs API runs whatever it is sent, for
whoever reaches it: keep the dashboard on loopback or behind token authentication and TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from nnps.cluster.connect import probe, token_auth
from nnps.core.environment import RAY_ADDRESS, RAY_API_SERVER_ADDRESS
from nnps.core.errors import ClusterError, NnpsError
from nnps.core.progress import parse_last

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
RESULT_FILES = ("final.npz", "metrics.jsonl", "config.json")


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS if it is an http(s) URL (a
    GCS address such as HOST:6379 or `auto` is Ray's, not a dashboard's), else the default."""
    ray_address = RAY_ADDRESS.get()
    for candidate in (address, RAY_API_SERVER_ADDRESS.get(),
                      ray_address if ray_address.startswith(("http://", "https://")) else None):  # fmt: skip
        if candidate:
            return candidate if "://" in candidate else f"http://{candidate}"
    return DEFAULT_ADDRESS


def _explain(e: Exception, address: str) -> str:
    text = str(e)
    if "401" in text or "403" in text or "nauthorized" in text or "uthentication" in text:
        return (f"authentication refused by {address}; the token used: {token_auth()}: set RAY_AUTH_TOKEN (or "
                f"RAY_AUTH_TOKEN_PATH) to the cluster's token")  # fmt: skip
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


class Jobs:
    def __init__(self, address: str | None = None) -> None:
        self.address = resolve_address(address)
        probe(self.address, default_port=8265)
        token_auth()
        from ray.job_submission import JobSubmissionClient

        # Ray logs "Uploading package ...", "Creating a file package ..." and "WebSocket
        # closed ..." at INFO with its own handler; keep our output to ours.
        for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                     "ray._private.runtime_env.packaging"):  # fmt: skip
            logging.getLogger(name).setLevel(logging.WARNING)

        try:
            self.client = JobSubmissionClient(self.address)
        except Exception as e:  # ConnectionError, RuntimeError with an HTTP status in its text
            raise ClusterError(f"cannot use Ray's Jobs API at {self.address}: {_explain(e, self.address)}")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            text = str(e)
            if "does not exist" in text or "404" in text:
                raise ClusterError(f"no job {args[0] if args else ''} at {self.address}")
            raise ClusterError(f"{what} failed at {self.address}: {_explain(e, self.address)}")

    def submit(self, train_args: list[str], run_dir: str, *, code: str = "wheel", wheel: str | None = None,
               job_id: str | None = None, command: str = "train") -> str:  # fmt: skip
        """Submit `nnps COMMAND ARGS --run-dir RUN_DIR --log-progress` (train, or sweep); returns the job id."""
        entrypoint = shlex.join(["python", "-m", "nnps.cli.main", command, *train_args, "--run-dir", run_dir,
                                 "--log-progress"])  # fmt: skip
        runtime_env: dict[str, Any] = {}
        if code == "wheel":
            runtime_env["py_modules"] = [unpack(wheel or build_wheel())]
        job_id = job_id or default_job_id()
        return self._call("submit", self.client.submit_job, entrypoint=entrypoint, runtime_env=runtime_env,
                          submission_id=job_id, metadata={"nnps": command, "run_dir": run_dir})  # fmt: skip

    def info(self, job_id: str) -> Any:
        return self._call("status", self.client.get_job_info, job_id)

    def logs(self, job_id: str) -> str:
        return self._call("logs", self.client.get_job_logs, job_id)

    def follow(self, job_id: str) -> Iterator[str]:
        """Log text as it arrives, until the job ends."""
        self.info(job_id)  # a clear error for an unknown job before streaming
        agen = self.client.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    def stop(self, job_id: str) -> bool:
        self.info(job_id)
        return bool(self._call("stop", self.client.stop_job, job_id))

    def list(self) -> list[Any]:
        jobs = self._call("list", self.client.list_jobs)
        return sorted([j for j in jobs if (j.metadata or {}).get("nnps")], key=lambda j: j.start_time or 0)

    def status(self, job_id: str) -> dict[str, Any]:
        """Ray's state of the job plus the training's last progress record."""
        info = self.info(job_id)
        out: dict[str, Any] = {"job_id": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
                               "message": info.message, "run_dir": (info.metadata or {}).get("run_dir"),
                               "start_time": info.start_time, "end_time": info.end_time}  # fmt: skip
        progress = parse_last(self.logs(job_id))
        if progress:
            out["progress"] = progress
            rate = progress.get("step", 0) / max(progress.get("elapsed", 0), 1e-9)
            left = progress.get("total_steps", 0) - progress.get("step", 0)
            if out["status"] == "RUNNING" and rate > 0:
                out["eta_s"] = left / rate
        return out

    def wait(self, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
        while (s := self.status(job_id))["status"] not in TERMINAL:
            time.sleep(poll_s)
        return s


def default_job_id() -> str:
    return f"nnps-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


PACKAGE_DIRS = ("core", "worker", "cluster", "ui", "cli")  # pyproject.toml's package-dir


def source_digest(root: Path) -> str:
    """SHA-256 of what goes into the wheel: pyproject.toml, README.md and the packages' files."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml", root / "README.md"]
    files += sorted(f for d in PACKAGE_DIRS for f in (root / d).rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    for f in files:
        if f.exists():
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_wheel() -> str:
    """The nnps wheel of the source tree this nnps runs from (an editable install or a
    checkout): built once per content of that tree into the cache (~/.cache/nnps/wheels/
    DIGEST/), so that submitting again the same code builds nothing; returns its path."""
    import nnps.core
    from nnps.core.catalog import cache_dir

    root = Path(nnps.core.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise NnpsError("nnps is installed from a wheel, not a checkout: pass --wheel PATH, or --code image "
                        "if the cluster's image has nnps")  # fmt: skip
    cached = cache_dir() / "wheels" / source_digest(root)
    if built := list(cached.glob("nnps-*.whl")):
        return str(built[0])
    cached.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="build-", dir=cached.parent))  # beside it: the rename below stays on one disk
    errors = []
    # Without build isolation first: it works offline with the environment's setuptools;
    # then isolated, which fetches the build backend pyproject.toml names.
    for isolation in (["--no-build-isolation"], []):
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out),
                                 str(root)], capture_output=True, text=True)  # fmt: skip
        wheels = list(out.glob("nnps-*.whl"))
        if result.returncode == 0 and wheels:
            cached.mkdir(parents=True, exist_ok=True)
            os.replace(wheels[0], cached / wheels[0].name)  # whole or absent: a rename
            shutil.rmtree(out, ignore_errors=True)
            return str(cached / wheels[0].name)
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        errors.append(next((ln for ln in lines if "rror" in ln), lines[-1] if lines else "no output"))
    shutil.rmtree(out, ignore_errors=True)
    raise NnpsError(f"could not build the nnps wheel from {root}: {'; '.join(errors)}")


def unpack(wheel: str) -> str:
    """The wheel's `nnps` package directory, unpacked: Ray ships a directory in py_modules
    as is, whereas it would `pip install` a wheel with all its dependencies (Ray included)
    into a fresh environment on every node, which is slow and needs PyPI. The cluster
    provides the dependencies (the image in k8s/ has them)."""
    import zipfile

    out = Path(tempfile.mkdtemp(prefix="nnps-pkg-"))
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(out, [n for n in z.namelist() if n.startswith("nnps/")])
    except (OSError, zipfile.BadZipFile) as e:
        raise NnpsError(f"{wheel}: not a readable wheel ({e})")
    if not (out / "nnps").is_dir():
        raise NnpsError(f"{wheel}: holds no nnps package")
    return str(out / "nnps")


def fetch(run_dir: str, out: Path) -> list[Path]:
    """Copy a run's results (final.npz, metrics.jsonl, config.json) from its run directory."""
    from nnps.core.rundir import RunDir

    rd = RunDir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in RESULT_FILES:
        if rd.exists(name):
            (out / name).write_bytes(rd.read(name))
            copied.append(out / name)
    if not copied:
        raise NnpsError(f"{run_dir}: no results yet (none of {', '.join(RESULT_FILES)})")
    return copied
