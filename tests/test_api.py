"""nnps from Python (`nnps.train`, `nnps.load`, `Model`): the same runs as the CLI's, on
numpy arrays, Arrow tables and paths; predictions against a forward pass written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_diabetes, load_wine
from sklearn.metrics import r2_score
from typer.testing import CliRunner

import nnps
from nnps.cli.main import app
from nnps.core import checkpoint, table_rows
from nnps.core.errors import ConfigError, DataError
from tests.test_tables import outputs

runner = CliRunner()
WINE = load_wine()
COMMON = dict(hidden=[12], epochs=6, lr=0.5, workers=0, seed=2, quiet=True)


def wine_table() -> pa.Table:
    names = np.array(["barolo", "grignolino", "barbera"])
    return pa.table({**{f"f{j}": WINE.data[:, j] for j in range(13)}, "kind": names[WINE.target]})


def test_an_arrow_table_trains_as_the_cli_trains_its_file(tmp_path: Path) -> None:
    table = wine_table()
    model = nnps.train(table, label="kind", run_dir=tmp_path / "api", **COMMON)
    pq.write_table(table, tmp_path / "wine.parquet")
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "wine.parquet"), "--label", "kind", "--hidden", "12",
                              "--epochs", "6", "--lr", "0.5", "--workers", "0", "--seed", "2",
                              "--run-dir", str(tmp_path / "cli")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert np.array_equal(model.checkpoint.params, checkpoint.load(str(tmp_path / "cli" / "final.npz")).params)
    assert model.classes == ["barbera", "barolo", "grignolino"]
    ds = table_rows.load(model.config)  # the run's own test rows, read as scikit-learn reads them (test_tables.py)
    expected = float(np.mean(outputs(Path(model.path), ds.x_test).argmax(axis=1) == ds.y_test))
    assert model.evaluate().accuracy == pytest.approx(expected) == model.summary["metrics"]["test_accuracy"]


def test_arrays_in_predictions_out(tmp_path: Path) -> None:
    model = nnps.train(WINE.data, label=WINE.target, run_dir=tmp_path / "r", **COMMON)
    assert model.classes == ["0", "1", "2"] and (tmp_path / "r" / "data.parquet").exists()
    info = model.checkpoint.table
    scaled = (WINE.data - np.array(info.mean)) / np.array(info.std)
    best = outputs(Path(model.path), scaled).argmax(axis=1)
    assert list(model.predict(WINE.data)) == [str(j) for j in best]
    assert model.evaluate(WINE.data, label=WINE.target).accuracy == pytest.approx(np.mean(best == WINE.target))
    assert model.evaluate().accuracy > 0.8  # it learned; a third by chance
    again = nnps.load(tmp_path / "r")  # the run directory, as `nnps evaluate` takes it
    assert np.array_equal(again.predict(WINE.data[:7]), model.predict(WINE.data[:7]))


def test_a_regression_from_arrays(tmp_path: Path) -> None:
    d = load_diabetes()
    model = nnps.train(d.data[:350], label=d.target[:350], task="regress", hidden=[16], activation="tanh",
                       weight_init="scaled", optimizer="adam", lr=0.01, batch_size=32, epochs=30, workers=0,
                       run_dir=tmp_path / "r", quiet=True)  # fmt: skip
    predicted = model.predict(d.data[350:])
    assert predicted.shape == (92,)
    assert model.evaluate(d.data[350:], label=d.target[350:]).r2 == pytest.approx(r2_score(d.target[350:], predicted))
    assert r2_score(d.target[350:], predicted) > 0.3


def test_a_run_in_memory_resumes_to_the_weights_of_one_run(tmp_path: Path) -> None:
    table = wine_table()
    nnps.train(table, label="kind", run_dir=tmp_path / "a", **{**COMMON, "epochs": 3})
    resumed = nnps.train(table, label="kind", run_dir=tmp_path / "a", resume=True, **COMMON)
    whole = nnps.train(table, label="kind", run_dir=tmp_path / "b", **COMMON)
    assert np.array_equal(resumed.checkpoint.params, whole.checkpoint.params)


def test_bad_input_is_nnps_own_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs its labels as label=, n of them; got shape \(178, 13\) and label=str"):
        nnps.train(WINE.data, run_dir=tmp_path / "r", **COMMON)
    with pytest.raises(ConfigError, match="--hidden layer widths must be positive"):
        nnps.train(WINE.data, label=WINE.target, run_dir=tmp_path / "bad", **{**COMMON, "hidden": [0]})
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="train: no option 'epoch'; the options are nnps train's flags"):
        nnps.train(WINE.data, label=WINE.target, epoch=3)
    model = nnps.train(WINE.data, label=WINE.target, run_dir=tmp_path / "ok", **COMMON)
    with pytest.raises(DataError, match=r"an array \(n, 13\) of features, got shape \(2, 5\)"):
        model.predict(np.zeros((2, 5)))
    with pytest.raises(DataError, match="no label column 'label' to evaluate against"):
        model.evaluate(pa.table({f"x{j + 1}": WINE.data[:, j] for j in range(13)}))
    with pytest.raises(DataError, match=r"label= holds \(5,\) for 178 rows of 1 class each"):
        model.evaluate(WINE.data, label=WINE.target[:5])
    with pytest.raises(ConfigError, match=r"labels of shape \(178, 2\) are several numeric targets: give task='regress'"):
        nnps.train(WINE.data, label=np.column_stack([WINE.target, WINE.target]), **COMMON)
    # a run directory's rows stay its own: other rows are refused, not written over it
    before = (tmp_path / "ok" / "data.parquet").read_bytes()
    with pytest.raises(ConfigError, match="data.parquet holds other rows than these: train them in a new run"):
        nnps.train(WINE.data[:100], label=WINE.target[:100], run_dir=tmp_path / "ok", resume=True, **COMMON)
    assert (tmp_path / "ok" / "data.parquet").read_bytes() == before


def test_an_image_network_from_arrays_of_pixels(tiny_npz: Path, tmp_path: Path) -> None:
    model = nnps.train(str(tiny_npz), hidden=[8], epochs=3, lr=3.0, workers=0, run_dir=tmp_path / "r", quiet=True)
    with np.load(tiny_npz) as z:
        x, y = z["x_test"].reshape(len(z["x_test"]), -1), z["y_test"]
    best = outputs(Path(model.path), x / 255).argmax(axis=1)
    assert list(model.predict(x)) == [model.classes[j] for j in best]
    assert model.evaluate(x, label=y).accuracy == pytest.approx(np.mean(best == y)) == model.evaluate().accuracy
    with pytest.raises(DataError, match=r"images: an array \(n, 36\) of pixels 0-255 and label= their n classes"):
        model.evaluate(x, label=y[:3])
