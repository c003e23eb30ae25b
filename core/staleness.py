"""Bounded-staleness and asynchronous updates: the rule, and the gate that keeps it.

In `--consistency sync` a step is one global mini-batch split over k workers, applied once
every shard's sums are in. In `bounded` and `async` each worker's reply is an update of
its own: the server hands out step numbers t = 0, 1, 2, ... (step t's mini-batch is
`Sampler.batch(t)`, the whole `--batch-size`), a worker computes the gradient sums of that
batch on the parameters it was sent, version d (the number of updates applied when it
was sent), and the server applies the reply as one optimizer step the moment it arrives,
making version u + 1. Its staleness is u - d, the updates applied meanwhile.

`Gate` bounds it: `async` sends a free worker work at once; `bounded` with TAU sends it
only if no reply could then be applied more than TAU versions after its own: with O the
tasks out (the new one included) and d_min the oldest version among them, the worst case
is every other task of O applied first, so a task may start when

    V + |O| - 1 - d_min <= TAU                 (V: the version now)

TAU = 0 is one task at a time; TAU >= k - 1 lets k workers start on the same version. A
worker that finishes early waits (no reply is ever dropped for being stale).

The loop that applies the updates is core/steps.py's `run_updates`; the record of which
update used which batch and version, and its replay, core/record.py.
"""

from __future__ import annotations


class Gate:
    """Which tasks are out (worker -> (t, d)) and whether another may start."""

    def __init__(self, tau: int | None) -> None:
        self.tau = tau  # None: async, no bound
        self.out: dict[int, tuple[int, int]] = {}

    def may_start(self, version: int) -> bool:
        if self.tau is None or not self.out:
            return True
        oldest = min(d for _, d in self.out.values())
        return version + len(self.out) - oldest <= self.tau  # |O| - 1 = len(self.out) with the new one

    def start(self, worker: int, step: int, version: int) -> None:
        self.out[worker] = (step, version)

    def finish(self, worker: int) -> tuple[int, int]:
        return self.out.pop(worker)
