"""Activation functions sigma and their derivatives sigma'.

Each hidden activation is a pair of functions of z (the weighted input, shape (m, n_l)):
`value(z)` gives a = sigma(z) and `prime(z, a)` gives sigma'(z), allowed to use the `a`
already computed in the forward pass (sigmoid' = a (1 - a), tanh' = 1 - a^2), which saves
an exp per element in backprop.

Softmax is an output-only activation: its Jacobian is not diagonal, so it has no
element-wise sigma'; `network.output_error` handles it (see BP1 there). The linear output
(a^L = z^L) is a regression's: with the quadratic cost, BP1 is delta^L = a - y.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Array = np.ndarray


def sigmoid(z: Array) -> Array:
    # 1 / (1 + e^-z), written via tanh: one transcendental, no overflow warning for large |z|.
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


def sigmoid_prime(z: Array, a: Array) -> Array:
    return a * (1.0 - a)


def relu(z: Array) -> Array:
    return np.maximum(z, 0.0)


def relu_prime(z: Array, a: Array) -> Array:
    # The kink at 0 gets derivative 0, the usual subgradient choice. A boolean mask
    # multiplies as 0/1 without a float copy.
    return z > 0.0


def tanh(z: Array) -> Array:
    return np.tanh(z)


def tanh_prime(z: Array, a: Array) -> Array:
    return 1.0 - a * a


def linear(z: Array) -> Array:
    # A regression's output layer: a^L = z^L, any real number.
    return z


def softmax(z: Array) -> Array:
    # Subtracting the row max changes nothing mathematically and keeps exp from overflowing.
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


@dataclass(frozen=True)
class Activation:
    name: str
    value: Callable[[Array], Array]
    prime: Callable[[Array, Array], Array] | None  # None: BP1 has its own form (network.output_error)


HIDDEN: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_prime),
    "relu": Activation("relu", relu, relu_prime),
    "tanh": Activation("tanh", tanh, tanh_prime),
}

OUTPUT: dict[str, Activation] = {
    "sigmoid": HIDDEN["sigmoid"],
    "softmax": Activation("softmax", softmax, None),
    "linear": Activation("linear", linear, None),  # regression only: sigma' = 1, BP1 is delta^L = a - y
}
