from __future__ import annotations

import numpy as np

from nnps.core.sampler import Sampler, split


def test_each_epoch_visits_every_example_once_in_consecutive_batches() -> None:
    s = Sampler(23, 5, seed=4)
    assert s.steps_per_epoch == 5
    for epoch in range(3):
        batches = [s.batch(epoch * 5 + k) for k in range(5)]
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.concatenate(batches), s.order(epoch))
        assert sorted(np.concatenate(batches)) == list(range(23))
    assert not np.array_equal(s.order(0), s.order(1))


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    a, b = Sampler(100, 7, seed=9), Sampler(100, 7, seed=9)
    for step in (40, 3, 15, 15, 0):  # any order of access
        np.testing.assert_array_equal(a.batch(step), Sampler(100, 7, 9).batch(step))
    np.testing.assert_array_equal(a.batch(20), b.batch(20))
    assert not np.array_equal(Sampler(100, 7, seed=10).batch(0), a.batch(0))


def test_split_is_near_equal_and_ordered() -> None:
    parts = split(np.arange(10), 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(10))
    assert len(split(np.arange(2), 4)) == 2  # no empty shards
