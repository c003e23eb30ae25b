"""The record of a bounded or asynchronous run, and its replay as a check.

Update u applied step t's batch from worker w on parameter version d; `UpdateLog` keeps
(t, w, d) for u = 0, 1, ..., saved beside the checkpoints as `updates.npy` (written before
each checkpoint, so a checkpoint always has its updates recorded). `check_record` refuses a
record the run could not have made, and `replay` recomputes the run from it in one process:
the same gradients of the same batches on the same parameter versions, in the same order,
give the same weights (`nnps replay RUN_DIR`, cluster/driver.py).
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import DataError
from nnps.core.network import Network
from nnps.core.sampler import sampler_for
from nnps.core.server import Server, Snapshot
from nnps.core.steps import ShardWorker
from nnps.core.threads import blas_threads

Array = np.ndarray
RECORD = "updates.npy"  # in the run directory: int64 (n, 3) rows of (step t, worker, version d)


class UpdateLog:
    """The run's record: row u = (t, worker, d) of update u."""

    def __init__(self, rows: Array | None = None) -> None:
        self.rows = np.empty((0, 3), np.int64) if rows is None else np.asarray(rows, np.int64).reshape(-1, 3)

    def add(self, first: int, rows: list[tuple[int, int, int]]) -> None:
        """The rows of updates first, first + 1, ... (a chunk's, from the server)."""
        if first != len(self.rows):
            raise ValueError(f"update {first} follows {len(self.rows)} recorded updates")
        if rows:
            self.rows = np.concatenate([self.rows, np.asarray(rows, np.int64).reshape(-1, 3)])

    def truncate(self, steps: int) -> None:
        """Forget the updates from `steps` on (a run rewound to a checkpoint)."""
        self.rows = self.rows[:steps]

    def staleness(self, lo: int = 0, hi: int | None = None) -> Array:
        """u - d of updates lo..hi-1."""
        u = np.arange(len(self.rows))[lo:hi]
        return u - self.rows[lo:hi, 2]

    def histogram(self, lo: int, hi: int) -> dict[str, int]:
        """{staleness: updates} over updates lo..hi-1 (JSON keys)."""
        values, counts = np.unique(self.staleness(lo, hi), return_counts=True)
        return {str(int(v)): int(c) for v, c in zip(values, counts)}

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.save(out, self.rows, allow_pickle=False)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> UpdateLog:
        try:
            rows = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize's errors...
            raise DataError(f"{where}: not an update record ({type(e).__name__}: {e})") from None
        if rows.ndim != 2 or rows.shape[1] != 3 or rows.dtype.kind != "i":
            raise DataError(f"{where}: not an update record (shape {rows.shape}, dtype {rows.dtype})")
        u = np.arange(len(rows))
        if len(rows) and ((rows[:, 2] > u).any() or (rows[:, 2] < 0).any() or (rows[:, 0] < 0).any()):
            raise DataError(f"{where}: an update uses a parameter version that does not exist yet")
        return cls(rows)


def describe(config: TrainConfig, log: UpdateLog, lo: int, hi: int) -> dict[str, Any]:
    """The mode and the staleness of updates lo..hi-1, as metrics rows and the summary keep them."""
    s = log.staleness(lo, hi)
    return {"mode": config.consistency, "tau": config.staleness, "workers": config.workers,
            "histogram": log.histogram(lo, hi), "max": int(s.max()) if len(s) else 0,
            "mean": float(s.mean()) if len(s) else 0.0}  # fmt: skip


def open_log(config: TrainConfig, run_dir: Any, resume: bool, start: int) -> UpdateLog | None:
    """The run's record, None for sync runs; on resume, the saved one up to the checkpoint."""
    if config.consistency == "sync":
        return None
    if not (resume and run_dir is not None and run_dir.exists(RECORD)):
        if start and resume:
            raise ValueError(f"--resume: {run_dir.uri_of(RECORD) if run_dir else RECORD} is missing: the "
                             f"{config.consistency} run's record of its first {start} updates")  # fmt: skip
        return UpdateLog()
    log = UpdateLog.from_bytes(run_dir.read(RECORD), run_dir.uri_of(RECORD))
    if len(log.rows) < start:
        raise ValueError(f"--resume: {run_dir.uri_of(RECORD)} records {len(log.rows)} updates, the checkpoint {start}")
    log.truncate(start)
    return log


def check_record(log: UpdateLog, config: TrainConfig, where: str) -> None:
    """A ValueError naming the first update that the run could not have recorded: each of
    steps 0..n-1's batches taken once, by a worker the run had, on a version no more than
    TAU behind (bounded). (Versions that do not exist yet are refused as the file is read.)"""
    rows, n = log.rows, len(log.rows)
    t, w, d = rows[:, 0], rows[:, 1], rows[:, 2]
    faults: list[tuple[int, str]] = []
    if (out := np.flatnonzero((t < 0) | (t >= n))).size:
        u = int(out[0])
        faults.append((u, f"update {u} takes step {t[u]}'s batch; a run of {n} updates takes steps 0..{n - 1}"))
    order = np.argsort(t, kind="stable")
    if (twice := np.flatnonzero(t[order][1:] == t[order][:-1])).size:
        u, first = int(order[twice[0] + 1]), int(order[twice[0]])
        faults.append((u, f"update {u} takes step {t[u]}'s batch again (update {first} took it)"))
    k = int(config.workers) if isinstance(config.workers, int) else 0
    if (bad := np.flatnonzero((w < 0) | (w >= k))).size:
        u = int(bad[0])
        faults.append((u, f"update {u} is worker {w[u]}'s; the run had workers 0..{k - 1}"))
    if config.consistency == "bounded" and config.staleness is not None:
        stale = np.arange(n) - d
        if (late := np.flatnonzero(stale > config.staleness)).size:
            u = int(late[0])
            faults.append((u, f"update {u} was computed on version {d[u]}, {stale[u]} behind: more than "
                              f"TAU {config.staleness}"))  # fmt: skip
    if faults:
        raise ValueError(f"{where}: {min(faults)[1]}")


def replay(config: TrainConfig, network: Network, dataset: Dataset, start: Snapshot, log: UpdateLog,
           keep: set[int] = frozenset(), own: Callable[[int, int], Array] | None = None,
           ) -> tuple[Snapshot, dict[int, Array]]:  # fmt: skip
    """Recompute a recorded run in this process: update u is step t's batch on version d, or
    (`own(w, j)`, --partitioned) worker w's j-th batch of its own, j counted from the record
    (a worker has one update out at a time, so its updates apply in the order it was sent
    them). Returns the end's snapshot and the parameters after each of the updates in `keep`."""
    sampler = sampler_for(dataset.n_train, config.batch_size, config.seed, config.partitioned)
    drawn: dict[int, int] = {}  # worker -> its updates so far
    server = Server(config, network, start, sampler.steps_per_epoch)
    worker = ShardWorker(network, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    rows = log.rows
    last_use: dict[int, int] = {}  # version -> the last update computed on it
    for u, d in enumerate(rows[:, 2]):
        last_use[int(d)] = u
    versions = {start.step: server.params.copy()}
    kept: dict[int, Array] = {}
    with blas_threads(1):  # as workers sharing a node's cores compute: the same sums, bit for bit
        for u, (t, w, d) in enumerate(rows):
            j = drawn[int(w)] = drawn.get(int(w), -1) + 1
            if u < start.step:
                continue
            batch = own(int(w), j) if own is not None else sampler.batch(int(t))
            grad = worker.gradient_sums(versions[int(d)], batch)
            server.apply(grad)
            if u + 1 in keep:
                kept[u + 1] = server.params.copy()
            if last_use.get(u + 1, -1) > u:
                versions[u + 1] = server.params.copy()
            for v in [v for v in versions if last_use.get(v, -1) <= u]:
                del versions[v]  # no later update is computed on it
    return server.snapshot(), kept
