"""`--partitioned` training on Ray: each worker reads and holds only its own parts.

The driver reads metadata; each GradientWorker `scan`s its parts (counts and moments), which
core/parted_data.py's `parted` combines; the holder publishes {network, info, route} to the
workers. A worker Ray restarts reads its parts again from the shared store, wherever Ray places
it. Nothing of the data passes through the driver or the object store. The flow, step by step:
docs/architecture.md, "Data larger than one machine: `--partitioned`".
"""

from __future__ import annotations

from typing import Any, Callable

import ray
from ray.exceptions import RayTaskError

from nnps.cluster.ray_executor import LOST, RayExecutor, cause_of, node_cpus, one_node, root_cause
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.environment import WORKER_THREADS
from nnps.core.errors import ClusterError, DataError
from nnps.core.parted_data import layout, parted
from nnps.core.parts import assign
from nnps.core.plan import Plan
from nnps.core.rundir import RunDir
from nnps.core.progress import Reporter
from nnps.core.training import train
from nnps.worker import training_data
from nnps.worker.gradient_worker import GradientWorker, worker_options


SYNC_BATCHES = "step t's batch drawn from all training rows by (seed, t); each index computed by its row's worker"
OWN_BATCHES = ("the j-th update sent to worker w takes batch j of w's own sampler over w's training rows, seeded "
               "by (seed, w) (core/parts.py: OwnBatches)")


START_S = 120.0  # for the workers to be placed and started


def workers_for(config: TrainConfig, say: Callable[[str], None]) -> int:
    """--workers N, or auto: one worker per live node (each reads its share of the parts)."""
    if isinstance(config.workers, int):
        return config.workers
    k = len([n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1])
    say(f"--workers auto with --partitioned: {k} (one per node of the Ray cluster with a CPU)")
    return max(k, 1)


def threads(k: int) -> int:
    """BLAS threads per worker: NNPS_WORKER_THREADS, else the node's cores less two over k on
    one node, else 1 (core/threads.py's rule, before the network's size is known)."""
    cpus = node_cpus() if one_node() else None
    return WORKER_THREADS.count() or (max(1, (cpus - 2) // k) if cpus else 1)


def run(config: TrainConfig, run_dir: RunDir | None, resume: bool, reporter: Reporter | None,
        say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Train `config` on the connected Ray with its rows on the workers."""
    k = workers_for(config, say)
    lay = layout(config)
    owner = assign(lay.parts, k)
    t = threads(k)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if k * t > cpus:  # Ray would wait for the CPUs forever
        raise ClusterError(f"{k} workers x {t} CPUs need {k * t} CPUs; the Ray cluster has {cpus}")
    holder_name, holder = training_data.share([])
    sources = [training_data.PartsSource(config, lay.features, [p for p, o in zip(lay.parts, owner) if o == w],
                                         [r for r, o in zip(lay.first_rows, owner) if o == w], holder_name, w)
               for w in range(k)]  # fmt: skip
    workers = [GradientWorker.options(**worker_options(t)).remote(None, s, t) for s in sources]
    try:
        _started(workers, t)
        summaries = _gather([w.scan.remote() for w in workers], "reading its parts")
        data = parted(config, lay, summaries, owner, k)
        if config.consistency != "sync" and (idle := [w for w in range(k) if not data.route.rows_held(w)]):
            raise DataError(f"--consistency {config.consistency}: worker {idle[0]} owns no training rows "
                            f"({len(lay.parts)} parts over {k} workers); use fewer --workers")  # fmt: skip
        batches = (SYNC_BATCHES if config.consistency == "sync" else OWN_BATCHES)
        config = config.replace(workers=k, extra={**config.extra, "parts": {**data.description, "batches": batches}})

        def make(plan: Plan, dataset: Dataset) -> RayExecutor:
            ray.get(holder.hold.remote([ray.put({"network": plan.network, "info": data.table, "route": data.route})]))
            _gather([w.ready.remote() for w in workers], "scaling its rows")  # a test row of an unknown class, ...
            return RayExecutor(plan, dataset, k, threads=t, parted=(workers, holder, data.route))

        return train(config, data, run_dir, resume=resume, make_executor=make, reporter=reporter, say=say)  # type: ignore[arg-type]
    finally:
        for actor in [*workers, holder]:
            ray.kill(actor, no_restart=True)


def _started(workers: list, t: int) -> None:
    """Every worker placed and started within START_S, or one line: a cluster whose nodes
    each have fewer free CPUs than a worker asks for would leave it pending forever."""
    ready, pending = ray.wait([w.__ray_ready__.remote() for w in workers], num_returns=len(workers),
                              timeout=START_S)  # fmt: skip
    if pending:
        raise ClusterError(f"{len(pending)} of {len(workers)} workers not started after {START_S:.0f} s: no node "
                           f"has {t} free CPUs for them (NNPS_WORKER_THREADS, --workers)")  # fmt: skip
    _gather(ready, "starting")


def _gather(refs: list, doing: str) -> list[Any]:
    """The workers' answers; a part that cannot be read (or holds a class the training rows
    lack, ...) is one line naming it."""
    try:
        return ray.get(refs)
    except RayTaskError as e:
        if isinstance(cause := root_cause(e), DataError):
            raise DataError(str(cause)) from None
        raise ClusterError(f"a worker failed {doing}: {cause_of(e)}")
    except LOST as e:
        raise ClusterError(f"a worker died {doing}, past Ray's restarts ({type(e).__name__})")
