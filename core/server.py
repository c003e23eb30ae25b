"""The parameter server's job as a plain object: sum, average, step.

`Server.apply(*replies)` adds the workers' replies for ONE mini-batch (each the flat vector of
`ShardWorker.gradient_sums`), divides by the mini-batch size m and takes one optimizer step;
adding sums and dividing once is why k workers equal serial SGD. It also keeps the epoch's
running train cost and accuracy, and a NaN or infinite cost freezes the parameters and records
the step, so the driver can stop with the last good checkpoint intact.

It runs on one thread: for a wide network the step is memory-bound, and threads made no
difference to a whole step (docs/results/log-2026-11-28_2026-12-02.md, "Beyond one machine").
`nnps.cluster.ParameterServer` is this class behind a Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.network import Network
from nnps.core.optimizers import Optimizer, Schedule

Array = np.ndarray

@dataclass
class Snapshot:
    """Everything a server holds; enough to rebuild one exactly."""

    params: Array
    opt_state: dict[str, Array] = field(default_factory=dict)
    step: int = 0  # optimizer steps applied so far
    epoch_sums: tuple[float, int, int] = (0.0, 0, 0)  # (cost, correct, examples) of the epoch in progress
    diverged_at: int | None = None  # the step whose cost was not finite
    bad_cost: float | None = None
    draws: tuple[int, ...] = ()  # --partitioned bounded/async: batches each worker has drawn (core/parts.py)


def make_optimizer(config: TrainConfig, network: Network, steps_per_epoch: int) -> Optimizer:
    # The cosine schedule spans the configured epochs; --steps only stops the run early,
    # so a run stopped at step t and resumed follows the same learning rates.
    total = config.epochs * steps_per_epoch
    schedule = Schedule(config.schedule, config.lr_step_epochs, config.lr_gamma, steps_per_epoch, total)
    mask = network.layout.weight_mask(network.np_dtype) if config.l2 else None
    return Optimizer(config.optimizer, config.lr, schedule, momentum=config.momentum, l2=config.l2, decay_mask=mask)


class Server:
    def __init__(self, config: TrainConfig, network: Network, snapshot: Snapshot, steps_per_epoch: int) -> None:
        self.network = network
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = make_optimizer(config, network, steps_per_epoch)
        self._total: Array | None = None  # the replies' sum, reused every step
        self.restore(snapshot)

    def restore(self, s: Snapshot) -> None:
        self.params = s.params.copy()
        self.optimizer.init_state(self.params)
        for name, state in s.opt_state.items():
            self.optimizer.state[name][...] = state
        self.step, self.diverged_at, self.bad_cost = s.step, s.diverged_at, s.bad_cost
        self.cost_sum, self.correct, self.examples = s.epoch_sums

    def apply(self, *replies: Array) -> Array:
        """Apply one step from the workers' replies; returns the new parameters."""
        if self.diverged_at is not None:
            return self.params  # frozen at the last good values
        # (P + 3,), added left to right so the order is fixed. A lone writeable reply (the
        # in-process channel's buffer, rewritten whole each step) is used as is; Ray's are read-only, so
        # they are summed into a buffer kept across steps: a fresh one each step would cost
        # the server more page faults than additions for a wide network.
        if len(replies) == 1 and replies[0].flags.writeable:
            total = replies[0]
        else:
            if self._total is None:
                self._total = np.empty_like(replies[0])
            total = self._total
        P = self.network.layout.size
        add_up(total, replies, slice(P, None))
        cost, correct, m = (float(v) for v in total[P:])
        if not np.isfinite(cost):
            self.diverged_at, self.bad_cost = self.step, cost
            return self.params
        if self.step % self.steps_per_epoch == 0:  # first step of an epoch: new running sums
            self.cost_sum, self.correct, self.examples = 0.0, 0, 0

        add_up(total, replies, slice(0, P))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as the next step's cost
            self.optimizer.step(self.params, total[:P], int(m), self.step)  # divides the sum by m
        self.step += 1
        self.cost_sum += cost
        self.correct += int(correct)
        self.examples += int(m)
        return self.params

    def snapshot(self) -> Snapshot:
        return Snapshot(self.params.copy(), {k: v.copy() for k, v in self.optimizer.state.items()}, self.step,
                        (self.cost_sum, self.correct, self.examples), self.diverged_at, self.bad_cost)  # fmt: skip


def add_up(total: Array, replies: tuple[Array, ...], part: slice) -> None:
    """total[part] = replies[0][part] + replies[1][part] + ..., left to right."""
    if replies[0] is total:
        return  # a lone reply that is its own sum
    out = total[part]
    if len(replies) == 1:
        np.copyto(out, replies[0][part])
        return
    np.add(replies[0][part], replies[1][part], out=out)
    for reply in replies[2:]:
        out += reply[part]
