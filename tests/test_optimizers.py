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


@pytest.mark.parametrize("name,l2", [("sgd", 0.0), ("sgd", 1e-3), ("momentum", 0.0), ("nesterov", 1e-3), ("adam", 1e-3)])
def test_update_in_parts_on_threads_equals_one_pass(name: str, l2: float, monkeypatch) -> None:
    """The server's sum and update split over 3 threads (core/server.py) give the same
    parameters and optimizer state bit for bit as one pass: every rule is elementwise."""
    from nnps.core import server as server_module
    from nnps.core.config import TrainConfig
    from nnps.core.datasets import Dataset
    from nnps.core.server import Server, Snapshot
    from nnps.core.training import build_network

    monkeypatch.setattr(server_module, "PARALLEL_MIN", 0)  # 784-30-10 is below the real threshold
    x, y = np.zeros((2, 784), np.uint8), np.zeros(2, np.uint8)
    cfg = TrainConfig(data="x", hidden=(30,), optimizer=name, l2=l2, lr=0.1, dtype="float32")
    net = build_network(cfg, Dataset("x", x, y, x, y))
    rng = np.random.default_rng(1)
    start = Snapshot(rng.standard_normal(net.layout.size).astype(np.float32))
    steps = [[rng.standard_normal(net.layout.size + 3).astype(np.float32) for _ in range(3)] for _ in range(4)]
    for replies in steps:
        replies[0][-3:], replies[1][-3:], replies[2][-3:] = (1.0, 2, 10), (0.5, 3, 10), (0.25, 4, 12)
        for r in replies:
            r.flags.writeable = False  # as Ray hands them over
    servers = []
    for threads in (1, 3):
        server = Server(cfg, net, start, steps_per_epoch=100)
        server.threads = threads
        for replies in steps:
            server.apply(*replies)
        servers.append(server)
    one, parted = servers
    assert parted._pool_size == 3 and one._pool is None  # the parts did run on 3 threads
    assert np.array_equal(one.params, parted.params)
    for key in one.optimizer.state:
        assert np.array_equal(one.optimizer.state[key], parted.optimizer.state[key])
    assert (one.step, one.cost_sum, one.correct, one.examples) == (4, 7.0, 36, 128)
    assert (parted.step, parted.cost_sum, parted.correct, parted.examples) == (4, 7.0, 36, 128)


def test_split_range_covers_the_vector_in_cache_line_aligned_parts() -> None:
    from nnps.core.server import split_range

    parts = split_range(1_863_690, 4)
    assert [p.start for p in parts] == [0, 465_920, 931_840, 1_397_760]
    assert parts[-1].stop == 1_863_690 and all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    assert split_range(40, 4) == [slice(0, 16), slice(16, 40)]  # cut at 16-element lines; empty parts dropped
