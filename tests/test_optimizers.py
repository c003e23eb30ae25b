"""Optimizers and schedules against plain float64 reference formulas written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnps.core.optimizers import Optimizer, Schedule


def run(name: str, steps: int = 5, **kw) -> np.ndarray:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(6) for _ in range(steps)]
    params = np.linspace(-1, 1, 6)
    opt = Optimizer(name, 0.1, Schedule(), **kw)
    opt.init_state(params)
    for t, g in enumerate(grads):
        opt.step(params, g * 4.0, 4, t)  # the sum over 4 examples whose mean is g
    return params


def reference(name: str, steps: int = 5, mu: float = 0.9, l2: float = 0.0, mask=None) -> np.ndarray:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(6) for _ in range(steps)]
    w = list(np.linspace(-1, 1, 6))
    v = [0.0] * 6
    m = [0.0] * 6
    s = [0.0] * 6
    for t, g in enumerate(grads, start=1):
        for i in range(6):
            gi = g[i] + (l2 * w[i] * (mask[i] if mask is not None else 1))
            if name == "sgd":
                w[i] -= 0.1 * gi
            elif name == "momentum":
                v[i] = mu * v[i] - 0.1 * gi
                w[i] += v[i]
            elif name == "nesterov":  # look-ahead form: w += mu*v_new - eta*g
                v[i] = mu * v[i] - 0.1 * gi
                w[i] += mu * v[i] - 0.1 * gi
            else:
                m[i] = 0.9 * m[i] + 0.1 * gi
                s[i] = 0.999 * s[i] + 0.001 * gi * gi
                w[i] -= 0.1 * (m[i] / (1 - 0.9**t)) / (math.sqrt(s[i] / (1 - 0.999**t)) + 1e-8)
    return np.array(w)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_optimizer_matches_reference(name: str) -> None:
    np.testing.assert_allclose(run(name), reference(name), rtol=1e-12, atol=1e-14)


def test_l2_decays_weights_only() -> None:
    mask = np.array([1, 1, 1, 0, 0, 1.0])
    np.testing.assert_allclose(run("sgd", l2=0.5, decay_mask=mask), reference("sgd", l2=0.5, mask=mask), rtol=1e-12)


def test_schedules() -> None:
    step = Schedule("step", step_epochs=2, gamma=0.5, steps_per_epoch=10)
    assert [step.lr(1.0, t) for t in (0, 19, 20, 39, 40)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cos = Schedule("cosine", total_steps=100)
    assert cos.lr(2.0, 0) == 2.0 and cos.lr(2.0, 50) == pytest.approx(1.0) and cos.lr(2.0, 100) == pytest.approx(0.0)
    assert Schedule().lr(0.3, 12345) == 0.3
