"""The README's session, run as written: its code block, parsed from README.md, in a clean
environment (a fresh HOME, a plain PATH, nothing else set) with no network (a network
namespace with only a loopback), from a directory holding what a clone holds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnps.core import checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


def session_block() -> str:
    """The first ```bash block under "## A session"."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## A session\n") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README.md: no bash block under '## A session'"
    return match.group(1)


def no_network_prefix() -> list[str]:
    """A new network namespace (root here and in CI; a user namespace elsewhere)."""
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]


def kill_namespace(ns: str) -> None:
    """Whatever the session left running in its namespace (a failed `ray stop`)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "ns" / "net") == ns:
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


def test_the_readme_session_runs_offline_as_written(tmp_path: Path) -> None:
    work, home = tmp_path / "clone", tmp_path / "home"
    work.mkdir(), home.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # what `make train` made in the clone
    (work / "tests").symlink_to(REPO / "tests")
    (work / "session.sh").write_text(session_block())
    # The wrapper, not the session: loopback up, the namespace's id kept for clean-up, and
    # proof that nothing beyond this machine can be reached.
    wrapper = ("ip link set lo up && readlink /proc/self/ns/net > ns && "
               "! python3 -c 'import socket; socket.create_connection((\"192.0.2.1\", 80), timeout=2)' 2>/dev/null && "
               "exec bash -e -x session.sh")  # fmt: skip
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    try:
        out = subprocess.run([*no_network_prefix(), "bash", "-c", wrapper], cwd=work, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=900)  # fmt: skip
    finally:
        if (work / "ns").exists():
            kill_namespace((work / "ns").read_text().strip())
    log = out.stdout
    (tmp_path / "session.log").write_text(log)
    assert out.returncode == 0, log[-6000:]
    assert "Traceback" not in log
    # what each part of the session showed the user
    assert re.search(r"done: \d+ steps; test accuracy \d+\.\d+%; weights in runs/seed/final\.npz", log)
    assert re.search(r"mnist-10k test: 10000 examples, accuracy (9\d|8\d)\.\d+%", log), log[-3000:]
    replayed = re.search(r"replayed (\d+) updates of runs/bounded in one process: max \|w - final\.npz\| = (\S+);", log)
    assert replayed and int(replayed[1]) > 0 and float(replayed[2]) < 1e-5, log[-3000:]
    assert re.search(r"best: trial-\d+ \(.*\): validation \d+\.\d+%, test \d+\.\d+%", log)
    assert re.search(r"done: 100 steps \(unix 100\); test accuracy \d+\.\d+%; weights in runs/on-cluster/final\.npz", log)
    assert re.search(r"digits-1: SUCCEEDED  epoch 2/2  step 2000/2000 ", log), log[-3000:]
    # nnps's own paths print nnps's lines, not Ray's log records
    for ray_line in ("packaging.py", "sdk.py", "UserWarning"):
        assert ray_line not in log.split("+ ray start")[0] + log.split("+ nnps submit")[-1].split("+ ray stop")[0]
    # the resumed seed run equals 8 epochs from the start, as the README says
    seed = checkpoint.load(str(work / "runs" / "seed" / "final.npz"))
    assert seed.meta["epoch"] == 8
    fetched = checkpoint.load(str(work / "results" / "final.npz"))
    assert fetched.meta["epoch"] == 2 and np.all(np.isfinite(fetched.params))
    assert (work / "curves.png").stat().st_size > 0 and (work / "sweeps" / "s1" / "curves.png").exists()
    assert sorted(p.name for p in (work / "pictures").iterdir())[:1] == ["confusion.png"]
