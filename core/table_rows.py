"""A table's rows as a Dataset: float32 features, class indices or targets, and its TableInfo.

`load(config)` reads `--data` (and `--test-data`) for training: the classes are the
sorted distinct training labels (or, for --task regress, the --label columns are numeric
targets, standardized like the features), the standardization is the training split's. Given a
checkpoint's `TableInfo` (`info=`), the same reading uses its features, classes and
statistics instead: what evaluate and predict do with new rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import DataError
from nnps.core.table_labels import Vocabulary, class_indices, class_names
from nnps.core.table_npz import arrow_table
from nnps.core.tables import TEST_SALT, TableInfo, columns_of, open_source, standardization


BATCH_ROWS = 16_384  # rows of a table decoded at a time


def load(config: TrainConfig, info: TableInfo | None = None) -> Dataset:
    """The training and test rows of a table run (`info`: a checkpoint's, to read as it was trained)."""
    source = open_source(config.data)
    n = _count(source, config.data)
    labels, targets = label_columns(config), config.task == "regress"
    features = list(info.features) if info else columns_of(source, config.data, labels, config.features, targets)
    to_test = np.zeros(n, dtype=bool)
    if config.test_fraction:
        k = int(round(n * config.test_fraction))
        if not 0 < k < n:
            raise DataError(f"{config.data}: --test-fraction {config.test_fraction} of {n} rows leaves no split")
        to_test[np.random.default_rng([config.seed, TEST_SALT]).choice(n, k, replace=False)] = True
    vocab = Vocabulary()  # a classifier's labels, as codes: train and test rows share it
    (x_train, y_train), (x_test, y_test) = read(source, config.data, features, labels, to_test, config.drop_missing,
                                                targets, vocab)  # fmt: skip
    test_data: Any = config.test_data
    where = config.test_data or f"{config.data} (x_test, y_test)"
    if not test_data and not config.test_fraction and config.data.lower().endswith(".npz"):  # its own test arrays
        test_data = arrow_table(config.data, "test")
    if test_data is not None:
        test_source = open_source(test_data)
        to_test = np.zeros(_count(test_source, where), dtype=bool)
        columns_of(test_source, where, labels, tuple(features), targets, given=False)
        (x_test, y_test), _ = read(test_source, where, features, labels, to_test, config.drop_missing, targets, vocab)
    if info is None:
        info = _describe(config, features, labels, x_train, y_train, vocab)
    y_train = outputs_of(info, y_train, config.data, vocab)
    y_test = outputs_of(info, y_test, config.test_data or config.data, vocab)
    name = config.data.rstrip("/").rsplit("/", 1)[-1]
    return Dataset(name, info.scale(x_train), y_train, info.scale(x_test), y_test, table=info)


def label_columns(config: TrainConfig) -> list[str]:
    """The column of classes, or a regression's target columns (--label a,b)."""
    return config.label.split(",") if config.task == "regress" else [config.label]


def _describe(config: TrainConfig, features: list[str], labels: list[str], x: np.ndarray, y: np.ndarray,
              vocab: Vocabulary) -> TableInfo:  # fmt: skip
    """The TableInfo of a run's training rows: its classes or targets, and their standardization."""
    mean, std = standardization(x) if config.standardize else (None, None)
    if config.task == "classify":
        return TableInfo(tuple(features), class_names(y, vocab, config.data, config.label), mean, std)
    target_mean, target_std = standardization(y) if config.standardize else (None, None)
    return TableInfo(tuple(features), (), mean, std, tuple(labels), target_mean, target_std)


def outputs_of(info: TableInfo, y: np.ndarray, where: str, vocab: Vocabulary) -> np.ndarray:
    """What the network is taught to output for labels `y` (codes in `vocab`, or targets): class
    indices, or scaled targets."""
    return info.scale_targets(y.astype(np.float32)) if info.targets else class_indices(info, y, vocab, where)


def rows(info: TableInfo, path: Any, label: str | None, drop_missing: bool = False,
         where: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Every row of `path` (or of an Arrow table in memory, called `where` in messages) scaled
    for a network trained with `info`: (x, class indices or scaled targets, or None where the
    rows lack the label column(s))."""
    source = open_source(path)
    path = where or path
    n = _count(source, path)
    labels = list(info.targets) if info.targets else [label] if label else []
    has_label = bool(labels) and all(c in source.schema.names for c in labels)
    labels = labels if has_label else []
    columns_of(source, path, labels, info.features, bool(info.targets), given=False)
    vocab = Vocabulary()
    (x, y), _ = read(source, path, list(info.features), labels, np.zeros(n, dtype=bool), drop_missing,
                     bool(info.targets), vocab)  # fmt: skip
    return info.scale(x), outputs_of(info, y, path, vocab) if has_label else None


def _count(source: Any, where: str) -> int:
    """The rows of a source (Parquet: from the footers; CSV: a counting pass), or DataError."""
    try:
        n = source.count_rows()
    except Exception as e:  # ArrowInvalid: a ragged row found while counting
        raise DataError(f"{where}: {' '.join(str(e).split()) or type(e).__name__}")
    if n == 0:
        raise DataError(f"{where}: no rows")
    return n


def read(source: Any, where: str, features: list[str], labels: list[str], to_test: np.ndarray, drop_missing: bool,
         targets: bool, vocab: Vocabulary) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """((x, labels) of the rows not in `to_test`, (x, labels) of those in it), a batch at a
    time into arrays made at their final size: the float32 rows plus one batch in memory.
    A regression's labels (`targets`) are float32 (n, T); a classifier's int32 codes in `vocab`."""
    n, d = len(to_test), len(features)
    xs = [np.empty((n - int(to_test.sum()), d), np.float32), np.empty((int(to_test.sum()), d), np.float32)]
    ys: list[list[np.ndarray]] = [[], []]
    filled, offset = [0, 0], 0
    try:
        # One batch at a time, in this thread: with pyarrow's defaults (threads reading ahead 16
        # batches of 131,072 rows, 4 files) decoded batches queue up while the copies below run
        for batch in source.to_batches(columns=features + labels, batch_size=BATCH_ROWS, batch_readahead=1,
                                       fragment_readahead=1, use_threads=False):  # fmt: skip
            block, y, keep = _block(batch, where, features, labels, offset, drop_missing, targets, vocab)
            for s in (0, 1):
                chosen = keep & (to_test[offset : offset + batch.num_rows] == bool(s))
                k = int(chosen.sum())
                xs[s][filled[s] : filled[s] + k] = block[chosen]
                ys[s].append(y[chosen])
                filled[s] += k
            offset += batch.num_rows
    except DataError:
        raise
    except Exception as e:  # ArrowInvalid: a ragged CSV row, a value that is not a number, a damaged file
        raise DataError(f"{where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    if filled[0] == 0:
        raise DataError(f"{where}: no rows left to read" + (" (--drop-missing left out every row)" if drop_missing else ""))
    empty = np.empty((0, len(labels)), np.float32) if targets else np.empty(0, np.int32)
    return tuple((xs[s][: filled[s]], np.concatenate(ys[s]) if ys[s] else empty) for s in (0, 1))  # type: ignore[return-value]


def _floats(column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)


def _block(batch: Any, where: str, features: list[str], labels: list[str], offset: int, drop_missing: bool,
           targets: bool, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """A batch's features as float32 (m, d), its labels (codes; targets: float32 (m, T)), and which
    rows are whole (no null, NaN or empty cell); DataError at the first gap unless `drop_missing`."""
    import pyarrow.compute as pc

    m, d = batch.num_rows, len(features)
    block = np.empty((m, d), np.float32)
    for j in range(d):
        block[:, j] = _floats(batch.column(j))
    gaps = np.isnan(block)  # (m, d): a null cast to float32 is NaN
    missing = gaps.any(axis=1)
    y: np.ndarray = np.zeros(m, np.int32)  # rows to predict have no labels
    if labels and targets:
        y = np.stack([_floats(batch.column(d + t)) for t in range(len(labels))], axis=1)
        missing |= np.isnan(y).any(axis=1)
    elif labels:
        column = batch.column(d)
        missing |= pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
        y = vocab.encode(column)
    if missing.any() and not drop_missing:
        r = int(np.argmax(missing))
        bad = [features[j] for j in np.flatnonzero(gaps[r])]
        bad += [labels[t] for t in np.flatnonzero(np.isnan(y[r]))] if targets and labels else labels
        raise DataError(f"{where}: a missing value in column {bad[0]!r} at row {offset + r + 1} "
                        f"(--drop-missing leaves such rows out)")  # fmt: skip
    return block, y, ~missing
