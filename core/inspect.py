"""What is inside a trained network, as numbers: every layer for one input, the shards of a
mini-batch, the test set's mistakes.

Everything comes from the code that trains: `Network.gradient_sums` with a `trace` (the
same forward pass and the same BP1-BP4 lines, asked to keep their intermediate arrays),
`ShardWorker` for the shard sums the workers compute, `Network.last_layer` for the test
set. Nothing here re-derives a forward or backward pass. The pictures are drawn elsewhere
(`nnps inspect`, `nnps ui`); this module has no plotting and no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnps.core.network import Network
from nnps.core.sampler import Sampler, split_batch
from nnps.core.steps import ShardWorker

Array = np.ndarray


def side_of(n: int) -> tuple[int, int]:
    """The (rows, cols) to draw n inputs as an image: square if n is a square, else one row."""
    s = int(round(n**0.5))
    return (s, s) if s * s == n else (1, n)


@dataclass
class Inside:
    """One input through the network: l = 1..L are list positions 0..L-1."""

    pixels: Array  # (n_0,) the input as stored: uint8 pixels, or a table's standardized row
    label: Array | int  # the true label: a class (delta^L against its one-hot target), or a regression's targets
    zs: list[Array]  # z^l, (n_l,)
    activations: list[Array]  # a^0 = x, a^1 .. a^L, (n_l,)
    deltas: list[Array]  # delta^l: BP1 for l = L, BP2 below, (n_l,)
    nabla_b: list[Array]  # dC/db^l = delta^l (BP3), (n_l,)
    nabla_w: list[Array]  # dC/dW^l = delta^l (a^{l-1})^T (BP4), (n_l, n_{l-1})
    cost: float  # C_x

    @property
    def output(self) -> Array:
        return self.activations[-1]

    @property
    def target(self) -> Array:
        """y: the one-hot target of a class, or a regression's targets as they are."""
        if isinstance(self.label, np.ndarray):
            return self.label.astype(self.output.dtype)
        y = np.zeros_like(self.output)
        y[self.label] = 1
        return y

    @property
    def prediction(self) -> int:
        return int(self.output.argmax())


def input_scale(network: Network, stored: Array) -> float:
    """What a worker multiplies stored inputs by: 1/255 for uint8 pixels, 1 for a table's rows."""
    return network.np_dtype.type(1.0 / 255.0 if stored.dtype == np.uint8 else 1.0)


def look_inside(network: Network, params: Array, pixels: Array, label: Array | int) -> Inside:
    """Forward and backward for one input (uint8 pixels or a table's standardized row, scaled
    as a worker scales a shard) against its label: a class, or a regression's targets (n_L,)."""
    x = pixels.reshape(1, -1) * input_scale(network, pixels)  # (1, n_0), as ShardWorker
    out = np.empty(network.layout.size, network.np_dtype)
    trace: dict[str, list[Array]] = {}
    labels = np.asarray(label).reshape(1, -1) if network.regression else np.array([label])
    cost, _ = network.gradient_sums(params, x, labels, out, trace=trace)
    nabla_w, nabla_b = network.layout.views(out)
    kept = np.asarray(label, dtype=np.float64).reshape(-1) if network.regression else int(label)
    return Inside(pixels.reshape(-1), kept, [z[0] for z in trace["zs"]], [a[0] for a in trace["activations"]],
                  [d[0] for d in trace["deltas"]], [b.copy() for b in nabla_b], [w.copy() for w in nabla_w],
                  float(cost))  # fmt: skip


def forward_one(network: Network, params: Array, pixels: Array) -> list[Array]:
    """a^0 .. a^L for one input (an image, or a table's standardized row): what `nnps ui` draws."""
    x = pixels.reshape(1, -1) * input_scale(network, pixels)
    _, activations = network.forward(params, x)
    return [a[0] for a in activations]


@dataclass
class ShardSums:
    """One mini-batch split over k shards as the workers get it: each shard's gradient sum,
    their total, and the whole batch's sum computed in one piece."""

    step: int
    shards: list[Array]  # the indices of each shard
    sums: list[Array]  # each shard's flat gradient sum, (P,)
    total: Array  # sum of the shards' sums, (P,)
    whole: Array  # the batch's gradient sum in one call, (P,)

    @property
    def max_difference(self) -> float:
        return float(np.max(np.abs(self.total - self.whole)))


def shard_sums(network: Network, params: Array, x_train: Array, y_train: Array, batch_size: int, k: int,
               seed: int = 0, step: int = 0) -> ShardSums:  # fmt: skip
    """Step `step`'s mini-batch of the run's sampler, split into k shards (core/sampler.split_batch)."""
    worker = ShardWorker(network, x_train, y_train, x_train[:0], y_train[:0])
    batch = Sampler(len(y_train), batch_size, seed).batch(step)
    P = network.layout.size
    shards = split_batch(batch, k)
    sums = [worker.gradient_sums(params, s)[:P].copy() for s in shards]
    whole = worker.gradient_sums(params, batch)[:P].copy()
    return ShardSums(step, shards, sums, np.sum(sums, axis=0), whole)


@dataclass
class Mistakes:
    confusion: Array  # (n_L, n_L) counts[true, predicted]
    predicted: Array  # (m,) per test image
    confidence: Array  # (m,) the output given to the predicted class
    worst: Array  # indices of the wrong predictions, most confident first


def outputs(network: Network, params: Array, x: Array, chunk: int = 5000) -> Array:
    """a^L over a split's stored inputs (m, n_0), in chunks as evaluation runs: (m, n_L)."""
    parts = [network.last_layer(params, x[lo : lo + chunk] * input_scale(network, x))[1] for lo in range(0, len(x), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, network.sizes[-1]))


def mistakes(network: Network, params: Array, x: Array, labels: Array, chunk: int = 5000) -> Mistakes:
    """Predictions over a split (in chunks, as evaluation runs), its confusion matrix, and its
    wrong answers ordered by how sure the network was of them."""
    a = outputs(network, params, x, chunk)
    predicted = a.argmax(axis=1)
    n = network.sizes[-1]
    confusion = np.bincount(labels.astype(np.int64) * n + predicted, minlength=n * n).reshape(n, n)
    confidence = a[np.arange(len(a)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    return Mistakes(confusion, predicted, confidence, wrong[np.argsort(-confidence[wrong], kind="stable")])
