"""One writer per run directory: `run.lock`, holding its holder's host, process id and start.

Two `nnps train` into one run directory would interleave their checkpoints and metrics;
the second is refused in one line naming the holder. A lock whose holder is gone (same
host, process no longer there: a run SIGKILLed) is taken over with a line.

On a local disk the lock is made with an exclusive create. Object stores (s3://, gs://)
offer pyarrow no conditional create, so there each contender writes a claim of its own,
`run.lock-TIME-RANDOM`, and lists the claims: the claim the store stamped first (its
LastModified, then its name) holds the directory. The stamps are the store's, set when a
write completes, and its listings show every completed write (S3 has been strongly
consistent since 2020): a contender whose listing missed a rival's claim wrote its own
before that rival's completed, so the rival, listing after, sees it as the earlier one. As
stamps have a resolution (a second on S3), a winner lists again after SETTLE_S to settle a
tie by name. The losers delete their claims and are refused.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from nnps.core.errors import NnpsError
from nnps.core.rundir import RunDir

LOCK = "run.lock"
CLAIM = "run.lock-"  # on object stores: one claim per contender, run.lock-TIME-RANDOM
SETTLE_S = 1.2  # beyond the store's timestamp resolution (S3's LastModified: a second)


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
    """Make the lock on a local disk unless one is there; False if one is. It appears whole
    (written under a name of its own, then linked, which fails where the lock exists): a
    rival never reads a lock half-written by a live holder and takes it for a dead one's."""
    mine = run.join(f"{LOCK}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(mine, "wb") as f:
        f.write(data)
    try:
        os.link(mine, run.join(LOCK))
    except FileExistsError:
        return False
    finally:
        os.unlink(mine)
    return True


def _claims(run: RunDir) -> list[tuple[float, str]]:
    """(the store's stamp, name) of every claim, earliest first."""
    import pyarrow.fs as pafs

    infos = run.fs.get_file_info(pafs.FileSelector(run.path, allow_not_found=True))
    return sorted((i.mtime.timestamp() if i.mtime else 0.0, i.base_name) for i in infos
                  if i.type == pafs.FileType.File and i.base_name.startswith(CLAIM))  # fmt: skip


def _claim(run: RunDir, data: bytes, say: Callable[[str], None]) -> str:
    """Hold an object store's run directory by the earliest claim (module docstring); the
    claim's name, to release it. RunDirBusy naming the holder if another claim is earlier."""
    mine = f"{CLAIM}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
    try:
        with run.fs.open_output_stream(run.join(mine)) as f:  # an object appears whole when its write completes
            f.write(data)
    except OSError as e:
        raise NnpsError(f"{run.uri_of(mine)}: cannot write ({str(e).splitlines()[0] if str(e) else e})")
    for settle in (False, True):
        if settle:
            time.sleep(SETTLE_S)
        for _, name in _claims(run):
            if name == mine:
                break
            _take_over(run, name, say, withdraw=lambda: run.delete(mine))
    return mine


def _take_over(run: RunDir, name: str, say: Callable[[str], None], withdraw: Callable[[], None] = lambda: None) -> None:
    """Another's lock or claim `name`: RunDirBusy naming its holder if that may still run
    (after `withdraw`), else deleted with a line (its holder is gone)."""
    try:
        other = json.loads(run.read(name))
    except (OSError, NnpsError, json.JSONDecodeError, UnicodeDecodeError):
        other = {}  # half-written or damaged: its writer died making it
    if other and alive(other) is not False:
        withdraw()
        raise RunDirBusy(_busy(run, other, name))
    say(f"note: {run.uri_of(name)} was left by {other.get('pid', 'a process')} on {other.get('host', 'this host')}, "
        f"which is gone; taking it over")  # fmt: skip
    run.delete(name)


def _busy(run: RunDir, other: dict, lock: str) -> str:
    state = alive(other)
    where = f"process {other.get('pid')} on {other.get('host')}"
    return f"{run.uri} is in use by {where}" + ("" if state else f" (another host: if it is gone, delete "
                                                f"{run.uri_of(lock)})") + "; give another --run-dir, or wait for it"  # fmt: skip


@contextmanager
def locked(run: RunDir, say: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold the run directory's lock for the block (the directory must exist)."""
    me = json.dumps(holder()).encode()
    if "://" in run.uri:
        lock = _claim(run, me, say)
    else:
        lock = LOCK
        _take_local(run, me, say)
    try:
        yield
    finally:
        try:
            if run.read(lock) == me:
                run.delete(lock)
        except (OSError, NnpsError):
            pass


def _take_local(run: RunDir, me: bytes, say: Callable[[str], None]) -> None:
    for _ in range(3):
        if _create(run, me):
            return
        _take_over(run, LOCK, say)
    raise RunDirBusy(f"{run.uri}: could not take its lock")
