"""The step file: the step's vectors in shared memory, for a server and workers on one node.

The server and its workers map ONE file in /dev/shm (`NodeBuffers`):

    [ params (P) | reply of worker 0 (P + N_STATS) | ... | reply of worker k-1 ]

The server updates `params` in place and worker i writes its gradient sums into its slot, so no
vector goes through Ray's object store (for a wide network that costs more than a worker's
backprop: bench/vector_exchange.py). Why no locks are needed, and how a killed server's file is
removed: docs/architecture.md, "Which channel runs where". A retried call (a worker Ray
restarted) writes the same numbers into the same slot; a full /dev/shm is caught at creation
(`posix_fallocate`), not as a SIGBUS later.
"""

from __future__ import annotations

import mmap
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnps.worker.channels.wire import reply_size

Array = np.ndarray
SHM_DIR = Path("/dev/shm")
PREFIX = "nnps-step-"


@dataclass(frozen=True)
class NodeBuffers:
    """Where the step's vectors live: a file of (1 + k) vectors, and their shape."""

    path: str
    size: int  # P, the parameter vector's length
    workers: int
    dtype: str  # numpy dtype name
    param_slots: int = 1  # k: a parameter vector per worker (bounded/async: each on its own version)

    @property
    def reply_size(self) -> int:
        return reply_size(self.size)

    @property
    def nbytes(self) -> int:
        return (self.param_slots * self.size + self.workers * self.reply_size) * np.dtype(self.dtype).itemsize

    @classmethod
    def create(cls, size: int, workers: int, dtype: str, param_slots: int = 1) -> NodeBuffers:
        """Make the file (zeroed, its pages reserved now); OSError if /dev/shm cannot hold it."""
        sweep_stale()
        path = SHM_DIR / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        spec = cls(str(path), size, workers, dtype, param_slots)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, spec.nbytes)  # ENOSPC now, instead of SIGBUS on first touch
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return spec

    def unlink(self) -> None:
        """Remove the file, and the files named after it (its step socket: unix.py)."""
        path = Path(self.path)
        for sibling in path.parent.glob(f"{path.name}.*"):
            sibling.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


class Mapped:
    """The vectors of a NodeBuffers file mapped into this process, as plain numpy views."""

    def __init__(self, spec: NodeBuffers) -> None:
        self.spec = spec
        with open(spec.path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), spec.nbytes)  # stays valid after the file closes
        dtype = np.dtype(spec.dtype)
        self.param_slots = [np.frombuffer(self._map, dtype, spec.size, i * spec.size * dtype.itemsize)
                            for i in range(spec.param_slots)]  # fmt: skip
        self.params = self.param_slots[0]  # (P,): what every worker reads in a synchronous step
        start = spec.param_slots * spec.size * dtype.itemsize
        self.replies = [np.frombuffer(self._map, dtype, spec.reply_size, start + i * spec.reply_size * dtype.itemsize)
                        for i in range(spec.workers)]  # fmt: skip  # k x (P + N_STATS,)


def sweep_stale() -> list[str]:
    """Remove step files (and their sockets) whose creating process is gone (a server
    killed before it could remove its own). Returns the names removed."""
    removed = []
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        try:
            pid = int(path.name[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not process_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (someone else's counts as alive: not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
