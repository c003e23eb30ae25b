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


def split_batch(indices: Array, k: int) -> list[Array]:
    """Split a mini-batch into k near-equal consecutive shards (sizes differ by at most 1).
    Empty shards are dropped, so a batch of 3 over 4 workers uses 3 of them."""
    shards = np.array_split(indices, k)
    return [s for s in shards if len(s)]


class StreamSampler(Sampler):
    """A Sampler in constant memory, for tables too large to hold a permutation of their rows
    (--partitioned): epoch e visits range(n) in the order of a keyed bijection (a 4-round
    Feistel network over the smallest even power of two >= n, walking the cycle back into
    range(n)), seeded by (seed, e). Each batch's indices are computed from their positions;
    no array of n indices is ever made."""

    ROUNDS = 4

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        super().__init__(n, batch_size, seed)
        self.half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # bits of each half: 4^half >= n
        self._keys: dict[int, Array] = {}

    def keys(self, epoch: int) -> Array:
        if epoch not in self._keys:
            self._keys = {epoch: np.random.default_rng([self.seed, ORDER_STREAM, epoch]).integers(
                0, 2**63, size=self.ROUNDS, dtype=np.uint64)}  # fmt: skip
        return self._keys[epoch]

    def permute(self, epoch: int, positions: Array) -> Array:
        """Where epoch `epoch`'s order puts `positions`: a bijection of range(n)."""
        x = positions.astype(np.uint64)
        out = x.copy()
        todo = np.ones(len(x), bool)
        while todo.any():  # cycle walking: at most 4n / n steps expected
            out[todo] = self._feistel(out[todo], self.keys(epoch))
            todo = out >= np.uint64(self.n)
        return out.astype(np.int64)

    def _feistel(self, x: Array, keys: Array) -> Array:
        h, mask = np.uint64(self.half), np.uint64((1 << self.half) - 1)
        left, right = x >> h, x & mask
        for key in keys:
            left, right = right, left ^ (mix64(right ^ key) & mask)
        return (left << h) | right

    def order(self, epoch: int) -> Array:
        return self.permute(epoch, np.arange(self.n))

    def batch(self, step: int) -> Array:
        epoch, k = divmod(step, self.steps_per_epoch)
        lo = k * self.batch_size
        return self.permute(epoch, np.arange(lo, min(lo + self.batch_size, self.n)))


def mix64(z: Array) -> Array:
    """splitmix64's finalizer, elementwise on uint64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sampler_for(n: int, batch_size: int, seed: int, streamed: bool) -> Sampler:
    """The run's sampler: a permutation per epoch held in memory, or (`streamed`: a
    --partitioned table) computed batch by batch in constant memory."""
    return StreamSampler(n, batch_size, seed) if streamed else Sampler(n, batch_size, seed)
