"""Live progress as log lines: how `nnps status` follows a job through Ray's HTTP API.

A training run started with `--log-progress` prints, about once a second and at every
epoch end, one line `NNPS_PROGRESS {json}` to stdout. Ray keeps a job's stdout as its
log, which the dashboard serves over HTTP; `nnps status` reads the last such line. So
the only address a user needs is the dashboard's.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

MARKER = "NNPS_PROGRESS "


class Reporter(Protocol):
    """What the training loop tells as it goes (core/training.py): `LineReporter` below, cli/progress.py's
    RichReporter."""

    def run_start(self, total_steps: int, steps_per_epoch: int, start_step: int, epochs: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int, done: int) -> None: ...
    def advance(self, steps: int, cost: float, accuracy: float, examples_per_s: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...


def parse_last(log: str) -> dict[str, Any] | None:
    """The last progress record in a log, or None."""
    for line in reversed(log.splitlines()):
        if line.startswith(MARKER):
            try:
                return json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                continue  # a line cut off mid-write; an older one will do
    return None


class LineReporter:
    """A training Reporter printing progress records (for jobs and other non-terminals)."""

    def __init__(self, every_s: float = 1.0, out: Any = None) -> None:
        self.every_s, self.out = every_s, out or sys.stdout
        self.state: dict[str, Any] = {}
        self.t0 = time.time()
        self.last = 0.0

    def run_start(self, total_steps: int, steps_per_epoch: int, start_step: int, epochs: int) -> None:
        self.state.update(total_steps=total_steps, steps_per_epoch=steps_per_epoch, step=start_step, epochs=epochs)

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        self.state["epoch"] = epoch

    def advance(self, steps: int, cost: float, accuracy: float, examples_per_s: float) -> None:
        self.state.update(step=self.state.get("step", 0) + steps, train_cost=cost, examples_per_s=examples_per_s)
        if accuracy == accuracy:  # NaN: a regression's, which has no accuracy
            self.state["train_accuracy"] = accuracy
        if time.time() - self.last >= self.every_s:
            self.emit()

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.state.update({k: v for k, v in row.items() if k.startswith("test_")}, step=row["step"],
                          epochs_done=row["epoch"] - (1 if row.get("partial") else 0))  # fmt: skip
        for key in ("channels", "staleness"):  # what carried the steps, and a bounded or async run's mode
            if key in row:
                self.state[key] = row[key]
        self.emit()

    def emit(self) -> None:
        self.last = time.time()
        record = dict(self.state, elapsed=round(self.last - self.t0, 3), time=round(self.last, 3))
        self.out.write(MARKER + json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()
