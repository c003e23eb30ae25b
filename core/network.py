"""The network: layer sizes, one flat parameter vector, forward pass and backprop.

Shapes follow the seed's notation with examples as ROWS, so a whole shard goes through
each layer as one matrix product (the seed's column-vector equations, transposed):

    z^l = a^{l-1} (W^l)^T + b^l     # (m, n_l): m examples, W^l is (n_l, n_{l-1})
    a^l = sigma(z^l)

All parameters live in ONE flat vector; `Layout.views` returns each layer's W^l and b^l as views
into it, and a gradient has the same layout, so summing, optimizer steps, transport and
checkpoints are single array operations. Backprop (BP1-BP4, labelled where computed) returns SUMS
over the shard, not means: the server adds its workers' sums and divides once by the mini-batch
size (docs/architecture.md, "Equivalence and faults").

Left out: convolutions, dropout, batch norm: nnps is about fully-connected nets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nnps.core.activations import HIDDEN, OUTPUT
from nnps.core.costs import cost_sum, grad_a

DTYPES = ("float32", "float64")  # what parameters, activations and gradients are held in

Array = np.ndarray

# A worker's reply is the gradient sums followed by these three numbers, so that one flat
# vector travels per worker per step: [nabla_w1, nabla_b1, ..., cost_sum, n_correct, m].
# A regression (linear output) has no correct predictions: n_correct is 0 there.
N_STATS = 3


@dataclass(frozen=True)
class Layout:
    """Where each W^l and b^l sits in the flat parameter vector."""

    sizes: tuple[int, ...]  # (n_0 inputs, n_1, ..., n_L outputs)

    @cached_property
    def offsets(self) -> list[tuple[int, int, int]]:
        """(start of W^l, start of b^l, end of b^l) for l = 1..L."""
        out, pos = [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            w_end = pos + n_out * n_in
            out.append((pos, w_end, w_end + n_out))
            pos = w_end + n_out
        return out

    @property
    def size(self) -> int:
        return self.offsets[-1][2]

    @property
    def widest_product(self) -> int:
        """max_l n_{l-1} * n_l: multiply-adds per example in the largest layer product."""
        return max(n_in * n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))

    def views(self, flat: Array) -> tuple[list[Array], list[Array]]:
        """Per-layer (W^l (n_l, n_{l-1}), b^l (n_l,)) views into `flat`: no copies."""
        ws, bs = [], []
        for (w0, b0, b1), n_in, n_out in zip(self.offsets, self.sizes[:-1], self.sizes[1:]):
            ws.append(flat[w0:b0].reshape(n_out, n_in))
            bs.append(flat[b0:b1])
        return ws, bs

    def weight_mask(self, dtype: np.dtype) -> Array:
        """1 on weights, 0 on biases: L2 decay applies to weights only (as in Nielsen's book)."""
        mask = np.zeros(self.size, dtype=dtype)
        for w0, b0, _ in self.offsets:
            mask[w0:b0] = 1
        return mask


@dataclass(frozen=True)
class Network:
    """The architecture: sizes, activations and cost. Parameters are passed in, not held,
    so the same Network serves a worker (read-only parameters) and the server."""

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output: str = "sigmoid"
    cost: str = "quadratic"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(n) < 1 for n in self.sizes):
            raise ValueError(f"sizes must be at least two positive layer widths, got {self.sizes!r}")
        if self.activation not in HIDDEN:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {sorted(HIDDEN)}")
        if self.output not in OUTPUT:
            raise ValueError(f"unknown output {self.output!r}; choose from {sorted(OUTPUT)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")

    @cached_property
    def layout(self) -> Layout:
        return Layout(tuple(int(n) for n in self.sizes))

    @cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def regression(self) -> bool:
        """A linear output layer: labels are targets (m, n_L) floats, not class indices."""
        return self.output == "linear"

    @cached_property
    def _eye(self) -> Array:
        # One-hot rows for the labels: y = eye[labels] is one gather per shard.
        return np.eye(self.sizes[-1], dtype=self.np_dtype)

    def desired(self, labels: Array) -> Array:
        """y, (m, n_L): class indices one-hot, or a regression's targets as they are."""
        if self.regression:
            return np.asarray(labels, dtype=self.np_dtype).reshape(len(labels), self.sizes[-1])
        return self._eye[labels]

    def forward(self, params: Array, x: Array) -> tuple[list[Array], list[Array]]:
        """Forward pass keeping every z^l and a^l for backprop. x: (m, n_0)."""
        ws, bs = self.layout.views(params)
        hidden, out = HIDDEN[self.activation].value, OUTPUT[self.output].value
        activations, zs = [x], []
        for l, (w, b) in enumerate(zip(ws, bs), start=1):
            z = activations[-1] @ w.T  # (m, n_l)
            z += b
            zs.append(z)
            activations.append(out(z) if l == len(ws) else hidden(z))
        return zs, activations

    def output_error(self, z: Array, a: Array, y: Array) -> Array:
        """BP1: delta^L = grad_a C (.) sigma'(z^L), (m, n_L)."""
        if self.cost == "cross-entropy":
            # sigmoid + binary CE, and softmax + log-likelihood: sigma' cancels the
            # 1/(a(1-a)) (resp. the softmax Jacobian) in grad_a C, leaving a - y.
            return a - y
        g = grad_a(self.cost, a, y)  # (m, n_L)
        if self.regression:  # linear output: sigma' = 1, so delta^L = a - y
            return g
        if self.output == "softmax":
            # Softmax's Jacobian is diag(a) - a a^T, so J^T g = a (.) (g - <g, a>).
            return a * (g - np.sum(g * a, axis=1, keepdims=True))
        return g * HIDDEN[self.output].prime(z, a)

    def gradient_sums(self, params: Array, x: Array, labels: Array, out: Array,
                      trace: dict[str, list[Array]] | None = None) -> tuple[float, int]:  # fmt: skip
        """Backprop over a shard: writes sum_x dC_x/dparams into `out` (flat, same layout
        as params) and returns (sum of C_x, number of correct predictions).

        x: (m, n_0), labels: (m,) class indices or (m, n_L) targets. `trace`, if given, receives the pass's
        own "zs", "activations" and "deltas" (delta^1 .. delta^L), for nnps inspect."""
        y = self.desired(labels)  # (m, n_L)
        zs, activations = self.forward(params, x)
        ws, _ = self.layout.views(params)
        nabla_w, nabla_b = self.layout.views(out)
        prime = HIDDEN[self.activation].prime
        delta = self.output_error(zs[-1], activations[-1], y)  # BP1, (m, n_L)
        if trace is not None:
            trace.update(zs=zs, activations=activations, deltas=[delta] * len(ws))
        for l in range(len(ws) - 1, -1, -1):  # layer l+1 of the book, 0-based here
            if trace is not None:
                trace["deltas"][l] = delta  # not written to below: BP2 makes a new array
            np.sum(delta, axis=0, out=nabla_b[l])  # BP3: dC/db^l = delta^l, (n_l,)
            np.matmul(delta.T, activations[l], out=nabla_w[l])  # BP4: delta^l (a^{l-1})^T, (n_l, n_{l-1})
            if l > 0:
                # BP2: delta^{l-1} = (delta^l W^l) (.) sigma'(z^{l-1}), (m, n_{l-1})
                delta = delta @ ws[l]
                delta *= prime(zs[l - 1], activations[l])
        a_out = activations[-1]
        correct = 0 if self.regression else int(np.count_nonzero(a_out.argmax(axis=1) == labels))
        return cost_sum(self.cost, self.output, zs[-1], a_out, y), correct

    def last_layer(self, params: Array, x: Array) -> tuple[Array, Array]:
        """(z^L, a^L) for x, each (m, n_L), without keeping the hidden layers."""
        ws, bs = self.layout.views(params)
        hidden, out = HIDDEN[self.activation].value, OUTPUT[self.output].value
        a = z = x
        for l, (w, b) in enumerate(zip(ws, bs), start=1):
            z = a @ w.T
            z += b
            a = out(z) if l == len(ws) else hidden(z)
        return z, a

    def cost_and_confusion(self, params: Array, x: Array, labels: Array) -> tuple[float, Array]:
        """(sum of C_x, confusion matrix counts[true, predicted]) over a chunk."""
        z, a = self.last_layer(params, x)
        n = self.sizes[-1]
        confusion = np.bincount(labels * n + a.argmax(axis=1), minlength=n * n).reshape(n, n)
        return cost_sum(self.cost, self.output, z, a, self._eye[labels]), confusion


def initial_params(network: Network, scheme: str, seed: int) -> Array:
    """A fresh flat parameter vector.

    normal: every weight and bias ~ N(0, 1), as in the seed and Nielsen's network.py.
    scaled: W^l ~ N(0, g / n_{l-1}) with g = 2 for relu (He) and 1 otherwise (LeCun/Xavier),
            biases 0: keeps z^l of order 1 however wide the layer, so deep or wide nets train.
    """
    from nnps.core.sampler import INIT_STREAM

    rng = np.random.default_rng([seed, INIT_STREAM])
    params = rng.standard_normal(network.layout.size).astype(network.np_dtype)
    if scheme == "scaled":
        ws, bs = network.layout.views(params)
        gain = 2.0 if network.activation == "relu" else 1.0
        for w, b in zip(ws, bs):
            w *= np.sqrt(gain / w.shape[1])
            b[...] = 0
    return params
