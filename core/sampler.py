"""Which examples form each mini-batch: a pure function of (seed, step).

Epoch e visits the training set in the order of a permutation drawn from a generator
seeded with (seed, e); global mini-batches are consecutive slices of it, the last one
shorter when the batch size does not divide the set (as in Nielsen's `SGD`). Because
step t alone fixes its batch, a run resumed at step t sees exactly the batches an
uninterrupted run would: the sampler's position IS the step counter.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray

# Stream ids for np.random.SeedSequence: the initial weights and each epoch's order come
# from independent streams of the one user-facing seed.
INIT_STREAM = 0
ORDER_STREAM = 1


class Sampler:
    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"cannot sample from an empty training set (n={n})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = math.ceil(n / batch_size)
        self._epoch = -1
        self._order: Array = np.empty(0, dtype=np.int64)

    def order(self, epoch: int) -> Array:
        """The permutation of range(n) that epoch `epoch` (0-based) visits."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, ORDER_STREAM, epoch])
            self._order, self._epoch = rng.permutation(self.n), epoch
        return self._order

    def batch(self, step: int) -> Array:
        """Indices of the global mini-batch applied at `step` (0-based), int64."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]


def split(indices: Array, k: int) -> list[Array]:
    """Split a mini-batch into k near-equal consecutive shards (sizes differ by at most 1).
    Empty shards are dropped, so a batch of 3 over 4 workers uses 3 of them."""
    shards = np.array_split(indices, k)
    return [s for s in shards if len(s)]
