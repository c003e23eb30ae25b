"""--partitioned: each worker reads only its own parts of a table, and training stays exact.

Oracles: numpy's mean and deviation over the training rows; serial SGD over every row in one
process (`--workers 0`), against k workers for any assignment of parts; a replay of a
bounded/async run's record.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import ray

from nnps.cluster import driver
from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError, DataError
from nnps.core.part_rows import LocalRows, PartRows, combine
from nnps.core.parted_data import layout, load_whole
from nnps.core.parts import PART_ROWS, OwnBatches, Part, assign, held_out, route_of
from nnps.core.plan import plan_run
from nnps.core.rundir import RunDir
from nnps.core.server import Server
from nnps.core.steps import ShardWorker
from nnps.core.steps import sync_steps

FEATURES = 6


def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)) * [1, 10, 100, 0.1, 5, 1] + [0, 3, -2, 1000, 0, 7]
    return x, (x[:, 0] + x[:, 1] / 10 > 0.3).astype(int) + (x[:, 4] > 4)


def write_parquet(directory: Path, sizes: list[int], group: int) -> Path:
    """Files of `sizes` rows, row groups of `group` rows: the parts."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(sizes):
        x, y = rows(n, i)
        table = pa.table({**{f"f{j}": x[:, j] for j in range(FEATURES)}, "label": y})
        pq.write_table(table, directory / f"part-{i}.parquet", row_group_size=group)
    return directory


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("parts") / "t", [700, 333, 900], group=128)


def config(data: Path | str, **kw) -> TrainConfig:
    base = dict(data=str(data), hidden=(8,), batch_size=7, steps=60, epochs=1, lr=0.5, dtype="float64", seed=3,
                partitioned=True, workers=0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def every_row(data: Path) -> np.ndarray:
    return np.concatenate([pq.read_table(f).to_pandas().to_numpy(np.float64)
                           for f in sorted(data.glob("*.parquet"))])  # fmt: skip


def test_the_parts_are_the_row_groups_and_the_statistics_numpy_s(table: Path) -> None:
    lay = layout(config(table))
    assert [(Path(p.path).name, p.group, p.rows) for p in lay.parts[:7]] == (
        [("part-0.parquet", g, 128) for g in range(5)] + [("part-0.parquet", 5, 60), ("part-1.parquet", 0, 128)])
    assert sum(p.rows for p in lay.parts) == 1933 and len(lay.parts) == 6 + 3 + 8
    ds, _ = load_whole(config(table, standardize=False))
    allrows = every_row(table)
    test = held_out(3, 0.2, np.arange(len(allrows)))
    assert 0.15 < test.mean() < 0.25
    train = allrows[~test]
    np.testing.assert_array_equal(ds.x_train, train[:, :FEATURES].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, allrows[test, :FEATURES].astype(np.float32))
    scaled, _ = load_whole(config(table))
    x32 = train[:, :FEATURES].astype(np.float32)
    np.testing.assert_allclose(scaled.table.mean, x32.mean(axis=0, dtype=np.float64), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scaled.table.std, x32.astype(np.float64).std(axis=0), rtol=1e-10)


def test_the_test_rows_do_not_depend_on_how_the_files_are_cut(tmp_path: Path, table: Path) -> None:
    """Row numbers, not parts, choose the test rows: one file of the same rows in 100-row groups."""
    whole = pa.concat_tables([pq.read_table(f) for f in sorted(table.glob("*.parquet"))])
    (tmp_path / "one").mkdir()
    pq.write_table(whole, tmp_path / "one" / "all.parquet", row_group_size=100)
    a, b = load_whole(config(table))[0], load_whole(config(tmp_path / "one"))[0]
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def serial_params(cfg: TrainConfig) -> np.ndarray:
    return driver.run(cfg.replace(workers=0), None)["params"]


class Owners:
    """Synchronous steps over k ShardWorkers that each hold only their parts: the sums a
    partitioned run's workers return, computed here."""

    def __init__(self, cfg: TrainConfig, owner: list[int], k: int) -> None:
        lay = layout(cfg)
        read = [PartRows.read(cfg, lay.features, [p for p, o in zip(lay.parts, owner) if o == w],
                              [r for r, o in zip(lay.first_rows, owner) if o == w]) for w in range(k)]  # fmt: skip
        info, train, _ = combine(cfg, lay.features, [r.summary() for r in read], lay.parts)
        self.route = route_of(train, owner, k, cfg.seed, cfg.batch_size)
        self.whole, _ = load_whole(cfg)
        self.plan = plan_run(cfg, self.whole, None, False)
        self.workers = [r.shard_worker(self.plan.network, info, self.route, w) for w, r in enumerate(read)]
        self.empty = 0

    def open(self, params: np.ndarray, step: int) -> np.ndarray:
        return params

    def step(self, params: np.ndarray, shards: list[np.ndarray], step: int) -> tuple[np.ndarray, list[np.ndarray]]:
        self.empty += sum(len(s) == 0 for s in shards)
        return params, [w.gradient_sums(params, s).copy() for w, s in zip(self.workers, shards)]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_any_assignment_of_parts_equals_serial_sgd(k: int, table: Path) -> None:
    cfg = config(table, batch_size=3)
    owner = np.random.default_rng(k).integers(0, k, size=len(layout(cfg).parts)).tolist()  # not contiguous
    carrier = Owners(cfg, owner, k)
    server = Server(cfg, carrier.plan.network, carrier.plan.start, carrier.plan.steps_per_epoch)
    sync_steps(carrier, server, carrier.plan.sampler, k, 60, carrier.route)
    assert carrier.empty > 0  # a batch of 3 over k owners leaves some without a row
    assert np.max(np.abs(server.params - serial_params(cfg))) < 1e-9


def test_a_worker_maps_global_rows_to_its_own() -> None:
    route = route_of([5, 0, 3, 4], [1, 0, 1, 0], 2, 0, 4)
    shards = route.shards(np.array([9, 0, 5, 11, 4]))
    assert [s.tolist() for s in shards] == [[9, 11], [0, 5, 4]]
    assert LocalRows(route, 1)(np.array([0, 4, 5, 7])).tolist() == [0, 4, 5, 7]
    assert LocalRows(route, 0)(np.array([8, 11])).tolist() == [0, 3]
    assert route.rows_held(0) == 4 and route.rows_held(1) == 8
    own = OwnBatches(route)  # batch size 4: an epoch of worker 1's 8 rows in 2 batches
    assert sorted(np.concatenate([own.batch(1, t) for t in (0, 1)]).tolist()) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert sorted(own.batch(0, 5).tolist()) == [8, 9, 10, 11]


def test_parts_are_near_equal_runs_of_rows() -> None:
    parts = [Part("f", g, 0, n) for g, n in enumerate([100, 100, 100, 100, 50, 50, 100])]
    assert assign(parts, 3) == [0, 0, 1, 1, 2, 2, 2]  # 200 rows each
    assert assign(parts, 1) == [0] * 7
    assert assign(parts[:2], 4) == [1, 3]  # fewer parts than workers: some get none


def test_a_csv_is_cut_into_row_ranges_with_its_test_data_apart(tmp_path: Path) -> None:
    n = PART_ROWS + 1000
    x, y = rows(n, 7)
    names = np.array(["cat", "dog", "owl"])[y]
    pcsv.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "kind": names}), tmp_path / "t.csv")
    pcsv.write_csv(pa.table({"a": x[:50, 0], "b": x[:50, 1], "kind": names[:50]}), tmp_path / "u.csv")
    cfg = config(tmp_path / "t.csv", label="kind", test_data=str(tmp_path / "u.csv"))
    lay = layout(cfg)
    assert [(p.lo, p.hi, p.test) for p in lay.parts] == [(0, PART_ROWS, False), (PART_ROWS, n, False), (0, 50, True)]
    ds, data = load_whole(cfg)
    assert data.table.classes == ("cat", "dog", "owl") and len(ds.y_train) == n and len(ds.y_test) == 50
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_allclose(ds.x_test[:, 0] * data.table.std[0] + data.table.mean[0], x[:50, 0], rtol=1e-5)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize("transport", ["unix", "tcp", "ray"])
def test_ray_workers_holding_their_parts_equal_serial(transport: str, table: Path, tmp_path: Path, local_ray) -> None:
    cfg = config(table, workers=3, transport=transport, checkpoint_every=20)
    done = driver.run(cfg, RunDir(str(tmp_path / "run")))
    assert np.max(np.abs(done["params"] - serial_params(cfg))) < 1e-9
    assert done["channels"]["steps"][transport] == 60
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["parts"]
    assert [row[-1] for row in saved["parts"]] == assign(layout(cfg).parts, 3)
    assert sum(row[5] for row in saved["parts"]) == len(load_whole(cfg)[0].y_train)
    assert gone("GradientWorker") and gone("TrainingData")  # nothing of the run left on Ray


def gone(title: str) -> bool:
    """No process of this test titled `title` within 10 s (killed actors exit shortly after)."""
    from tests.test_distributed import actor_pids

    deadline = time.monotonic() + 10
    while actor_pids(title) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not actor_pids(title)


@pytest.mark.ray
def test_a_regression_on_two_workers_equals_serial(tmp_path: Path, local_ray) -> None:
    x, _ = rows(900, 4)
    target = x[:, 0] * 2 - x[:, 2] / 50
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 2], "y": target}), tmp_path / "r.parquet", row_group_size=200)
    cfg = config(tmp_path / "r.parquet", label="y", task="regress", workers=2, lr=0.05)
    done = driver.run(cfg, None)
    assert np.max(np.abs(done["params"] - serial_params(cfg))) < 1e-9
    assert done["metrics"]["test_r2"] > 0.5


@pytest.mark.ray
@pytest.mark.parametrize(("mode", "tau"), [("async", None), ("bounded", 2)])
def test_each_worker_samples_its_own_rows_and_the_record_replays(mode: str, tau: int | None, table: Path,
                                                                 tmp_path: Path, local_ray) -> None:  # fmt: skip
    cfg = config(table, workers=3, consistency=mode, staleness=tau, steps=90, batch_size=16)
    run = tmp_path / "run"
    done = driver.run(cfg, RunDir(str(run)))
    assert done["step"] == 90
    assert driver.replay(RunDir(str(run)))["max_abs_diff"] < 1e-9
    workers = np.load(run / "updates.npy")[:, 1]
    assert sorted(set(workers.tolist())) == [0, 1, 2]
    saved = json.loads((run / "config.json").read_text())["extra"]["parts"]
    assert saved["batches"].startswith("the j-th update sent to worker w takes batch j of w's own sampler")
    # each worker's updates visit its own rows: its first epoch's worth of them, no row twice
    route = load_whole(cfg, 3)[1].route
    for w in range(3):
        updates = int((workers == w).sum())
        held = route.rows_held(w)
        if updates * 16 <= held:
            drawn = np.concatenate([OwnBatches(route).batch(w, j) for j in range(updates)])
            assert len(set(drawn.tolist())) == len(drawn) and set(route.owners(drawn)) == {w}


@pytest.mark.ray
def test_a_killed_worker_reads_its_parts_again_and_the_run_stays_exact(table: Path, local_ray) -> None:
    from tests.test_distributed import KillAfter, actor_pids

    killer = KillAfter("GradientWorker", after=10, delay_s=0)
    cfg = config(table, workers=2, transport="ray", steps=60)
    done = driver.run(cfg, None, reporter=killer)
    assert killer.killed and killer.killed[0] not in actor_pids("GradientWorker")
    assert np.max(np.abs(done["params"] - serial_params(cfg))) < 1e-9


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnps.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_a_part_that_cannot_be_read_is_one_line_naming_it(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "t", [600, 600], group=200)
    meta = pq.ParquetFile(data / "part-1.parquet").metadata
    start = meta.row_group(1).column(0).data_page_offset
    raw = bytearray((data / "part-1.parquet").read_bytes())
    raw[start : start + 64] = b"\xff" * 64  # row group 1's first page, its footer intact
    (data / "part-1.parquet").write_bytes(bytes(raw))
    out = cli("train", "--data", str(data), "--partitioned", "--workers", "2", "--hidden", "4", "--epochs", "1",
              "--run-dir", str(tmp_path / "r"))  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {data / 'part-1.parquet'} row group 1: cannot read it ("), out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--data", "mnist-10k"], "--partitioned does nothing here: it applies with a table: --data a CSV or Parquet source"),
    (["--data", "{t}", "--validation-fraction", "0.1"], "--validation-fraction 0.1 holds rows out on the driver, which "
     "--partitioned never reads: give --test-data, or leave out --partitioned"),
    (["--data", "{n}"], "--partitioned: {n} is an .npz, which numpy reads whole; write it as Parquet to read it in parts"),
])  # fmt: skip
def test_what_cannot_be_partitioned_is_one_line(flags: list[str], message: str, table: Path, tmp_path: Path) -> None:
    npz = tmp_path / "t.npz"
    np.savez(npz, x_train=np.ones((10, 2), np.float32), y_train=np.arange(10) % 2)
    args = [f.replace("{t}", str(table)).replace("{n}", str(npz)) for f in flags]
    out = cli("train", *args, "--partitioned", "--workers", "0", "--run-dir", str(tmp_path / "r"))
    assert (out.returncode, out.stderr) == (1, "error: " + message.replace("{n}", str(npz)) + "\n")


def test_an_error_in_the_config_is_refused_before_reading(table: Path) -> None:
    with pytest.raises(ConfigError, match="--validation-fraction"):
        config(table, validation_fraction=0.2)


def test_a_missing_value_in_a_row_group_is_refused_by_row_or_its_row_left_out(tmp_path: Path) -> None:
    x, y = rows(300, 9)
    f2 = pa.array(x[:, 2], mask=np.arange(300) == 150)  # a null in row group 1 (rows 100-199)
    table = pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": f2, "label": y})
    (tmp_path / "t").mkdir()
    pq.write_table(table, tmp_path / "t" / "m.parquet", row_group_size=100)
    with pytest.raises(DataError, match=r"^" + re.escape(f"{tmp_path / 't' / 'm.parquet'} row group 1: a missing "
                                                         "value in column 'f2' at row 151 (--drop-missing leaves "
                                                         "such rows out)") + "$"):  # fmt: skip
        load_whole(config(tmp_path / "t"))
    ds, data = load_whole(config(tmp_path / "t", drop_missing=True, standardize=False))
    held = np.concatenate([ds.x_train, ds.x_test])
    whole = np.delete(x[:, :3], 150, axis=0).astype(np.float32)
    assert len(held) == 299 and not np.isnan(held).any()
    assert sorted(map(tuple, held.tolist())) == sorted(map(tuple, whole.tolist()))
    assert data.n_train + data.n_test == 299


@pytest.mark.ray
def test_a_partitioned_run_resumes_as_if_never_stopped(table: Path, tmp_path: Path, local_ray) -> None:
    cfg = config(table, workers=2, steps=60, checkpoint_every=20)
    straight = driver.run(cfg, RunDir(str(tmp_path / "a")))["params"]
    driver.run(cfg.replace(steps=40), RunDir(str(tmp_path / "b")))
    resumed = driver.run(cfg, RunDir(str(tmp_path / "b")), resume=True)
    assert resumed["step"] == 60 and np.max(np.abs(resumed["params"] - straight)) < 1e-12


@pytest.mark.ray
def test_csv_parts_with_gaps_on_two_workers_equal_serial_and_evaluate_scores_the_runs_test_rows(
        tmp_path: Path, local_ray) -> None:  # fmt: skip
    """A CSV of two row ranges (one pass each worker), rows with a gap left out, the test rows a
    hash of the row: 2 workers equal serial, and nnps.load(run).evaluate() scores exactly the
    test rows the run held."""
    import nnps

    n = PART_ROWS + 5000
    x, y = rows(n, 8)
    a = pa.array(x[:, 0], mask=np.arange(n) % 997 == 5)  # a gap every 997 rows, in both parts
    pcsv.write_csv(pa.table({"a": a, "b": x[:, 1], "c": x[:, 4], "label": y}), tmp_path / "g.csv")
    cfg = config(tmp_path / "g.csv", workers=2, drop_missing=True, batch_size=50, steps=40)
    assert [p.rows for p in layout(cfg).parts] == [PART_ROWS, 5000]
    done = driver.run(cfg, RunDir(str(tmp_path / "run")))
    assert np.max(np.abs(done["params"] - serial_params(cfg))) < 1e-9
    parts = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["parts"]["parts"]
    kept = n - len(range(5, n, 997))
    assert sum(p[5] + p[6] for p in parts) == kept
    assert nnps.load(str(tmp_path / "run")).evaluate().examples == sum(p[6] for p in parts)
