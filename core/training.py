"""The training loop: chunks of steps, and at their ends evaluation, metrics, checkpoints,
and the rebuild of a lost server.

The loop drives an `Executor`: `InProcess` below calls the plain Server and ShardWorker,
cluster/ray_executor.py runs them as Ray actors; the rest is here, once, for both. A run is
a pure function of (config, data, seed): a resumed run restores the parameters, the optimizer
state and the epoch's running sums from its last checkpoint (core/plan.py)."""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import numpy as np

from nnps.core import checkpoint, metrics, record, runlock
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.early_stopping import BEST, EarlyStopping
from nnps.core.errors import ClusterError, ConfigError, DataError, DivergenceError, NnpsError
from nnps.core.plan import Plan, checkpoint_bytes, plan_run
from nnps.core.progress import Reporter
from nnps.core.rundir import RunDir
from nnps.core.sampler import Sampler
from nnps.core.server import Server, Snapshot
from nnps.core.steps import InProcessChannel, OneChannel, ShardWorker, sync_steps
from nnps.core.threads import blas_threads, threads_for

Array = np.ndarray


class Executor(Protocol):
    def run(self, start: int, stop: int) -> None:
        """Apply steps start..stop-1 (batches from the sampler). May return before they are done."""

    def snapshot(self) -> Snapshot:
        """The server's state after every step submitted so far."""

    def evaluate(self, split: str) -> Array:
        """The current parameters' evaluation sums on a split (core/metrics.py)."""

    def restore(self, snapshot: Snapshot) -> None:
        """Rebuild the server from a snapshot (after a ServerLost)."""

    def updates(self) -> list[tuple[int, int, int]]:
        """Bounded/async: (step, worker, version) of each update of the last `run`; [] for sync."""

    def channels(self) -> dict[str, Any] | None:
        """What carried the steps so far (cluster/transport.py's record); None in-process."""

    def close(self) -> None: ...


class ServerLost(NnpsError):
    """The parameter server died; the loop rebuilds it from the last checkpoint."""


MAX_SERVER_LOSSES = 3


class InProcess:
    """The serial path: the same Server and ShardWorker code, called directly. With
    `shards` k > 1 it computes what k workers would, bit for bit: the batch split as the
    parameter server splits it, one sum per shard, added in worker order in the dtype
    (the warm start's in-process steps, so a run's weights do not depend on the step at
    which the workers took over)."""

    def __init__(self, server: Server, worker: ShardWorker, sampler: Sampler, threads: int | None = None,
                 shards: int = 1) -> None:  # fmt: skip
        self.server, self.worker, self.sampler, self.threads = server, worker, sampler, threads
        self.shards = shards
        self.carrier = OneChannel(InProcessChannel(worker))

    def run(self, start: int, stop: int) -> None:
        with blas_threads(self.threads):
            sync_steps(self.carrier, self.server, self.sampler, self.shards, stop)

    def snapshot(self) -> Snapshot:
        return self.server.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        self.server.restore(snapshot)

    def evaluate(self, split: str) -> Array:
        return self.worker.evaluate(self.server.params, split)

    def updates(self) -> list[tuple[int, int, int]]:
        return []

    def channels(self) -> None:
        return None

    def close(self) -> None:
        pass


ExecutorFactory = Callable[[Plan, Dataset], Executor]


def make_in_process(plan: Plan, dataset: Dataset, shards: int = 1) -> InProcess:
    """The serial executor; `shards` k: the sums k workers would return (InProcess)."""
    server = Server(plan.config, plan.network, plan.start, plan.steps_per_epoch)
    worker = ShardWorker(plan.network, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    return InProcess(server, worker, plan.sampler, threads_for(plan.network, plan.config.batch_size), shards)


CHUNK_SECONDS = 0.25  # the driver checks in about this often: progress, divergence


def _chunk(plan: Plan, step: int, length: int) -> int:
    """Where the next run of steps ends: after `length` steps, or at the next epoch end,
    checkpoint or stop. The driver waits only between chunks, so longer chunks pipeline."""
    spe = plan.steps_per_epoch
    stops = [plan.total_steps, (step // spe + 1) * spe, step + max(1, length)]
    if plan.config.checkpoint_every:
        every = plan.config.checkpoint_every
        stops.append((step // every + 1) * every)
    return min(stops)


def train(config: TrainConfig, dataset: Dataset, run_dir: RunDir | None = None, *, resume: bool = False,
          make_executor: ExecutorFactory = make_in_process, reporter: Reporter | None = None,
          say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:  # fmt: skip
    """Train; returns a summary (final metrics, step, paths). Writes into run_dir if given,
    holding its lock (core/runlock.py) from before it reads a checkpoint to the end."""
    if run_dir is None:
        return _train(config, dataset, None, resume, make_executor, reporter, say)
    made = run_dir.create()
    try:
        with runlock.locked(run_dir, say):
            if not resume and (run_dir.exists("config.json") or run_dir.checkpoints() or run_dir.exists("final.npz")):
                # a fresh run would write over another's config, metrics and final.npz and mix checkpoints with it
                raise ConfigError(f"{run_dir} already holds a run: --resume it, or give another --run-dir")
            return _train(config, dataset, run_dir, resume, make_executor, reporter, say)
    except NnpsError:
        if made:
            run_dir.remove_if_empty()  # a run refused before it wrote anything leaves no directory behind
        raise


def _train(config: TrainConfig, dataset: Dataset, run_dir: RunDir | None, resume: bool,
           make_executor: ExecutorFactory, reporter: Reporter | None, say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    plan = plan_run(config, dataset, run_dir, resume, say)
    rows: list[dict[str, Any]] = []
    if run_dir is not None:
        # A table's columns and statistics beside the config, for whoever reads the run directory
        saved = config if dataset.table is None else config.replace(extra={**config.extra, "table": dataset.table.to_meta()})
        run_dir.write_atomic("config.json", saved.to_json().encode())
        # On resume, keep the epochs the checkpoint covers; later rows are produced again.
        rows = [r for r in run_dir.read_metrics() if r["step"] <= plan.start.step] if resume else []
    try:
        log = record.open_log(config, run_dir, resume, plan.start.step)
    except (ValueError, DataError) as e:
        raise ConfigError(str(e)) from None
    executor = make_executor(plan, dataset)
    try:
        return _loop(plan, dataset, run_dir, executor, reporter, rows, log)
    finally:
        executor.close()


def _loop(plan: Plan, dataset: Dataset, run_dir: RunDir | None, executor: Executor, reporter: Reporter | None,
          rows: list[dict[str, Any]], log: record.UpdateLog | None = None) -> dict[str, Any]:  # fmt: skip
    """Run chunks of steps to the end: evaluate and write a metrics row at each epoch's end,
    a checkpoint at each checkpoint step, and rebuild the server from the last one if it is lost."""
    spe, step = plan.steps_per_epoch, plan.start.step
    present = run_dir.checkpoints() if run_dir else []  # one listing: it is a remote call on s3:// and the like
    last_ckpt: str | None = run_dir.uri_of(present[-1][1]) if run_dir and present else None
    last_good, losses = plan.start, 0  # what a lost server is rebuilt from
    started = epoch_t0 = time.perf_counter()
    train_seconds = 0.0
    if reporter:
        reporter.run_start(plan.total_steps, spe, step, plan.config.epochs)
    if reporter and step < plan.total_steps:
        reporter.epoch_start(step // spe + 1, min(spe, plan.total_steps - (step // spe) * spe), step % spe)
    snap = plan.start
    if run_dir is not None and plan.config.snapshot_weights and step == 0:
        run_dir.save_weight_snapshot(0, plan.network.layout.views(snap.params)[0][0])
    length = 1  # steps per chunk, grown to ~CHUNK_SECONDS of work once a step has been timed
    stopper = EarlyStopping.from_rows(plan.config.early_stopping, rows) if plan.config.early_stopping else None
    while step < plan.total_steps and not (stopper and stopper.stop):
        stop = _chunk(plan, step, length)
        try:
            snap, took, evaluation = _run_chunk(plan, executor, step, stop, log)
        except ServerLost as e:
            losses += 1
            if losses > MAX_SERVER_LOSSES:
                raise ClusterError(f"{e}; gave up after {MAX_SERVER_LOSSES} rebuilds")
            executor.restore(last_good)  # the sampler rewinds with the step counter
            step = last_good.step
            if log is not None:
                log.truncate(step)
            rows[:] = [r for r in rows if r["step"] <= step]
            epoch_t0 = time.perf_counter()
            continue
        if snap.diverged_at is not None:
            where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
            raise DivergenceError(f"training diverged: cost became {snap.bad_cost} at step {snap.diverged_at} "
                                  f"(epoch {snap.diverged_at // spe + 1}){where}")  # fmt: skip
        train_seconds += took
        length = max(1, min(4096, int(CHUNK_SECONDS / max(took / (stop - step), 1e-7))))
        advanced, step = stop - step, stop
        cost, correct, examples = snap.epoch_sums
        rate = examples / max(time.perf_counter() - epoch_t0, 1e-9)
        if reporter:
            accuracy = float("nan") if plan.network.regression else correct / max(examples, 1)
            reporter.advance(advanced, cost / max(examples, 1), accuracy, rate)
        if evaluation is not None:
            row = _metrics_row(plan, executor, log, snap, evaluation, rate, time.perf_counter() - started)
            _keep_row(plan, dataset, run_dir, rows, row, snap, stopper, reporter)
            epoch_t0 = time.perf_counter()
        every = plan.config.checkpoint_every
        if (every is None and step % spe == 0) or (every and step % every == 0):
            last_good = snap
            if run_dir is not None:
                if log is not None:  # the record first: a checkpoint always has its updates recorded
                    run_dir.write_atomic(record.RECORD, log.to_bytes())
                last_ckpt = run_dir.save_checkpoint(step, checkpoint_bytes(plan, dataset, snap))
    return _finish(plan, dataset, run_dir, executor, rows, snap, log, stopper, train_seconds)


def _run_chunk(plan: Plan, executor: Executor, step: int, stop: int, log: record.UpdateLog | None,
               ) -> tuple[Snapshot, float, tuple[float, Array] | None]:  # fmt: skip
    """Steps step..stop-1: (the server's state after them, seconds, the test split's
    evaluation where an epoch or the run ends there)."""
    t0 = time.perf_counter()
    executor.run(step, stop)
    snap = executor.snapshot()
    if log is not None:  # bounded/async: which batch and parameter version each update used
        log.add(step, executor.updates())
    took = time.perf_counter() - t0
    ends = stop % plan.steps_per_epoch == 0 or stop == plan.total_steps
    return snap, took, executor.evaluate("test") if ends else None


def _metrics_row(plan: Plan, executor: Executor, log: record.UpdateLog | None, snap: Snapshot,
                 evaluation: Array, rate: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    """metrics.jsonl's row for the epoch ending at snap.step (partial if the run ends mid-epoch)."""
    spe, step = plan.steps_per_epoch, snap.step
    cost, correct, examples = snap.epoch_sums
    row: dict[str, Any] = {"epoch": (step - 1) // spe + 1, "step": step, "train_cost": cost / max(examples, 1)}
    if not plan.network.regression:
        row["train_accuracy"] = correct / max(examples, 1)
    target_std = plan.table.target_std if plan.table else None
    row.update(metrics.unpack(evaluation, plan.network, target_std).scores("test"))
    row.update(examples_per_s=rate, seconds=seconds)
    if (channels := executor.channels()) is not None:
        row["channels"] = channels  # how the steps went so far (Ray executors)
    if log is not None:
        row["staleness"] = record.describe(plan.config, log, (row["epoch"] - 1) * spe, step)
    if step % spe:
        row["partial"] = True
    return row


def _keep_row(plan: Plan, dataset: Dataset, run_dir: RunDir | None, rows: list[dict[str, Any]], row: dict[str, Any],
              snap: Snapshot, stopper: EarlyStopping | None, reporter: Reporter | None) -> None:  # fmt: skip
    """Add the row to metrics.jsonl, with what goes beside it: W^1's snapshot, best.npz."""
    epoch_done = not row.get("partial")
    if epoch_done and run_dir is not None and plan.config.snapshot_weights:
        run_dir.save_weight_snapshot(row["epoch"], plan.network.layout.views(snap.params)[0][0])
    rows.append(row)
    if stopper is not None and epoch_done and stopper.update(row) and run_dir is not None:
        run_dir.write_atomic(BEST, checkpoint_bytes(plan, dataset, snap))  # before the row that names it
    if run_dir is not None:
        run_dir.write_metrics(rows)
    if reporter:
        reporter.epoch_end(row)
        if row["step"] < plan.total_steps:
            reporter.epoch_start(row["step"] // plan.steps_per_epoch + 1,
                                 min(plan.steps_per_epoch, plan.total_steps - row["step"]), 0)  # fmt: skip


def _finish(plan: Plan, dataset: Dataset, run_dir: RunDir | None, executor: Executor, rows: list[dict[str, Any]],
            snap: Snapshot, log: record.UpdateLog | None, stopper: EarlyStopping | None,
            train_seconds: float) -> dict[str, Any]:  # fmt: skip
    """The run's summary, and final.npz: the last step's weights, or the best epoch's under early stopping."""
    summary: dict[str, Any] = {"step": snap.step, "epochs": rows[-1]["epoch"] if rows else 0,
                               "metrics": rows[-1] if rows else None, "train_seconds": train_seconds}  # fmt: skip
    if (channels := executor.channels()) is not None:
        summary["channels"] = channels  # what carried the steps (Ray executors)
    if log is not None:
        summary["staleness"] = record.describe(plan.config, log, plan.start.step, snap.step)
        if run_dir is not None:
            run_dir.write_atomic(record.RECORD, log.to_bytes())
    if stopper is not None:
        summary.update(stopped_early=stopper.stop, best_epoch=stopper.best_epoch)
        best = [r for r in rows if r["epoch"] == stopper.best_epoch and not r.get("partial")]
        summary["metrics"] = best[-1] if best else summary["metrics"]  # final.npz's epoch
    summary["params"] = snap.params
    if run_dir is not None:
        kept = run_dir.read(BEST) if stopper is not None and run_dir.exists(BEST) else None
        run_dir.write_atomic("final.npz", kept or checkpoint_bytes(plan, dataset, snap))  # the best epoch's, if kept
        summary["final"] = run_dir.uri_of("final.npz")
        summary["run_dir"] = run_dir.uri
        if kept:
            summary["params"] = checkpoint.from_bytes(kept, run_dir.uri_of(BEST)).params
    return summary
