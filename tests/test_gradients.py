"""Backprop against an independent oracle: central finite differences in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnps.core.costs import cost_sum
from nnps.core.network import N_STATS, Network, initial_params

COMBOS = list(itertools.product(["sigmoid", "relu", "tanh"], ["sigmoid", "softmax"], ["quadratic", "cross-entropy"]))
COMBOS += [(hidden, "linear", "quadratic") for hidden in ("sigmoid", "relu", "tanh")]  # a regression's


def total_cost(net: Network, params: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
    z, a = net.last_layer(params, x)
    y = labels if labels.ndim == 2 else np.eye(net.sizes[-1])[labels]  # targets as they are; classes one-hot
    return cost_sum(net.cost, net.output, z, a, y)


@pytest.mark.parametrize("activation,output,cost", COMBOS)
def test_backprop_matches_central_differences(activation: str, output: str, cost: str) -> None:
    rng = np.random.default_rng(7)
    net = Network((5, 4, 3, 4), activation, output, cost, "float64")
    params = initial_params(net, "normal", seed=3) * 0.7
    x = rng.random((6, 5))
    labels = rng.standard_normal((6, 4)) if output == "linear" else rng.integers(0, 4, 6)
    grad = np.empty(net.layout.size)
    net.gradient_sums(params, x, labels, grad)
    numeric = np.empty_like(grad)
    h = 1e-6
    for i in range(params.size):
        p_plus, p_minus = params.copy(), params.copy()
        p_plus[i] += h
        p_minus[i] -= h
        numeric[i] = (total_cost(net, p_plus, x, labels) - total_cost(net, p_minus, x, labels)) / (2 * h)
    rel = np.linalg.norm(grad - numeric) / max(np.linalg.norm(grad) + np.linalg.norm(numeric), 1e-300)
    assert rel < 1e-6, f"relative error {rel:.2e}"


def per_example_reference(net: Network, params: np.ndarray, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The seed's equations one example at a time, column vectors, as Nielsen writes them
    (sigmoid, quadratic): an independent implementation of BP1-BP4."""
    ws, bs = net.layout.views(params)
    total = np.zeros(net.layout.size)
    gw, gb = net.layout.views(total)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for xi, yi in zip(x, labels):
        a, activations, zs = xi[:, None], [xi[:, None]], []
        for w, b in zip(ws, bs):
            z = w @ a + b[:, None]
            zs.append(z)
            a = sig(z)
            activations.append(a)
        y = np.zeros((net.sizes[-1], 1))
        y[yi] = 1
        delta = (activations[-1] - y) * sig(zs[-1]) * (1 - sig(zs[-1]))
        for l in range(len(ws) - 1, -1, -1):
            gb[l] += delta[:, 0]
            gw[l] += delta @ activations[l].T
            if l:
                delta = (ws[l].T @ delta) * sig(zs[l - 1]) * (1 - sig(zs[l - 1]))
    return total


def test_vectorized_sums_equal_per_example_loop() -> None:
    rng = np.random.default_rng(1)
    net = Network((8, 6, 5, 3), "sigmoid", "sigmoid", "quadratic", "float64")
    params = initial_params(net, "normal", seed=1)
    x, labels = rng.random((9, 8)), rng.integers(0, 3, 9)
    grad = np.empty(net.layout.size)
    net.gradient_sums(params, x, labels, grad)
    np.testing.assert_allclose(grad, per_example_reference(net, params, x, labels), rtol=1e-12, atol=1e-12)


def test_shard_sums_add_up_to_batch_sum(tiny) -> None:
    from nnps.core.steps import ShardWorker

    net = Network((36, 7, 10), "tanh", "softmax", "cross-entropy", "float64")
    params = initial_params(net, "scaled", seed=2)
    w = ShardWorker(net, tiny.x_train, tiny.y_train, tiny.x_test, tiny.y_test)
    idx = np.arange(50)
    whole = w.gradient_sums(params, idx)
    parts = w.gradient_sums(params, idx[:17]) + w.gradient_sums(params, idx[17:])
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)
    assert whole[-1] == 50 and len(whole) == net.layout.size + N_STATS


def test_layout_views_share_memory_and_shapes() -> None:
    net = Network((784, 30, 10))
    params = np.arange(net.layout.size, dtype=np.float32)
    ws, bs = net.layout.views(params)
    assert [w.shape for w in ws] == [(30, 784), (10, 30)] and [b.shape for b in bs] == [(30,), (10,)]
    assert net.layout.size == 784 * 30 + 30 + 30 * 10 + 10
    ws[1][0, 0] = -1
    assert params[784 * 30 + 30] == -1  # a view, not a copy


def test_scaled_init_has_the_promised_variance() -> None:
    net = Network((2000, 500, 10), "relu")
    ws, bs = net.layout.views(initial_params(net, "scaled", seed=0))
    assert abs(ws[0].var() - 2 / 2000) < 0.05 * 2 / 2000
    assert not bs[0].any()
