"""Early stopping: end a run when its validation cost has not improved for PATIENCE epochs,
keeping the best epoch's weights as the run's result.

The state is a function of the run's metrics rows, so a resumed run decides exactly as
an uninterrupted one would. The best epoch's checkpoint is `best.npz` in the run
directory; at the end it becomes `final.npz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BEST = "best.npz"


@dataclass
class EarlyStopping:
    patience: int
    best_cost: float = math.inf
    best_epoch: int = 0
    epoch: int = 0

    @classmethod
    def from_rows(cls, patience: int, rows: list[dict[str, Any]]) -> "EarlyStopping":
        """The state after the epochs `rows` hold (a resume's starting point)."""
        stopper = cls(patience)
        for row in rows:
            if not row.get("partial"):
                stopper.update(row)
        return stopper

    def update(self, row: dict[str, Any]) -> bool:
        """Take an epoch's row; True if it is the best so far (its weights are to be kept)."""
        self.epoch = int(row["epoch"])
        if row["test_cost"] < self.best_cost:  # the validation split's cost, in a run that holds one out
            self.best_cost, self.best_epoch = float(row["test_cost"]), self.epoch
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.epoch - self.best_epoch >= self.patience
