"""What a network's outputs score on a split: accuracy and a confusion matrix for classes,
MSE, MAE and R^2 for a regression's targets.

Evaluation runs in chunks and on several workers, so each worker returns SUMS in one flat
vector that adds across chunks and workers (`ShardWorker.evaluate`), and `unpack` turns
the total into scores once:

    classes:  [sum C_x, confusion counts (n_L x n_L)]                 # (1 + n_L^2,)
    targets:  [sum C_x, m, SSE_t, SAE_t, sum y_t, sum y_t^2]           # (2 + 4 T,), t = 1..T

A regression's targets are held standardized (tables.py); its MSE and MAE are given in the
targets' own units (times each target's deviation), averaged over the targets, and its R^2
is 1 - SSE_t / SS_tot_t averaged over the targets, as scikit-learn's r2_score does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nnps.core.network import Network

Array = np.ndarray


def evaluation_size(network: Network) -> int:
    """Length of the evaluation vector for this network's outputs."""
    n = network.sizes[-1]
    return 2 + 4 * n if network.regression else 1 + n * n


def target_sums(a: Array, y: Array) -> Array:
    """[SSE_t, SAE_t, sum y_t, sum y_t^2] of a chunk, (4 T,); a and y (m, T)."""
    e = a - y
    return np.concatenate([(e * e).sum(axis=0), np.abs(e).sum(axis=0), y.sum(axis=0), (y * y).sum(axis=0)])


@dataclass(frozen=True)
class Evaluation:
    """Scores of one split. `confusion` for classes; `mse`, `mae`, `r2` for targets."""

    examples: int
    cost: float  # mean C_x
    confusion: Array | None = None  # counts[true, predicted]
    mse: float | None = None
    mae: float | None = None
    r2: float | None = None

    @property
    def accuracy(self) -> float | None:
        return None if self.confusion is None else float(np.trace(self.confusion)) / max(self.examples, 1)

    def scores(self, prefix: str = "test") -> dict[str, float]:
        """{prefix_cost, prefix_accuracy} or {prefix_cost, prefix_mse, prefix_mae, prefix_r2}: a metrics row's."""
        named = {"cost": self.cost, "accuracy": self.accuracy, "mse": self.mse, "mae": self.mae, "r2": self.r2}
        return {f"{prefix}_{k}": v for k, v in named.items() if v is not None}


def unpack(total: Array, network: Network, target_std: tuple[float, ...] | None = None) -> Evaluation:
    """The Evaluation of a summed evaluation vector (`target_std`: each target's deviation,
    to give MSE and MAE in its units; None: the targets were not standardized)."""
    n = network.sizes[-1]
    if not network.regression:
        confusion = total[1:].reshape(n, n).astype(np.int64)
        count = int(confusion.sum())
        return Evaluation(count, float(total[0]) / max(count, 1), confusion)
    m = max(int(total[1]), 1)
    sse, sae, sy, syy = total[2:].reshape(4, n)
    scale = np.ones(n) if target_std is None else np.asarray(target_std, np.float64)
    total_ss = syy - sy * sy / m
    # A constant target has no variance to explain: R^2 is 1 if it is predicted exactly, else 0
    # (scikit-learn's force_finite), never NaN, which JSON cannot carry.
    r2 = np.where(total_ss > 0, 1.0 - sse / np.where(total_ss > 0, total_ss, 1.0), np.where(sse == 0, 1.0, 0.0))
    return Evaluation(int(total[1]), float(total[0]) / m, mse=float(np.mean(sse * scale**2) / m),
                      mae=float(np.mean(sae * scale) / m), r2=float(np.mean(r2)))  # fmt: skip


def describe(e: Evaluation) -> dict[str, Any]:
    """An Evaluation as JSON (nnps evaluate --json)."""
    d: dict[str, Any] = {"examples": e.examples, "cost": e.cost}
    if e.confusion is not None:
        d.update(accuracy=e.accuracy, confusion=e.confusion.tolist())
    else:
        d.update(mse=e.mse, mae=e.mae, r2=e.r2)
    return d
