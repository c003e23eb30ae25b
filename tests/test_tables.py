"""Training on a table of one's own (CSV or Parquet): read as scikit-learn reads the same
rows (StandardScaler, LabelEncoder on scikit-learn's bundled datasets), evaluated and
predicted against a forward pass written here, and every bad table refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.preprocessing import LabelEncoder, StandardScaler
from typer.testing import CliRunner

from nnps.cli.main import app, main
from nnps.core import checkpoint, table_rows
from nnps.core.config import TrainConfig

runner = CliRunner()
CULTIVARS = np.array(["barolo", "grignolino", "barbera"])  # wine's classes 0, 1, 2, by name


def wine_table(rows: slice = slice(None)) -> pa.Table:
    wine = load_wine()
    columns = {name.replace("/", "_"): wine.data[rows, j] for j, name in enumerate(wine.feature_names)}
    return pa.table({**columns, "cultivar": CULTIVARS[wine.target[rows]]})


def write(table: pa.Table, path: Path) -> str:
    (pcsv.write_csv if path.suffix == ".csv" else pq.write_table)(table, path)
    return str(path)


def features(table: pa.Table, label: str) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy() for c in table.column_names if c != label])


def test_rows_are_standardized_and_labelled_as_scikit_learn_does(tmp_path: Path) -> None:
    order = np.random.default_rng(1).permutation(178)
    train_t, test_t = wine_table(order[:130]), wine_table(order[130:])  # order: every class in both
    cfg = TrainConfig(data=write(train_t, tmp_path / "train.parquet"), test_data=write(test_t, tmp_path / "test.csv"),
                      label="cultivar", workers=0)  # fmt: skip
    ds = table_rows.load(cfg)
    scaler, encoder = StandardScaler().fit(features(train_t, "cultivar")), LabelEncoder().fit(CULTIVARS)
    assert ds.table is not None and ds.table.classes == tuple(encoder.classes_) == ("barbera", "barolo", "grignolino")
    assert ds.table.features == tuple(c for c in train_t.column_names if c != "cultivar")
    assert np.allclose(ds.x_train, scaler.transform(features(train_t, "cultivar")), atol=2e-5)
    assert np.allclose(ds.x_test, scaler.transform(features(test_t, "cultivar")), atol=2e-5)  # the training stats
    assert list(ds.y_train) == list(encoder.transform(train_t.column("cultivar").to_numpy(zero_copy_only=False)))
    assert list(ds.y_test) == list(encoder.transform(test_t.column("cultivar").to_numpy(zero_copy_only=False)))
    assert (ds.num_inputs, ds.num_outputs) == (13, 3)


def test_a_test_fraction_splits_every_row_once_by_the_seed(tmp_path: Path) -> None:
    table = wine_table()
    path = write(table, tmp_path / "wine.csv")
    ds = table_rows.load(TrainConfig(data=path, label="cultivar", test_fraction=0.25, seed=4, workers=0))
    assert (len(ds.y_train), len(ds.y_test)) == (178 - 44, 44)  # round(0.25 * 178)
    # the rows back in their units, each with its label: together, the file's rows exactly
    raw = {tuple(np.round(r, 3)): c for r, c in zip(features(table, "cultivar"), table.column("cultivar").to_pylist())}
    mean, std = np.array(ds.table.mean), np.array(ds.table.std)
    back = [(tuple(np.round(x * std + mean, 3)), ds.table.classes[y])
            for x, y in [*zip(ds.x_train, ds.y_train), *zip(ds.x_test, ds.y_test)]]  # fmt: skip
    assert sorted(back) == sorted(raw.items())
    again = table_rows.load(TrainConfig(data=path, label="cultivar", test_fraction=0.25, seed=4, workers=0))
    other = table_rows.load(TrainConfig(data=path, label="cultivar", test_fraction=0.25, seed=5, workers=0))
    assert np.array_equal(again.x_test, ds.x_test) and not np.array_equal(other.x_test, ds.x_test)


def outputs(final: Path, x: np.ndarray) -> np.ndarray:
    """The network's output in float64, written out here from the file's arrays: a = s(W a + b)."""
    with np.load(final) as z:
        layers = sum(1 for name in z.files if name.startswith("w"))  # (not the optimizer's state)
        ws = [z[f"w{l}"] for l in range(1, layers + 1)]
        bs = [z[f"b{l}"] for l in range(1, layers + 1)]
    a = x.astype(np.float64)
    for w, b in zip(ws, bs):
        a = 1 / (1 + np.exp(-(a @ w.T + b)))
    return a


def test_train_evaluate_predict_a_csv_with_named_classes(tmp_path: Path) -> None:
    table = wine_table()
    data, rd = write(table, tmp_path / "wine.csv"), tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", data, "--label", "cultivar", "--hidden", "12", "--epochs", "8",
                              "--lr", "1.0", "--test-fraction", "0.3", "--workers", "0", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = json.loads((rd / "config.json").read_text())
    assert (saved["label"], saved["test_fraction"], saved["features"], saved["standardize"]) == ("cultivar", 0.3, [], True)
    ck = checkpoint.load(str(rd / "final.npz"))
    assert ck.table is not None and ck.table.classes == ("barbera", "barolo", "grignolino")
    # evaluate on the run's own test rows: scaled with the stats the checkpoint keeps
    ds = table_rows.load(TrainConfig.from_dict(saved))
    scaled = (features(table, "cultivar") - np.array(ck.table.mean)) / np.array(ck.table.std)
    ev = runner.invoke(app, ["evaluate", str(rd), "--json"])
    assert ev.exit_code == 0, ev.output
    got = json.loads(ev.stdout)
    expected = float(np.mean(outputs(rd / "final.npz", ds.x_test).argmax(axis=1) == ds.y_test))
    assert got["accuracy"] == pytest.approx(expected) and got["classes"] == ["barbera", "barolo", "grignolino"]
    assert got["accuracy"] > 0.8  # it learned: 3 classes, a third by chance
    # predict: rows without a label column, one line each, named
    rows = table.drop(["cultivar"]).slice(0, 4)
    pred = runner.invoke(app, ["predict", str(rd / "final.npz"), write(rows, tmp_path / "new.csv"), "--json"])
    assert pred.exit_code == 0, pred.output
    answers = json.loads(pred.stdout)
    best = outputs(rd / "final.npz", scaled[:4]).argmax(axis=1)
    assert [(a["input"], a["prediction"], a["label"]) for a in answers] == [
        (f"{tmp_path / 'new.csv'} row {i + 1}", int(j), ck.table.classes[j]) for i, j in enumerate(best)]


def ray_equals_serial(tmp_path: Path, common: list[str], steps: int) -> tuple[list[dict], list[dict]]:
    """`nnps train common...` in one process and on 2 Ray workers: the same weights to 1e-9 in
    float64, every one of the `steps` carried by the unix channel; their metrics rows."""
    serial = runner.invoke(app, [*common, "--workers", "0", "--run-dir", str(tmp_path / "serial")])
    ray = runner.invoke(app, [*common, "--workers", "2", "--no-warm-start", "--run-dir", str(tmp_path / "ray")])
    assert serial.exit_code == 0 and ray.exit_code == 0, serial.output + ray.output
    assert json.loads(ray.stdout.splitlines()[-1])["channels"]["steps"]["unix"] == steps
    a = checkpoint.load(str(tmp_path / "serial" / "final.npz")).params
    b = checkpoint.load(str(tmp_path / "ray" / "final.npz")).params
    assert np.max(np.abs(a - b)) < 1e-9
    return tuple([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                 for run in ("serial", "ray"))  # type: ignore[return-value]


def test_a_table_trains_on_ray_workers_as_in_one_process(tmp_path: Path) -> None:
    cancer = load_breast_cancer()
    table = pa.table({**{f"f{j}": cancer.data[:, j] for j in range(30)}, "label": cancer.target})
    data = write(table, tmp_path / "cancer.parquet")
    common = ["train", "--data", data, "--hidden", "8", "--epochs", "2", "--batch-size", "32", "--lr", "0.5",
              "--dtype", "float64", "--json"]  # fmt: skip
    ray_equals_serial(tmp_path, common, 2 * 15)  # 455 rows / 32


def test_an_npz_of_float_arrays_is_a_table_with_its_own_test_rows(tmp_path: Path) -> None:
    wine = load_wine()
    order = np.random.default_rng(2).permutation(178)
    tr, te = order[:130], order[130:]
    path = tmp_path / "wine.npz"
    np.savez(path, x_train=wine.data[tr], y_train=wine.target[tr], x_test=wine.data[te], y_test=wine.target[te])
    rd = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(path), "--hidden", "12", "--epochs", "8", "--lr", "1.0",
                              "--workers", "0", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((rd / "config.json").read_text())["test_fraction"] is None  # its x_test, y_test
    ck = checkpoint.load(str(rd / "final.npz"))
    assert ck.table is not None and ck.table.features == tuple(f"x{j}" for j in range(1, 14))
    scaled = StandardScaler().fit(wine.data[tr]).transform(wine.data[te])
    got = json.loads(runner.invoke(app, ["evaluate", str(rd), "--json"]).stdout)
    expected = float(np.mean(outputs(rd / "final.npz", scaled).argmax(axis=1) == wine.target[te]))
    assert (got["examples"], got["accuracy"]) == (48, pytest.approx(expected))


def test_an_npz_of_flattened_uint8_images_stays_images(tmp_path: Path) -> None:
    from nnps.core import catalog, tables

    x = np.random.default_rng(0).integers(0, 256, (20, 784), dtype=np.uint8)
    path = tmp_path / "flat.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 10, x_test=x[:5], y_test=np.arange(5))
    assert not tables.is_table(str(path))
    ds = catalog.load(str(path))
    assert ds.table is None and ds.num_inputs == 784 and ds.x_train.dtype == np.uint8


def test_float32_labels_name_their_classes_as_a_float64_file_does(tmp_path: Path) -> None:
    """0.1 in a float32 column and 0.1 in a CSV are one class, named "0.1"."""
    x = np.random.default_rng(1).normal(size=(40, 2))
    label = np.where(x[:, 0] > 0, 0.5, 0.1).astype(np.float32)
    train = write(pa.table({"a": x[:, 0], "b": x[:, 1], "y": pa.array(label, pa.float32())}), tmp_path / "t.parquet")
    test = tmp_path / "u.csv"
    test.write_text("a,b,y\n1.0,0.0,0.5\n-1.0,0.0,0.1\n")
    rd = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", train, "--label", "y", "--test-data", str(test), "--hidden", "4",
                              "--epochs", "2", "--workers", "0", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert checkpoint.load(str(rd / "final.npz")).table.classes == ("0.1", "0.5")
    assert json.loads(runner.invoke(app, ["evaluate", str(rd), "--json"]).stdout)["examples"] == 2


def test_drop_missing_leaves_out_the_rows_with_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,y\n1,2,x\n3,,y\n5,6,\n7,8,x\n9,10,y\n")
    ds = table_rows.load(TrainConfig(data=str(path), label="y", test_fraction=0.4, drop_missing=True,
                                     standardize=False, workers=0))  # fmt: skip
    rows = sorted(map(tuple, np.concatenate([ds.x_train, ds.x_test]).tolist()))
    assert rows == [(1.0, 2.0), (7.0, 8.0), (9.0, 10.0)]


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


BAD = [
    ("t.csv", "a,b,name\n1,2,x\n3,4,y\n", ["--label", "y"], "{t}: no label column 'y' (--label COL); its columns are a, b, name"),
    ("t.csv", "a,s,y\n1,u,0\n3,v,1\n", ["--label", "y"], "{t}: column 's' holds string, not numbers; leave it out with --features a"),
    ("t.csv", "a,b,y\n" + "1,2,0\n3,4,1\n" * 4 + "3,,1\n", ["--label", "y"], "{t}: a missing value in column 'b' at row 9 (--drop-missing leaves such rows out)"),
    ("t.csv", "a,b,y\n" + "1,2,0\n" * 10, ["--label", "y"], "{t}: label column 'y' holds one class only ('0'); a classifier needs two"),
    ("t.csv", "a,b,y\n", ["--label", "y"], "{t}: no rows"),
    ("t.csv", "a,b,y\n1,2,0\n3,4,1,9\n", ["--label", "y"], "{t}: cannot read it as a table (CSV parse error: Row #3: Expected 3 columns, got 4: 3,4,1,9)"),
    ("t.csv", "a,y\n" + "".join(f"{i},{i / 7:.4f}\n" for i in range(40)), ["--label", "y"],
     "{t}: label column 'y' holds 32 distinct fractional values in its training rows: a numeric target, not classes: train a regression with --task regress"),
    ("t.csv", "a,b,y\n1,2,0\n3,4,1\n", ["--label", "y", "--features", "a,z"], "{t}: no column 'z' of --features; its columns are a, b, y"),
    ("t.parquet", None, ["--label", "y"], "{t}: cannot read it as a table (Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.)"),
    ("t.csv", "a,b,y\n1,2,0\n3,4,1\n", ["--label", "y", "--test-data", "{u}"], "{u}: class '7' is not one the network was trained on (0, 1)"),
    ("t.csv", ",".join(f"c{i}" for i in range(100_001)) + "\n", ["--label", "c0"], "{t}: 100,001 columns; nnps reads tables of at most 100,000"),
    ("t.csv", "a,y\n1,x\n2,z\n", ["--label", "y", "--task", "regress"], "{t}: target column 'y' holds string, not numbers; --task regress predicts numbers (classes are --task classify)"),
    ("t.csv", "a,y,v\n1,2,3\n2,3,4\n3,4,\n", ["--label", "y,v", "--task", "regress"], "{t}: a missing value in column 'v' at row 3 (--drop-missing leaves such rows out)"),
    ("t.csv", "a,y\n1,2\n2,3\n", ["--label", "y", "--task", "regress", "--output", "softmax"], "--task regress trains a linear output layer on the quadratic cost; got --output softmax --cost quadratic"),
    ("t.csv", "a,y\n1,2\n2,3\n", ["--label", "y,y", "--task", "regress"], "--label names a target column twice: 'y,y'"),
    ("t.csv", "a,y\n1,2\n2,3\n", ["--label", "y", "--output", "linear"], "--output linear is a regression's output layer: use it with --task regress"),
    ("t.csv", "a,b,c,y\n1,2,3,0\n3,4,5,1\n", ["--label", "y", "--test-data", "{u}"], "{u}: no column 'c' that the network takes as a feature; its columns are a, b, y"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "flags", "message"), BAD)
def test_a_bad_table_is_one_line_and_writes_nothing(name: str, text: str | None, flags: list[str], message: str,
                                                    tmp_path: Path, capsys) -> None:  # fmt: skip
    t, u = tmp_path / name, tmp_path / "u.csv"
    if text is None:  # a Parquet file cut short: its footer lost
        t.write_bytes(pq_bytes()[:-10])
    else:
        t.write_text(text)
    u.write_text("a,b,y\n1,2,7\n")
    args = [f.replace("{u}", str(u)) for f in flags]
    rc, _, err = run_main(["train", "--data", str(t), *args, "--workers", "0", "--run-dir", str(tmp_path / "r")], capsys)
    assert (rc, err) == (1, "error: " + message.replace("{t}", str(t)).replace("{u}", str(u)) + "\n")
    assert not (tmp_path / "r").exists()


def pq_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), sink)
    return sink.getvalue().to_pybytes()


def test_files_with_other_columns_are_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "a1.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    (tmp_path / "a2.csv").write_text("a,c,y\n1,2,0\n3,4,1\n")
    rc, _, err = run_main(["train", "--data", str(tmp_path / "a?.csv"), "--label", "y", "--workers", "0",
                           "--run-dir", str(tmp_path / "r")], capsys)  # fmt: skip
    assert (rc, err) == (1, f"error: {tmp_path / 'a?.csv'}: the files' columns differ: {tmp_path / 'a1.csv'} has a, b, y; "
                            f"{tmp_path / 'a2.csv'} has a, c, y\n")  # fmt: skip


def test_table_flags_with_images_are_refused(tiny_npz: Path, capsys) -> None:
    rc, _, err = run_main(["train", "--data", str(tiny_npz), "--label", "kind", "--workers", "0"], capsys)
    assert (rc, err) == (1, "error: --label kind does nothing here: it applies with a table: --data a CSV or Parquet source\n")


def test_inspect_draws_a_table_network_over_its_features(tmp_path: Path, capsys) -> None:
    """nnps inspect on a table: one test row's output and the test rows' confusion against a
    forward pass written here; the pictures it names exist; a file row needs its label."""
    data, rd = write(wine_table(), tmp_path / "wine.parquet"), tmp_path / "run"
    assert runner.invoke(app, ["train", "--data", data, "--label", "cultivar", "--epochs", "3", "--lr", "1.0",
                               "--workers", "0", "--run-dir", str(rd)]).exit_code == 0  # fmt: skip
    ds = table_rows.load(TrainConfig.from_dict(json.loads((rd / "config.json").read_text())))
    res = runner.invoke(app, ["inspect", str(rd), "2", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    a = outputs(rd / "final.npz", ds.x_test)  # (m, 3)
    assert got["input"] == "test row 2" and got["features"] == [c for c in wine_table().column_names if c != "cultivar"]
    assert np.allclose(got["output"], a[2], atol=1e-6) and got["target"] == list(np.eye(3)[ds.y_test[2]])
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (ds.y_test, a.argmax(axis=1)), 1)
    assert got["test"]["confusion"] == expected.tolist()
    res = runner.invoke(app, ["inspect", str(rd), "--out", str(tmp_path / "pics")])
    assert res.exit_code == 0, res.output
    names = ["weights-1.png", "weights-2.png", "input-layers.png", "input-bp4-w1.png", "confusion.png", "shards.png"]
    assert res.stdout.split() == [str(tmp_path / "pics" / n) for n in names]
    assert all((tmp_path / "pics" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    rows = write(wine_table().drop(["cultivar"]), tmp_path / "rows.csv")
    rc, _, err = run_main(["inspect", str(rd), f"{rows}:3"], capsys)
    assert (rc, err) == (1, f"error: {rows}: no label column to compute the deltas against (give rows with their label)\n")
    text = tmp_path / "text.csv"  # a row whose feature is text: the network needs it as a number
    text.write_text(",".join(c for c in wine_table().column_names if c != "cultivar") + "\n" + "x," * 12 + "1\n")
    rc, _, err = run_main(["predict", str(rd), str(text)], capsys)
    assert (rc, err) == (1, f"error: {text}: column 'alcohol' holds string, not numbers; the network takes it as a "
                            f"feature\n")  # fmt: skip
    rc, _, err = run_main(["inspect", str(rd), "--data", data], capsys)
    assert (rc, err) == (1, "error: --data and --label are for image networks: a table network's row is a test-row "
                            "number or FILE:N of a table with its label column\n")  # fmt: skip


def test_the_readme_table_block_runs_as_written(tmp_path: Path) -> None:
    """README.md's "Your own tables" block, in an empty directory, with the venv's commands
    on PATH as `source .venv/bin/activate` puts them."""
    import os
    import re
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("\n## Your own tables\n") :], re.S)
    assert block
    script = block.group(1).replace("source .venv/bin/activate\n", "")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"new\.csv row 1: \d (high|low|mid)   \[[0-9. ]+\]", lines[-2]), lines[-2:]
    assert re.fullmatch(r"new\.csv row 2: score -?[0-9.]+", lines[-3]), lines[-4:]
    assert (tmp_path / "runs" / "measures" / "final.npz").exists()
    # then "From Python", after it in the same directory
    python = re.search(r"```python\n(.*?)```", text[text.index("\n### From Python\n") :], re.S)
    assert python
    done = subprocess.run([sys.executable, "-c", python.group(1)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy, names, one, regression = done.stdout.strip().splitlines()[-4:]
    assert float(accuracy) > 0.8 and re.fullmatch(r"\['(high|low|mid)' '(high|low|mid)'\]", names), done.stdout
    assert re.fullmatch(r"\['(high|low|mid)'\] \[\[[0-9. ]+\]\]", one), one
    assert re.fullmatch(r"\[-?[0-9.]+\] [0-9.]+", regression), regression
    # then "Data larger than one machine": 2 workers holding 3 row groups each equal one process reading all 6
    parted = re.search(r"```bash\n(.*?)```", text[text.index("\n### Data larger than one machine\n") :], re.S)
    assert parted
    done = subprocess.run(["bash", "-e", "-c", parted.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    two, one = (checkpoint.load(str(tmp_path / "runs" / r / "final.npz")) for r in ("parted", "parted-serial"))
    assert np.max(np.abs(two.params - one.params)) < 1e-9
    parts = json.loads((tmp_path / "runs" / "parted" / "config.json").read_text())["extra"]["parts"]["parts"]
    assert [(p[1], p[-1]) for p in parts] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    assert re.search(r"accuracy \d+\.\d\d%", done.stdout), done.stdout


def test_the_quick_starts_table_block_runs_as_written(tmp_path: Path) -> None:
    """README.md's quick-start table block, its paths as in the clone (.venv/bin, tests/data), its run in tmp_path."""
    import os
    import re
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("\n## Quick start\n") : text.index("\n## A session\n")]
                      .split("After `make train`", 1)[1], re.S)  # fmt: skip
    assert block and "iris.csv" in block.group(1)
    (tmp_path / ".venv").mkdir()
    os.symlink(Path(sys.executable).parent, tmp_path / ".venv" / "bin")
    os.symlink(repo / "tests", tmp_path / "tests")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-e", "-c", block.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"iris\.csv test: 30 examples, accuracy \d+\.\d\d%", done.stdout), done.stdout
    assert (tmp_path / "runs" / "iris" / "final.npz").exists()
