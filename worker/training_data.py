"""`TrainingData`: where a run's workers find its data, by name.

The driver puts the training and test arrays in Ray's object store once. A worker does not
take their references as constructor arguments: Ray would then warn, on every run, that an
actor with `max_restarts > 0` has constructor arguments in the object store (its restart
replays the constructor, whose argument objects Ray does not keep alive for it: Ray issue
53727). Instead a small named actor holds the references for the run, and each worker,
given only that actor's name, asks it for them when it first needs the data. A worker Ray
restarts asks again, so its retried call finds the same read-only copy.

The holder lives on the driver's node, where the objects' owner and their primary copies
are (pinned there: Ray's soft affinity placed it on other nodes, and a node lost with it
left the workers restarted there without their data), asks for no CPU, and is not
restarted: it goes with the run's executor, and a lost driver's node ends the run anyway.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nnps.core.config import TrainConfig
from nnps.core.part_rows import PartRows
from nnps.core.parts import Part
from nnps.core.steps import ShardWorker


@ray.remote(num_cpus=0)
class TrainingData:
    def __init__(self) -> None:
        self._refs: list[ray.ObjectRef] = []

    def hold(self, refs: list[ray.ObjectRef]) -> bool:
        """Keep the references (passed inside a list, so Ray hands them over unresolved)."""
        self._refs = refs
        return True

    def refs(self) -> list[ray.ObjectRef]:
        return self._refs


def share(arrays: Sequence[np.ndarray]) -> tuple[str, ray.actor.ActorHandle]:
    """Put `arrays` (x_train, y_train, x_test, y_test) in the object store once and start
    their holder; returns its name, for the workers, and its handle, to kill with the run."""
    name = f"nnps-data-{uuid.uuid4().hex[:16]}"
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    holder = TrainingData.options(name=name, scheduling_strategy=here).remote()
    ray.get(holder.hold.remote([ray.put(a) for a in arrays]))
    return name, holder


def fetch(name: str) -> list[np.ndarray]:
    """The arrays held under `name`, mapped zero-copy and read-only from this node's store."""
    return ray.get(ray.get(ray.get_actor(name).refs.remote()))


@dataclass
class PartsSource:
    """A --partitioned worker's data: its own parts of the table (cluster/parted.py), read by
    the worker itself; the run's {network, info, route} from the holder named `holder` once
    the driver has combined every worker's summary."""

    config: TrainConfig
    features: list[str]
    parts: list[Part]
    first_rows: list[int]
    holder: str
    me: int
    rows: PartRows | None = field(default=None, repr=False)  # as read, until scaled

    def scan(self) -> dict[str, Any]:
        """Read the parts (again, if a restarted worker had them); their summary for the driver."""
        self.rows = PartRows.read(self.config, self.features, self.parts, self.first_rows)
        return self.rows.summary()

    def shard_worker(self) -> ShardWorker:
        """The shard computations over these rows, scaled for the run (read first if they are
        not: a worker Ray restarted)."""
        rows = self.rows or PartRows.read(self.config, self.features, self.parts, self.first_rows)
        self.rows = None  # scaled in place from here: never summed again
        held = fetch(self.holder)[0]
        return rows.shard_worker(held["network"], held["info"], held["route"], self.me)
