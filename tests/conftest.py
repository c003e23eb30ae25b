"""Shared fixtures: the real MNIST subset the repository carries (tests/data), and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnps.core.datasets import Dataset, load_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # what the suite reads; nothing outside the clone
MNIST_10K = DATA / "mnist-10k"


@pytest.fixture(scope="session")
def mnist10k() -> Dataset:
    return load_path(MNIST_10K)


def make_tiny(n_train: int = 240, n_test: int = 60, side: int = 6, seed: int = 0) -> Dataset:
    """Separable-ish random images: class c has brighter pixels in band c (mod side)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 90, (n, side, side)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, c % side, :] += 120
            x[i, :, (c // side) % side] += 40
        return x.reshape(n, -1), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset("tiny", x_train, y_train, x_test, y_test, (side, side))


@pytest.fixture
def tiny() -> Dataset:
    return make_tiny()


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    ds = make_tiny()
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=ds.x_train.reshape(-1, 6, 6), y_train=ds.y_train,
             x_test=ds.x_test.reshape(-1, 6, 6), y_test=ds.y_test)  # fmt: skip
    return path
