"""The training driver: load the data, choose the executor, run the loop.

Kept free of Ray imports at module level so `nnps train --workers 0` starts fast and
works where Ray is not wanted.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from nnps.core import catalog, checkpoint, costmodel, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.rundir import RunDir
from nnps.core.errors import ClusterError, ConfigError, DataError
from nnps.core.plan import Plan, build_network, check_batch, nothing_left
from nnps.core.progress import Reporter
from nnps.core.training import make_in_process, train

SLOWER_WARNING = 1.5  # warn when the chosen workers are predicted this many times slower than in-process


def run(config: TrainConfig, run_dir: RunDir | None, *, resume: bool = False, reporter: Reporter | None = None,
        progress: catalog.Progress | None = None, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:  # fmt: skip
    done = nothing_left(config, run_dir) if resume and run_dir is not None else None
    if done:  # no Ray started for a run with no step to take: its summary, in-process
        say(f"nothing left to do: {done}")
        # (a partitioned table's rows stay on workers: one process might not hold them)
        config = config if config.partitioned else config.replace(workers=0)
    if config.workers == 0:
        dataset = validation.data_for(config, progress)
        return train(config, dataset, run_dir, resume=resume, make_executor=make_in_process, reporter=reporter,
                     say=say)
    if config.partitioned:
        return _partitioned(config, run_dir, resume, reporter, say)
    import ray

    if config.address:
        return _on_cluster(config, run_dir, resume, reporter, progress, say)
    # An embedded Ray (or the caller's): decide before starting it; it has this machine's CPUs.
    up = ray.is_initialized()
    cpus = int(ray.cluster_resources().get("CPU", 1)) if up else os.cpu_count() or 1
    where = "the Ray at hand" if up else "this machine (the embedded Ray)"
    return _decided(config, run_dir, resume, reporter, progress, say, cpus, where, warm=not up)


def _decided(config: TrainConfig, run_dir: RunDir | None, resume: bool, reporter: Reporter | None,
             progress: catalog.Progress | None, say: Callable[[str], None], cpus: int, where: str,
             warm: bool) -> dict[str, Any]:  # fmt: skip
    """Check the workers against `cpus`, read the data, let the cost model decide, then train
    in-process, warm-started (`warm`: an embedded Ray not started yet) or on Ray workers."""
    from nnps.cluster.ray_executor import ray_session

    check_placeable(config, cpus, where)
    dataset = validation.data_for(config, progress)
    check_batch(config, dataset)
    config = decide(config, dataset, cpus, say)  # before Ray starts: it times in-process steps
    if config.workers == 0:
        return train(config, dataset, run_dir, resume=resume, make_executor=make_in_process, reporter=reporter,
                     say=say)
    # The warm start's in-process steps are sync steps: bounded and async runs wait for the workers.
    if warm and config.warm_start and config.consistency == "sync":
        return noted(_warm(config, dataset, run_dir, resume, reporter, say), say)
    with ray_session(config) as factory:
        return noted(train(config, dataset, run_dir, resume=resume, make_executor=factory, reporter=reporter,
                           say=say), say)


def noted(summary: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Tell the user, a line each, where a channel broke and the steps went on by the next
    (cluster/transport.py): the result is the same, the steps slower."""
    for f in (summary.get("channels") or {}).get("fallbacks", []):
        say(f"note: from step {f['step']} the steps went over {f['to']} instead of {f['from']}: {f['reason']}")
    return summary


def _on_cluster(config: TrainConfig, run_dir: RunDir | None, resume: bool, reporter: Reporter | None,
                progress: catalog.Progress | None, say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Join the Ray at --address first (a bad address fails before any data is read), then
    decide with its CPUs."""
    import ray

    from nnps.cluster.connect import ray_connection

    cpus = max(os.cpu_count() or 1, config.workers if isinstance(config.workers, int) else 0)
    with ray_connection(config.address, num_cpus=cpus):
        return _decided(config, run_dir, resume, reporter, progress, say, int(ray.cluster_resources().get("CPU", 1)),
                        f"the Ray cluster at {config.address}", warm=False)  # fmt: skip


def _partitioned(config: TrainConfig, run_dir: RunDir | None, resume: bool, reporter: Reporter | None,
                 say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """A table whose rows each worker reads for itself (cluster/parted.py), on the Ray at
    --address or an embedded one; no warm start (it would read every row here)."""
    import ray

    from nnps.cluster import parted
    from nnps.cluster.connect import ray_connection

    cpus = max(os.cpu_count() or 1, config.workers if isinstance(config.workers, int) else 0)
    with ray_connection(config.address, num_cpus=cpus):
        where = f"the Ray cluster at {config.address}" if config.address else "this machine (the embedded Ray)"
        check_placeable(config, int(ray.cluster_resources().get("CPU", 1)), where)
        return noted(parted.run(config, run_dir, resume, reporter, say), say)


def check_placeable(config: TrainConfig, cpus: int, where: str) -> None:
    """A worker count the Ray at hand cannot place (a CPU each) is refused at once, not
    waited on. Left out: an autoscaling cluster that would add nodes on demand."""
    if isinstance(config.workers, int) and config.workers > cpus:
        raise ClusterError(f"--workers {config.workers}: {where} has {cpus} CPUs, one per worker; "
                           f"use --workers {cpus} or fewer, or auto")  # fmt: skip


def _warm(config: TrainConfig, dataset: Dataset, run_dir: RunDir | None, resume: bool, reporter: Reporter | None,
          say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Train with `config.workers` workers on an embedded Ray started in the background,
    in-process until they are up (cluster/warm_start.py)."""
    from nnps.cluster.ray_executor import RayExecutor
    from nnps.cluster.warm_start import RayStart, WarmStart

    k = int(config.workers)
    start = RayStart(num_cpus=max(os.cpu_count() or 1, k))
    try:

        def make(plan: Plan, dataset: Dataset) -> WarmStart:
            remote = start.executor(lambda p, d: RayExecutor(p, d, k), plan, dataset)
            return WarmStart(plan, dataset, remote, say, start.t0, start.uncap)

        return train(config, dataset, run_dir, resume=resume, make_executor=make, reporter=reporter, say=say)
    finally:
        start.close()


def vector_rate(config: TrainConfig) -> float:
    """The rate the cost model assumes for the step's vectors: the step file's where the
    transport's chain starts with it (one node), else the object store's."""
    from nnps.cluster.ray_executor import one_node
    from nnps.cluster.transport import chain

    return costmodel.VECTOR_RATE["shm" if chain(config.transport, one_node())[0] == "unix" else "store"]


def predict(config: TrainConfig, dataset: Dataset, counts: Iterable[int]) -> costmodel.Choice:
    """The cost model's prediction for `counts` workers and in-process, on the Ray at hand
    (or the embedded one it would start)."""
    from nnps.cluster.ray_executor import node_cpus

    network = build_network(config, dataset)
    return costmodel.predict(network, config.batch_size, counts, vector_rate(config), node_cpus())


def decide(config: TrainConfig, dataset: Dataset, cpus: int, say: Callable[[str], None]) -> TrainConfig:
    """--workers auto: the cost model's choice over 0..cpus workers; N: N, with a warning if
    the model predicts them slower than in-process."""
    if config.workers == "auto":
        return choose_workers(config, dataset, cpus, say)
    if config.consistency == "sync":  # the model's steps are sync steps
        warn_if_slower(config, dataset, say)
    return config


def choose_workers(config: TrainConfig, dataset: Dataset, cpus: int, say: Callable[[str], None]) -> TrainConfig:
    choice = predict(config, dataset, range(1, cpus + 1))
    if config.consistency != "sync":  # the model knows sync steps only; these modes need workers
        k = max(1, choice.workers)
        say(f"--workers auto: {k} (the cost model predicts sync steps only; with --consistency "
            f"{config.consistency} each worker's batch is an update: give --workers N to choose)")  # fmt: skip
        return config.replace(workers=k)
    say(choice.line(config.batch_size))
    return config.replace(workers=choice.workers)


def warn_if_slower(config: TrainConfig, dataset: Dataset, say: Callable[[str], None]) -> None:
    k = int(config.workers)
    choice = predict(config, dataset, [k])
    p = choice.predicted_s
    if p[k] > SLOWER_WARNING * p[0]:
        say(f"warning: {k} workers at batch {config.batch_size} are predicted to take {p[k] * 1e3:.2f} ms per step "
            f"against {p[0] * 1e3:.2f} ms in-process ({p[k] / p[0]:.1f}x slower): coordination dominates; "
            f"--workers 0 or a larger --batch-size would train faster ({choice.source})")  # fmt: skip


def replay(run_dir: RunDir) -> dict[str, Any]:
    """Recompute a bounded or async run from its record in one process (core/record.py),
    as a check: the record must be one the run could have made, its config the checkpoint's,
    and the weights must come out as the run's (ReplayMismatch names where they part).
    Writes replay.npz beside final.npz."""
    import numpy as np

    from nnps.core import record
    from nnps.core.plan import checkpoint_bytes, plan_run

    config, log, final = _replay_inputs(run_dir)
    kept = {step: name for step, name in run_dir.checkpoints() if step < final.step}
    draw = None
    if config.partitioned:  # each update drew from its worker's own rows
        from nnps.core.parted_data import load_whole
        from nnps.core.parts import OwnBatches

        dataset, parts = load_whole(config, int(config.workers))
        draw = OwnBatches(parts.route).batch
    else:
        dataset = validation.data_for(config)
    plan = plan_run(config.replace(steps=final.step), dataset, None, False)
    snap, at = record.replay(config, plan.network, dataset, plan.start, log, set(kept), draw)
    run_dir.write_atomic("replay.npz", checkpoint_bytes(plan, dataset, snap))
    diff = float(np.max(np.abs(snap.params - final.params)))
    tol = REPLAY_TOLERANCE[config.dtype]
    if diff > tol:
        apart = {step: float(np.max(np.abs(at[step] - checkpoint.from_bytes(run_dir.read(name), name).params)))
                 for step, name in kept.items() if step in at}  # fmt: skip
        agreed = max([0, *(s for s, v in apart.items() if v <= tol)])
        parted = min([final.step, *(s for s, v in apart.items() if v > tol and s > agreed)])
        raise ReplayMismatch(f"replay: the replayed weights differ from {run_dir.uri_of('final.npz')} by {diff:.3g} "
                             f"(more than {config.dtype}'s {tol:g}): they agree up to update {agreed} and part by "
                             f"update {parted}; the replayed weights are in {run_dir.uri_of('replay.npz')}")  # fmt: skip
    return {"updates": len(log.rows), "max_abs_diff": diff, "final": run_dir.uri_of("replay.npz")}


REPLAY_TOLERANCE = {"float64": 1e-9, "float32": 1e-5}  # a replay computes the very sums the workers did


class ReplayMismatch(ConfigError):
    """A replay that does not give the run's weights: the record or the checkpoint is not the run's."""


def _replay_inputs(run_dir: RunDir) -> tuple[TrainConfig, Any, Any]:
    """(config, record, final checkpoint) of a run to replay, each checked, or ConfigError."""
    from nnps.core import record

    if not run_dir.exists("config.json"):
        raise ConfigError(f"replay: {run_dir.uri_of('config.json')} is missing: not a run directory")
    config = TrainConfig.from_json(run_dir.read("config.json"), run_dir.uri_of("config.json"))
    if config.consistency == "sync":
        raise ConfigError(f"replay: {run_dir.uri} is a sync run, a pure function of its config: train it again "
                          f"with the same flags to reproduce it")  # fmt: skip
    for name in (record.RECORD, "final.npz"):
        if not run_dir.exists(name):
            raise ConfigError(f"replay: {run_dir.uri_of(name)} is missing (the run did not finish?)")
    try:
        log = record.UpdateLog.from_bytes(run_dir.read(record.RECORD), run_dir.uri_of(record.RECORD))
        record.check_record(log, config, run_dir.uri_of(record.RECORD))
    except (ValueError, DataError) as e:
        raise ConfigError(f"replay: {e}") from None
    final = checkpoint.from_bytes(run_dir.read("final.npz"), run_dir.uri_of("final.npz"))
    if final.step != len(log.rows):
        raise ConfigError(f"replay: the record has {len(log.rows)} updates, final.npz {final.step}")
    saved, mine = final.meta.get("config", {}), config.to_dict()
    changed = [k for k in TrainConfig.RESULT_KEYS if k in saved and saved[k] != mine[k]]
    if changed:
        raise ConfigError(f"replay: {run_dir.uri_of('config.json')} disagrees with final.npz on "
                          f"{', '.join(f'{k} ({mine[k]!r} against {saved[k]!r})' for k in changed)}")  # fmt: skip
    return config, log, final