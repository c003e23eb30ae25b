"""nnps on tables against scikit-learn's MLPClassifier / MLPRegressor, side by side in one run.

The library a user with a table would otherwise pick, on scikit-learn's bundled datasets
(breast_cancer, digits, wine with its classes given names, diabetes as a regression), with
the same for both:

    split        one seeded permutation per dataset and seed: 75% train, 25% test, written
                 as two Parquet files that nnps reads with --test-data; scikit-learn gets the
                 same rows as arrays
    network      hidden widths, ReLU, softmax + cross-entropy (scikit-learn: softmax + log-loss,
                 a logistic unit for two classes); regression: a linear output, squared error
    optimizer    Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8; no L2 (alpha=0); batch 32; a fixed
                 number of epochs (scikit-learn: max_iter=epochs, its tolerance stop disabled)
    scaling      each feature standardized over the training rows (nnps's default; scikit-learn:
                 a StandardScaler in a Pipeline); regression targets too (scikit-learn: a
                 TransformedTargetRegressor with a StandardScaler)

What differs and is left so: the initial weights (nnps: He normal for ReLU, `--weight-init
scaled`, biases 0; scikit-learn: Glorot uniform, biases too; a third column, "sklearn He",
runs scikit-learn from nnps's kind of initial weights, to tell the two apart), the batch order (nnps's sampler; scikit-learn's
shuffle), and nnps's two-class networks have two softmax outputs where scikit-learn has one
logistic unit. nnps runs in-process (`workers=0`: what its cost model picks for networks this
small), through `nnps.train` from its Parquet file: the time includes reading the table.

Reported per dataset: the test score (accuracy, or R^2) of each, mean over seeds, and the
training wall time of each (median over seeds), with the ratios. Run:
    .venv/bin/python bench/vs_sklearn.py [--seeds 5] [--epochs 100] [--out FILE]   (the table: docs/results.md)
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import datasets
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nnps

WINE_NAMES = np.array(["barolo", "grignolino", "barbera"])
# name: (loader, hidden widths, regression?)
SETS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], tuple[int, ...], bool]] = {
    "breast_cancer": (lambda: datasets.load_breast_cancer(return_X_y=True), (32,), False),
    "digits": (lambda: datasets.load_digits(return_X_y=True), (64,), False),
    "wine (named)": (lambda: (datasets.load_wine().data, WINE_NAMES[datasets.load_wine().target]), (16,), False),
    "diabetes (regression)": (lambda: datasets.load_diabetes(return_X_y=True), (32,), True),
}
BATCH, LR = 32, 1e-3


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(len(x))
    k = int(round(0.75 * len(x)))
    return x[order[:k]], y[order[:k]], x[order[k:]], y[order[k:]]


def table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    return pa.table({**{f"f{j}": x[:, j] for j in range(x.shape[1])}, "y": y})


def run_nnps(d: Path, x_tr, y_tr, x_te, y_te, hidden, regress: bool, epochs: int, seed: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    pq.write_table(table(x_tr, y_tr), d / "train.parquet")
    pq.write_table(table(x_te, y_te), d / "test.parquet")
    shape: dict[str, Any] = (dict(task="regress") if regress
                             else dict(output="softmax", cost="cross-entropy"))  # fmt: skip
    t0 = time.perf_counter()
    model = nnps.train(str(d / "train.parquet"), label="y", test_data=str(d / "test.parquet"), hidden=list(hidden),
                       activation="relu", weight_init="scaled", optimizer="adam", lr=LR, batch_size=BATCH,
                       epochs=epochs, seed=seed, workers=0, run_dir=d / f"run-{seed}", quiet=True, **shape)  # fmt: skip
    took = time.perf_counter() - t0
    e = model.evaluate()
    return (e.r2 if regress else e.accuracy), took  # type: ignore[return-value]


class HeInit:
    """scikit-learn's MLP started as nnps starts a ReLU network: W ~ N(0, 2 / fan_in), b = 0."""

    def _init_coef(self, fan_in: int, fan_out: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        w = self._random_state.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))  # type: ignore[attr-defined]
        return w.astype(dtype), np.zeros(fan_out, dtype)


class HeClassifier(HeInit, MLPClassifier):
    pass


class HeRegressor(HeInit, MLPRegressor):
    pass


def run_sklearn(x_tr, y_tr, x_te, y_te, hidden, regress: bool, epochs: int, seed: int,  # type: ignore[no-untyped-def]
                he: bool = False) -> tuple[float, float]:  # fmt: skip
    common = dict(hidden_layer_sizes=hidden, activation="relu", solver="adam", learning_rate_init=LR, alpha=0.0,
                  batch_size=BATCH, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, random_state=seed)  # fmt: skip
    if regress:
        mlp: Any = (HeRegressor if he else MLPRegressor)(**common)
        model: Any = TransformedTargetRegressor(make_pipeline(StandardScaler(), mlp), transformer=StandardScaler())
    else:
        model = make_pipeline(StandardScaler(), (HeClassifier if he else MLPClassifier)(**common))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_tr, y_tr)
    took = time.perf_counter() - t0
    predicted = np.asarray(model.predict(x_te)).ravel()
    return (r2_score(y_te, predicted) if regress else accuracy_score(y_te, predicted)), took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# bench/vs_sklearn.py, {datetime.date.today()}, commit {commit}, {args.seeds} seeds, "
             f"{args.epochs} epochs, batch {BATCH}, Adam lr {LR}",
             f"{'dataset':<22} {'hidden':>7} {'score':>6} {'nnps':>8} {'sklearn':>8} {'diff':>7} {'sklearn He':>10}   "
             f"{'nnps s':>7} {'sklearn s':>9} {'time ratio':>10}"]  # fmt: skip
    print("\n".join(lines), flush=True)
    for name, (load, hidden, regress) in SETS.items():
        x, y = load()
        ours, theirs, he, t_ours, t_theirs = [], [], [], [], []
        for seed in range(args.seeds):
            parts = split(x, y, seed)
            with tempfile.TemporaryDirectory() as d:
                score, took = run_nnps(Path(d), *parts, hidden, regress, args.epochs, seed)
            ours.append(score), t_ours.append(took)
            score, took = run_sklearn(*parts, hidden, regress, args.epochs, seed)
            theirs.append(score), t_theirs.append(took)
            he.append(run_sklearn(*parts, hidden, regress, args.epochs, seed, he=True)[0])
        a, b = float(np.mean(ours)), float(np.mean(theirs))
        ta, tb = float(np.median(t_ours)), float(np.median(t_theirs))
        diff = f"{a - b:+.4f}" if regress else f"{100 * (a - b):+.2f}pt"
        shown = (lambda v: f"{v:.4f}") if regress else (lambda v: f"{100 * v:.2f}%")
        line = (f"{name:<22} {','.join(map(str, hidden)):>7} {'R^2' if regress else 'acc':>6} {shown(a):>8} "
                f"{shown(b):>8} {diff:>7} {shown(float(np.mean(he))):>10}   {ta:>7.2f} {tb:>9.2f} {ta / tb:>9.2f}x")  # fmt: skip
        lines.append(line)
        print(line, flush=True)
    lines.append("time ratio: nnps's wall time over scikit-learn's (below 1: nnps faster); diff: nnps minus sklearn")
    print(lines[-1])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
