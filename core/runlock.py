"""One writer per run directory: `run.lock`, holding its holder's host, process id and start.

Two `nnps train` into one run directory would interleave their checkpoints and metrics;
the second is refused in one line naming the holder. A lock whose holder is gone (same
host, process no longer there: a run SIGKILLed) is taken over with a line. The lock is
made with an exclusive create on a local disk. On object stores (s3://, gs://), which
pyarrow gives no conditional create, it is written after a look that none is there:
two runs started within the same second can both pass; later ones are refused.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from nnps.core.errors import NnpsError
from nnps.core.rundir import RunDir

LOCK = "run.lock"


class RunDirBusy(NnpsError):
    """Another process is writing this run directory."""


def _started(pid: int) -> str | None:
    """When a process started (its clock ticks since boot), to tell it from a later one with its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _started(pid)}


def alive(h: dict[str, object]) -> bool | None:
    """Whether a lock's holder still runs: None when it is on another host (cannot tell)."""
    if h.get("host") != socket.gethostname():
        return None
    pid = int(h.get("pid", 0))  # type: ignore[call-overload]
    return pid > 0 and _started(pid) is not None and _started(pid) == h.get("started")


def _create(run: RunDir, data: bytes) -> bool:
    """Make the lock unless one is there; False if one is."""
    if "://" not in run.uri:
        try:
            fd = os.open(run.join(LOCK), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if run.exists(LOCK):
        return False
    run.write_atomic(LOCK, data)
    return True


@contextmanager
def locked(run: RunDir, say: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold the run directory's lock for the block (the directory must exist)."""
    me = holder()
    for _ in range(3):
        if _create(run, json.dumps(me).encode()):
            break
        try:
            other = json.loads(run.read(LOCK))
        except (OSError, NnpsError, json.JSONDecodeError, UnicodeDecodeError):
            other = {}  # half-written or damaged: its writer died making it
        state = alive(other) if other else False
        if state is not False:
            where = f"process {other.get('pid')} on {other.get('host')}"
            raise RunDirBusy(f"{run.uri} is in use by {where}" + ("" if state else " (another host: if it is gone, "
                             f"delete {run.uri_of(LOCK)})") + "; give another --run-dir, or wait for it")  # fmt: skip
        left_by = f"{other.get('pid', 'a process')} on {other.get('host', 'this host')}"
        say(f"note: {run.uri_of(LOCK)} was left by {left_by}, which is gone; taking it over")
        run.delete(LOCK)
    else:
        raise RunDirBusy(f"{run.uri}: could not take its lock")
    try:
        yield
    finally:
        try:
            if json.loads(run.read(LOCK)) == me:
                run.delete(LOCK)
        except (OSError, NnpsError, json.JSONDecodeError):
            pass
