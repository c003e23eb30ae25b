from __future__ import annotations

import numpy as np
import pytest

from nnps.core.sampler import Sampler, split_batch


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
    parts = split_batch(np.arange(10), 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(10))
    assert len(split_batch(np.arange(2), 4)) == 2  # no empty shards


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000, 4097])
def test_the_stream_sampler_visits_every_row_once_an_epoch(n: int) -> None:
    from nnps.core.sampler import StreamSampler

    s = StreamSampler(n, 7, seed=11)
    for epoch in (0, 1):
        seen = np.concatenate([s.batch(epoch * s.steps_per_epoch + k) for k in range(s.steps_per_epoch)])
        assert sorted(seen.tolist()) == list(range(n))
    assert np.array_equal(StreamSampler(n, 7, seed=11).batch(3 % s.steps_per_epoch), s.batch(3 % s.steps_per_epoch))


def test_the_stream_sampler_orders_look_uniform() -> None:
    """Over 400 epochs of 50 rows, each row lands at each half of the order about half the time."""
    from nnps.core.sampler import StreamSampler

    s = StreamSampler(50, 50, seed=2)
    first_half = np.zeros(50)
    for epoch in range(400):
        first_half[s.order(epoch)[:25]] += 1
    assert np.all(np.abs(first_half / 400 - 0.5) < 0.12), first_half
    assert len({tuple(s.order(e)[:5]) for e in range(400)}) > 390  # epochs differ
