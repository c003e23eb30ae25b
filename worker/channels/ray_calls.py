"""The `ray` channel: a Ray actor call per worker, the last of every chain.

Parameters larger than `inline_bytes` (cluster/connect.py) are put in the object store once per
step, which the workers on a node share, not once per call; the replies come back through it. It
does not break as the others do: Ray restarts a dead worker and retries the call (`gradient_sums`
is a pure function of its arguments), and what Ray cannot retry goes up as Ray's own error, to the
executor. docs/architecture.md, "Which channel runs where".
"""

from __future__ import annotations

import numpy as np
import ray

from nnps.core.steps import StepChannel

Array = np.ndarray


class RayCalls(StepChannel):
    name = "ray"

    def __init__(self, workers: list, inline_bytes: int) -> None:
        self.workers, self.inline_bytes = workers, inline_bytes
        self.pending: dict = {}  # ObjectRef -> worker, for send/receive

    def open(self, params: Array) -> None:
        return None

    def step(self, params: Array, shards: list[Array]) -> list[Array]:
        """Every call of the step reads the same parameters: put in the object store once."""
        arg = ray.put(params) if params.nbytes > self.inline_bytes else params
        return ray.get([w.gradient_sums.remote(arg, s) for w, s in zip(self.workers, shards)])

    def send(self, i: int, params: Array, indices: Array) -> None:
        arg = ray.put(params) if params.nbytes > self.inline_bytes else params  # copied now, either way
        self.pending[self.workers[i].gradient_sums.remote(arg, indices)] = i

    def receive(self) -> tuple[int, Array]:
        (ref,), _ = ray.wait(list(self.pending), num_returns=1)
        return self.pending.pop(ref), ray.get(ref)

    def close(self) -> None:
        self.pending.clear()
