"""The cost model's arithmetic (core/costmodel.py), against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from nnps.core import costmodel
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.network import Network
from nnps.core.threads import worker_threads
from nnps.core.plan import build_network


def network(hidden: tuple[int, ...], dtype: str = "float32") -> Network:
    x, y = np.zeros((2, 784), np.uint8), np.zeros(2, np.uint8)
    return build_network(TrainConfig(data="x", hidden=hidden, dtype=dtype), Dataset("x", x, y, x, y))


def test_overhead_interpolates_between_measured_counts_and_extrapolates_beyond() -> None:
    measured = {1: {10: 1.0e-3}, 2: {10: 2.0e-3}, 8: {10: 5.0e-3}}
    assert costmodel.overhead_for(2, 10, measured) == 2.0e-3
    assert costmodel.overhead_for(5, 10, measured) == pytest.approx(2.0e-3 + 3.0e-3 * 3 / 6)
    assert costmodel.overhead_for(10, 10, measured) == pytest.approx(5.0e-3 + 2 * costmodel.EXTRA_PER_WORKER)


def test_overhead_follows_the_batch_in_log_steps_and_stays_flat_beyond() -> None:
    measured = {2: {10: 1.0e-3, 1000: 3.0e-3}, 4: {10: 2.0e-3}}
    assert costmodel.overhead_for(2, 100, measured) == pytest.approx(2.0e-3)  # halfway in log(batch)
    assert costmodel.overhead_for(2, 5, measured) == 1.0e-3 and costmodel.overhead_for(2, 10**5, measured) == 3.0e-3
    assert costmodel.overhead_for(3, 100, measured) == pytest.approx((2.0e-3 + 2.0e-3) / 2)


def test_saved_overheads_round_trip_and_a_stale_file_means_the_defaults(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NNPS_DATA_DIR", str(tmp_path))
    costmodel.save_overhead({2: {10: 1.5e-3, 1000: 2.5e-3}}, "here (2 CPUs)")
    assert costmodel.load_overhead() == ({2: {10: 1.5e-3, 1000: 2.5e-3}}, "measured by nnps bench on here (2 CPUs)")
    costmodel.overhead_file().write_text('{"overhead_s": {"2": 0.0015}, "where": "an older nnps"}')  # c_k alone
    assert costmodel.load_overhead()[0] == costmodel.DEFAULT_OVERHEAD


def test_transfer_counts_the_parameters_out_and_k_replies_back() -> None:
    wide = network((1024, 1024))
    P = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    assert wide.layout.size == P
    assert costmodel.transfer_seconds(wide, 2, 4e9) == pytest.approx(3 * 4 * P / 4e9)  # ~5.6 ms
    assert costmodel.transfer_seconds(network((1024, 1024), "float64"), 2, 4e9) == pytest.approx(3 * 8 * P / 4e9)


def test_a_slow_vector_rate_keeps_a_wide_network_in_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NNPS_DATA_DIR", str(tmp_path))  # no saved overheads: the defaults
    wide = network((256, 256))
    slow = costmodel.predict(wide, 64, [2], rate=1e6)  # 1 MB/s: ~1.5 s of transfer per step
    assert slow.workers == 0 and slow.predicted_s[2] > 1.0
    fast = costmodel.predict(wide, 64, [2], rate=float("inf"))
    # the same prediction but for the transfer (up to the noise of two timings of a few ms)
    assert slow.predicted_s[2] - fast.predicted_s[2] == pytest.approx(costmodel.transfer_seconds(wide, 2, 1e6), abs=0.05)


def test_the_choice_is_said_in_one_line() -> None:
    choice = costmodel.Choice(1, {0: 0.02, 1: 0.01, 2: 0.03}, "measured by nnps bench on here")
    assert choice.line(256) == (
        "--workers auto: 1 Ray worker (10.00 ms/step predicted at batch 256; in-process 20.00 ms, 1 worker 10.00 ms, "
        "2 workers 30.00 ms; coordination costs: measured by nnps bench on here)"
    )


def test_workers_share_one_node_s_cores_less_two_for_the_graph_s_readers() -> None:
    wide, seed = network((1024, 1024)), network((30,))
    # 784-1024-1024-10 at batch 256: shards of 128 x 1M multiply-adds want every core there is
    assert [worker_threads(wide, 256, k, 16) for k in (1, 2, 4, 8, 15, 16)] == [14, 7, 3, 1, 1, 1]
    # 784-30-10: shards of 500 x 23,520 (11.8M) use 1 thread, of 5,000 (118M) 14; the share caps them
    assert worker_threads(seed, 1000, 2, 16) == 1
    assert worker_threads(seed, 10000, 2, 16) == 7
    assert worker_threads(seed, 10000, 2, 64) == 14
    assert worker_threads(wide, 256, 2, 2) == 1  # 2 cores: one each, as before
    assert worker_threads(wide, 256, 2, None) == 1  # several nodes: one CPU each


def test_sweep_shape_spends_the_cores_where_the_model_says() -> None:
    """Rounds of c trials, a trial taking 1 CPU in-process or 1 + k with k workers."""
    assert costmodel.sweep_shape(2, 16, {0: 1e-3, 1: 2e-3}) == (2, 0)  # small networks: a trial per core
    # a wide network, 4 trials on 16 cores: 3 workers each (4 CPUs a trial) beat in-process on 4 cores
    assert costmodel.sweep_shape(16, 4, {0: 10e-3, 1: 9e-3, 2: 6e-3, 3: 4e-3, 4: 3.5e-3, 7: 2e-3}) == (4, 3)
    assert costmodel.sweep_shape(16, 1, {0: 10e-3, 7: 3e-3, 15: 2e-3}) == (1, 15)  # one trial: every core it can use
    assert costmodel.sweep_shape(16, 8, {0: 1.0, 1: 0.9, 3: 0.5}, workers=3) == (4, 3)  # --workers fixed: what fits
    assert costmodel.sweep_shape(16, 8, {0: 1.0, 1: 0.9, 3: 0.5}, concurrency=8) == (8, 1)  # --concurrency fixed
    with pytest.raises(ValueError):
        costmodel.sweep_shape(2, 4, {0: 1.0, 2: 0.5}, workers=2)  # 3 CPUs a trial on 2
