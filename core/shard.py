"""The worker's job as a plain object: gradient sums and evaluation over shards.

A `ShardWorker` holds the training and test images (uint8, read-only: with Ray they are
zero-copy views into the object store, shared by every worker on a node) and, given the
current parameters and a shard's indices, returns ONE flat vector:

    [sum_x dC_x/dW^1, sum_x dC_x/db^1, ..., sum_x C_x, n_correct, m]      # (P + 3,)

`nnps.worker.GradientWorker` is this class behind a Ray actor; the in-process path
(`--workers 0`) calls it directly, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nnps.core.costs import cost_sum
from nnps.core.metrics import evaluation_size, target_sums
from nnps.core.network import N_STATS, Network

Array = np.ndarray
EVAL_CHUNK = 5000  # rows per forward pass when evaluating: bounds memory for wide nets


class ShardWorker:
    def __init__(self, network: Network, x_train: Array, y_train: Array, x_test: Array, y_test: Array) -> None:
        self.network = network
        self.data = {"train": (x_train, y_train), "test": (x_test, y_test)}
        # uint8 images to [0, 1]; a table's rows come standardized. A dtype scalar keeps the product in dtype.
        self.scale = network.np_dtype.type(1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0)
        # A worker holding only its parts of a table (core/part_rows.py): global training
        # indices to its own rows; None: it holds the whole training set
        self.to_local: Callable[[Array], Array] | None = None

    def gradient_sums(self, params: Array, indices: Array, out: Array | None = None) -> Array:
        x, labels = self.data["train"]
        P = self.network.layout.size
        if out is None:
            out = np.empty(P + N_STATS, dtype=self.network.np_dtype)
        rows = indices if self.to_local is None else self.to_local(indices)
        shard = x[rows] * self.scale  # (m, n_0), scaled where it is used
        # A diverging run overflows; the server sees the non-finite cost and stops it.
        with np.errstate(over="ignore", invalid="ignore"):
            cost, correct = self.network.gradient_sums(params, shard, labels[rows], out[:P])
        out[P:] = (cost, correct, len(indices))
        return out

    def evaluate(self, params: Array, split: str = "test", lo: int = 0, hi: int | None = None) -> Array:
        """Sums over rows lo:hi of a split that add across chunks and workers (core/metrics.py):
        [sum of C_x, confusion matrix (n_L x n_L) flattened], or a regression's target sums."""
        x, labels = self.data[split]
        hi = len(labels) if hi is None else hi
        net = self.network
        total = np.zeros(evaluation_size(net), dtype=np.float64)
        for start in range(lo, hi, EVAL_CHUNK):
            stop = min(start + EVAL_CHUNK, hi)
            with np.errstate(over="ignore", invalid="ignore"):
                if net.regression:
                    z, a = net.last_layer(params, x[start:stop] * self.scale)
                    y = net.desired(labels[start:stop])
                    total[0] += cost_sum(net.cost, net.output, z, a, y)
                    total[1] += stop - start
                    total[2:] += target_sums(a.astype(np.float64), y.astype(np.float64))
                    continue
                cost, confusion = net.cost_and_confusion(params, x[start:stop] * self.scale,
                                                         labels[start:stop].astype(np.intp))  # fmt: skip
            total[0] += cost
            total[1:] += confusion.ravel()
        return total
