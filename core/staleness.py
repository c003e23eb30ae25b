"""Bounded-staleness and asynchronous updates: the rule, and the gate that keeps it.

An update computed on version d and applied as version u + 1 has staleness u - d, the updates
applied meanwhile. `Gate` decides when a free worker may be sent a step: at once in `async`; in
`bounded` with TAU, when V + |O| - 1 - d_min <= TAU (V: the version now; O: the tasks out, the
new one included; d_min: their oldest version). The definitions, the loop (core/steps.py's
`run_updates`) and the record (core/record.py): docs/architecture.md, "Bounded staleness and
asynchronous updates".
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
