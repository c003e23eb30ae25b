"""Cost functions C, summed over a shard of examples, and their gradient grad_a C.

- quadratic:     C_x = 1/2 ||a - y||^2, so grad_a C = a - y (the seed's derivation).
- cross-entropy: with a sigmoid output layer, the per-unit binary cross-entropy
                 C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)];
                 with a softmax output layer, the log-likelihood C_x = -sum_j y_j ln a_j.
                 For both, BP1 collapses to delta^L = a - y (network.output_error).

Values are computed from z^L, not from a^L, so that ln never sees an a that rounded to 0
or 1: ln sigmoid(z) = -softplus(-z), ln softmax(z) = z - logsumexp(z).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray

COSTS = ("quadratic", "cross-entropy")


def softplus(z: Array) -> Array:
    # ln(1 + e^z) without overflow: max(z, 0) + ln(1 + e^-|z|).
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def cost_sum(cost: str, output: str, z: Array, a: Array, y: Array) -> float:
    """Sum of C_x over the shard's examples. z, a, y: (m, n_L)."""
    if cost == "quadratic":
        d = a - y
        return 0.5 * float(np.vdot(d, d))
    if output == "sigmoid":
        # -[y ln a + (1-y) ln(1-a)] with ln a = -softplus(-z), ln(1-a) = -softplus(z)
        return float(np.sum(y * softplus(-z) + (1.0 - y) * softplus(z)))
    # softmax: -sum y (z - logsumexp z)
    zmax = z.max(axis=1, keepdims=True)
    logsumexp = zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
    return float(np.sum(y * (logsumexp - z)))


def grad_a(cost: str, a: Array, y: Array) -> Array:
    """grad_a C_x for each example, (m, n_L). Only BP1's general path needs it."""
    if cost == "quadratic":
        return a - y
    raise ValueError(f"grad_a is not used for cost {cost!r}: BP1 has a closed form")
