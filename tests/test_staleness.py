"""Bounded and asynchronous updates without Ray (core/staleness.py): the gate's bound, the
record's checks, and a replay against an independent recomputation."""

from __future__ import annotations

import numpy as np
import pytest

from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError, DataError
from nnps.core.sampler import Sampler
from nnps.core.server import Server
from nnps.core.steps import ShardWorker
from nnps.core.record import UpdateLog, replay
from nnps.core.staleness import Gate
from nnps.core.plan import plan_run


def simulate(tau: int | None, k: int, updates: int, speeds: list[int]) -> list[tuple[int, int, int]]:
    """Workers of fixed durations (speeds[i] ticks a task) under the gate; rows (t, w, d)."""
    gate, free, t, now, version, rows, done_at = Gate(tau), list(range(k)), 0, 0, 0, [], {}
    while version < updates:
        while free and t < updates and gate.may_start(version):
            i = free.pop(0)
            gate.start(i, t, version)
            done_at[i] = now + speeds[i]
            t += 1
        i = min(gate.out, key=lambda w: (done_at[w], w))  # the first to finish
        now = done_at.pop(i)
        step, d = gate.finish(i)
        rows.append((step, i, d))
        version += 1
        free.append(i)
    return rows


@pytest.mark.parametrize("tau,k,speeds", [(0, 3, [1, 1, 1]), (1, 2, [1, 3]), (2, 3, [1, 2, 5]), (4, 3, [1, 1, 7])])
def test_no_update_is_staler_than_tau(tau: int, k: int, speeds: list[int]) -> None:
    rows = simulate(tau, k, 200, speeds)
    staleness = [u - d for u, (_, _, d) in enumerate(rows)]
    assert max(staleness) <= tau
    assert sorted(t for t, _, _ in rows) == list(range(200))  # every step's batch applied once
    if tau == 0:
        assert staleness == [0] * 200  # one task at a time


def test_async_lets_a_fast_worker_run_ahead() -> None:
    rows = simulate(None, 2, 300, [1, 3])  # worker 1 three times slower
    assert [w for _, w, _ in rows].count(0) > 2 * [w for _, w, _ in rows].count(1)
    assert max(u - d for u, (_, _, d) in enumerate(rows)) >= 3


def test_the_bound_is_tight_for_a_straggler() -> None:
    """TAU = 2 with a worker 5x slower: some update is exactly 2 versions stale, none more."""
    rows = simulate(2, 2, 100, [1, 5])
    assert max(u - d for u, (_, _, d) in enumerate(rows)) == 2


CFG = TrainConfig(data="mnist-10k", hidden=(20,), batch_size=50, epochs=1, steps=40, lr=0.5, dtype="float64",
                  seed=3, optimizer="momentum", workers=2, consistency="async")  # fmt: skip


def test_replay_equals_an_independent_recomputation(mnist10k) -> None:
    """The replay against a loop written here: every version kept, each update's gradient
    from its batch on its version, applied in order."""
    rows = simulate(None, 3, 40, [2, 3, 5])
    plan = plan_run(CFG, mnist10k, None, False)
    worker = ShardWorker(plan.network, mnist10k.x_train, mnist10k.y_train, mnist10k.x_test, mnist10k.y_test)
    sampler = Sampler(len(mnist10k.y_train), CFG.batch_size, CFG.seed)
    server = Server(CFG, plan.network, plan.start, sampler.steps_per_epoch)
    versions = [server.params.copy()]
    for t, _, d in rows:
        server.apply(worker.gradient_sums(versions[d], sampler.batch(t)))
        versions.append(server.params.copy())
    got, _ = replay(CFG, plan.network, mnist10k, plan.start, UpdateLog(np.array(rows)))
    assert got.step == 40
    np.testing.assert_array_equal(got.params, versions[-1])
    # and it is not sequential SGD: the stale versions changed the result
    serial = Server(CFG, plan.network, plan.start, sampler.steps_per_epoch)
    for t in sorted(t for t, _, _ in rows):
        serial.apply(worker.gradient_sums(serial.params, sampler.batch(t)))
    assert np.max(np.abs(serial.params - got.params)) > 1e-6


@pytest.mark.parametrize("rows,message", [
    (np.array([[0, 0, 1]]), "an update uses a parameter version that does not exist yet"),
    (np.zeros((2, 2), np.int64), r"not an update record \(shape \(2, 2\)"),
])  # fmt: skip
def test_a_bad_record_is_one_line(rows: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        UpdateLog.from_bytes(_npy(rows), "run/updates.npy")
    with pytest.raises(DataError, match="run/updates.npy: not an update record"):
        UpdateLog.from_bytes(b"garbage", "run/updates.npy")


def _npy(a: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


@pytest.mark.parametrize("changes,message", [
    ({"consistency": "eventual"}, "--consistency must be one of sync, bounded, async; got 'eventual'"),
    ({"consistency": "bounded"}, "--consistency bounded needs --staleness TAU >= 0, got None"),
    ({"consistency": "bounded", "staleness": -1}, "--consistency bounded needs --staleness TAU >= 0, got -1"),
    ({"consistency": "async", "staleness": 2}, "--staleness applies to --consistency bounded only, got it with 'async'"),
    ({"consistency": "async", "workers": 0}, "--consistency async runs on Ray workers: use --workers N"),
])  # fmt: skip
def test_bad_modes_are_one_line(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{"workers": 2, **changes})


def test_histogram_counts_staleness() -> None:
    log = UpdateLog(np.array([[0, 0, 0], [1, 1, 0], [2, 0, 1], [3, 1, 1]]))
    assert log.histogram(0, 4) == {"0": 1, "1": 2, "2": 1}
    assert list(log.staleness(2, 4)) == [1, 2]


def test_workers_auto_says_it_chooses_for_sync_only(mnist10k) -> None:
    """Before Ray starts: the cost model's choice, at least one worker, and one line why."""
    from nnps.cluster.driver import decide

    said: list[str] = []
    cfg = decide(CFG.replace(workers="auto"), mnist10k, 2, said.append)
    assert cfg.workers in (1, 2)
    assert said == [f"--workers auto: {cfg.workers} (the cost model predicts sync steps only; with --consistency async "
                    f"each worker's batch is an update: give --workers N to choose)"]  # fmt: skip
