"""Regression on a table (--task regress): MSE, MAE and R^2 against scikit-learn's metrics on
predictions computed here from the checkpoint's arrays, standardization against
scikit-learn's StandardScaler, k Ray workers against one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from nnps.cli.main import app
from nnps.core import checkpoint
from tests.test_tables import ray_equals_serial

runner = CliRunner()


def diabetes(rows: np.ndarray) -> pa.Table:
    """scikit-learn's diabetes data, unscaled, with a second target: BMI."""
    d = load_diabetes(scaled=False)
    columns = {name: d.data[rows, j] for j, name in enumerate(d.feature_names) if name != "bmi"}
    return pa.table({**columns, "progression": d.target[rows], "bmi": d.data[rows, 2]})


def forward(final: Path, x: np.ndarray, activation: str) -> np.ndarray:
    """The network's linear output in float64, from the file's arrays: hidden s(W a + b), then W a + b."""
    with np.load(final) as z:
        layers = sum(1 for name in z.files if name.startswith("w"))
        ws, bs = [z[f"w{l}"] for l in range(1, layers + 1)], [z[f"b{l}"] for l in range(1, layers + 1)]
    hidden = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0)}[activation]
    a = x.astype(np.float64)
    for l, (w, b) in enumerate(zip(ws, bs), start=1):
        a = a @ w.T + b
        a = a if l == layers else hidden(a)
    return a


@pytest.mark.parametrize("targets", [["progression"], ["progression", "bmi"]])
def test_regression_scores_are_scikit_learns_on_the_same_predictions(tmp_path: Path, targets: list[str]) -> None:
    order = np.random.default_rng(3).permutation(442)
    train_t, test_t = diabetes(order[:350]), diabetes(order[350:])
    pq.write_table(train_t, tmp_path / "train.parquet")
    pq.write_table(test_t, tmp_path / "test.parquet")
    rd = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "train.parquet"), "--test-data",
                              str(tmp_path / "test.parquet"), "--task", "regress", "--label", ",".join(targets),
                              "--hidden", "16", "--activation", "tanh", "--weight-init", "scaled", "--optimizer", "adam",
                              "--lr", "0.01", "--batch-size", "32", "--epochs", "30", "--workers", "0",
                              "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "test R^2" in res.output
    names = [c for c in train_t.column_names if c not in targets]
    x_scaler = StandardScaler().fit(np.column_stack([train_t.column(c).to_numpy() for c in names]))
    y_train = np.column_stack([train_t.column(c).to_numpy() for c in targets])
    y_scaler = StandardScaler().fit(y_train)
    ck = checkpoint.load(str(rd / "final.npz"))
    assert ck.table is not None and ck.table.targets == tuple(targets) and ck.table.features == tuple(names)
    assert np.allclose(ck.table.target_mean, y_scaler.mean_) and np.allclose(ck.table.target_std, y_scaler.scale_)
    saved = json.loads((rd / "config.json").read_text())["extra"]["table"]  # the statistics beside the config too
    assert saved == ck.table.to_meta() and np.allclose(saved["mean"], x_scaler.mean_)
    x_test = x_scaler.transform(np.column_stack([test_t.column(c).to_numpy() for c in names]))
    y_test = np.column_stack([test_t.column(c).to_numpy() for c in targets])
    predicted = y_scaler.inverse_transform(forward(rd / "final.npz", x_test, "tanh"))
    ev = runner.invoke(app, ["evaluate", str(rd), "--json"])
    assert ev.exit_code == 0, ev.output
    got = json.loads(ev.stdout)
    assert (got["examples"], got["targets"]) == (92, targets)
    assert got["r2"] == pytest.approx(r2_score(y_test, predicted), abs=1e-4)
    assert got["mse"] == pytest.approx(mean_squared_error(y_test, predicted), rel=1e-4)
    assert got["mae"] == pytest.approx(mean_absolute_error(y_test, predicted), rel=1e-4)
    assert got["r2"] > 0.3  # it learned: a constant prediction scores 0
    last = json.loads((rd / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_r2"] == pytest.approx(got["r2"]) and "test_accuracy" not in last
    # inspect: test row 0 through the network, and the test rows' R^2
    ins = runner.invoke(app, ["inspect", str(rd), "--json"])
    assert ins.exit_code == 0, ins.output
    inside = json.loads(ins.stdout)
    assert inside["test"]["r2"] == pytest.approx(r2_score(y_test, predicted), abs=1e-4)
    assert np.allclose(inside["output"], y_scaler.transform(predicted[:1])[0], atol=1e-4)  # standardized units
    assert np.allclose(inside["target"], y_scaler.transform(y_test[:1])[0], atol=1e-5)
    # predict: each row's targets in their own units
    pq.write_table(test_t.drop(targets).slice(0, 3), tmp_path / "new.parquet")
    pred = runner.invoke(app, ["predict", str(rd), str(tmp_path / "new.parquet"), "--json"])
    assert pred.exit_code == 0, pred.output
    values = [[r["values"][t] for t in targets] for r in json.loads(pred.stdout)]
    assert np.allclose(values, predicted[:3], rtol=1e-5)


@pytest.mark.parametrize("case", ["random", "constant target", "constant target, exact"])
def test_scores_from_summed_chunks_are_scikit_learns(case: str) -> None:
    """MSE, MAE and R^2 from sums added over chunks (as workers add them) equal scikit-learn's
    on the whole arrays, a constant target's R^2 included (its force_finite: 1 if exact, else 0)."""
    from nnps.core.metrics import target_sums, unpack
    from nnps.core.network import Network

    rng = np.random.default_rng(5)
    y, a = rng.normal(size=(50, 2)) * [3, 0.5] + [10, -1], rng.normal(size=(50, 2))
    if case != "random":
        y[:, 1] = 4.0
        a[:, 1] = 4.0 if case.endswith("exact") else a[:, 1]
    std = (2.0, 0.25)  # the targets' deviations: sums are of standardized values, scores in the targets' units
    ys, as_ = y / std, a / std
    total = np.zeros(2 + 4 * 2)
    for lo in range(0, 50, 17):  # chunks, as evaluation runs
        e = as_[lo : lo + 17] - ys[lo : lo + 17]
        total += np.concatenate([[0.5 * np.sum(e * e), len(e)], target_sums(as_[lo : lo + 17], ys[lo : lo + 17])])
    got = unpack(total, Network((3, 2), "sigmoid", "linear", "quadratic", "float64"), std)
    assert got.mse == pytest.approx(mean_squared_error(y, a))
    assert got.mae == pytest.approx(mean_absolute_error(y, a))
    assert got.r2 == pytest.approx(r2_score(y, a))


def test_a_regression_trains_on_ray_workers_as_in_one_process(tmp_path: Path) -> None:
    pq.write_table(diabetes(np.arange(442)), tmp_path / "d.parquet")
    common = ["train", "--data", str(tmp_path / "d.parquet"), "--task", "regress", "--label", "progression,bmi",
              "--hidden", "8", "--activation", "relu", "--epochs", "2", "--batch-size", "40", "--lr", "0.05",
              "--dtype", "float64", "--json"]  # fmt: skip
    serial, ray = ray_equals_serial(tmp_path, common, 2 * 9)  # 354 rows / 40
    assert [r["test_r2"] for r in ray] == pytest.approx([r["test_r2"] for r in serial])


def test_an_async_regression_replays_to_its_weights(tmp_path: Path) -> None:
    """Each worker's batch an update of its own, applied as it arrives; `nnps replay` recomputes
    the run from its record in one process, to the same weights."""
    pq.write_table(diabetes(np.arange(442)), tmp_path / "d.parquet")
    rd = tmp_path / "async"
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--task", "regress", "--label",
                              "progression", "--hidden", "8", "--epochs", "2", "--batch-size", "20", "--workers", "2",
                              "--consistency", "async", "--dtype", "float64", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "async, 2 workers" in res.output and "test R^2" in res.output
    rep = runner.invoke(app, ["replay", str(rd), "--json"])
    assert rep.exit_code == 0, rep.output
    out = json.loads(rep.stdout.splitlines()[-1])
    assert out["updates"] == 2 * 18 and out["max_abs_diff"] == 0.0  # 354 training rows / 20, every epoch
