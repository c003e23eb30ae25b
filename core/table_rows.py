"""A table's rows as a Dataset: float32 features, class indices, and its TableInfo.

`load(config)` reads `--data` (and `--test-data`) for training: the classes are the
sorted distinct training labels, the standardization is the training split's. Given a
checkpoint's `TableInfo` (`info=`), the same reading uses its features, classes and
statistics instead: what evaluate and predict do with new rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import DataError
from nnps.core.tables import TEST_SALT, TableInfo, columns_of, open_source, standardization

MAX_FLOAT_CLASSES = 20  # a float label column with more distinct values is a numeric target, not classes


def load(config: TrainConfig, info: TableInfo | None = None) -> Dataset:
    """The training and test rows of a table run (`info`: a checkpoint's, to read as it was trained)."""
    source = open_source(config.data)
    n = _count(source, config.data)
    features = list(info.features) if info else columns_of(source, config.data, config.label, config.features)
    to_test = np.zeros(n, dtype=bool)
    if config.test_fraction:
        k = int(round(n * config.test_fraction))
        if not 0 < k < n:
            raise DataError(f"{config.data}: --test-fraction {config.test_fraction} of {n} rows leaves no split")
        to_test[np.random.default_rng([config.seed, TEST_SALT]).choice(n, k, replace=False)] = True
    (x_train, y_train), (x_test, y_test) = read(source, config.data, features, config.label, to_test,
                                                config.drop_missing)  # fmt: skip
    if config.test_data:
        test_source = open_source(config.test_data)
        to_test = np.zeros(_count(test_source, config.test_data), dtype=bool)
        columns_of(test_source, config.test_data, config.label, tuple(features))
        (x_test, y_test), _ = read(test_source, config.test_data, features, config.label, to_test, config.drop_missing)
    if info is None:
        names = class_names(y_train, config.data, config.label)
        mean, std = standardization(x_train) if config.standardize else (None, None)
        info = TableInfo(tuple(features), names, mean, std)
    y_train = class_indices(info, y_train, config.data)
    y_test = class_indices(info, y_test, config.test_data or config.data)
    name = config.data.rstrip("/").rsplit("/", 1)[-1]
    return Dataset(name, info.scale(x_train), y_train, info.scale(x_test), y_test, table=info)


def rows(info: TableInfo, path: str, label: str | None, drop_missing: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Every row of `path` scaled for a network trained with `info`: (x, class indices, or
    None where the file has no `label` column)."""
    source = open_source(path)
    n = _count(source, path)
    has_label = label is not None and label in source.schema.names
    columns_of(source, path, label if has_label else None, info.features)
    (x, y), _ = read(source, path, list(info.features), label if has_label else None,
                     np.zeros(n, dtype=bool), drop_missing)  # fmt: skip
    return info.scale(x), class_indices(info, y, path) if has_label else None


def _count(source: Any, where: str) -> int:
    """The rows of a source (Parquet: from the footers; CSV: a counting pass), or DataError."""
    try:
        n = source.count_rows()
    except Exception as e:  # ArrowInvalid: a ragged row found while counting
        raise DataError(f"{where}: {' '.join(str(e).split()) or type(e).__name__}")
    if n == 0:
        raise DataError(f"{where}: no rows")
    return n


def read(source: Any, where: str, features: list[str], label: str | None, to_test: np.ndarray,
         drop_missing: bool) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """((x, labels) of the rows not in `to_test`, (x, labels) of those in it), a batch at a
    time into arrays made at their final size: the float32 rows plus one batch in memory."""
    n, d = len(to_test), len(features)
    xs = [np.empty((n - int(to_test.sum()), d), np.float32), np.empty((int(to_test.sum()), d), np.float32)]
    ys: list[list[np.ndarray]] = [[], []]
    filled, offset = [0, 0], 0
    columns = features + ([label] if label else [])
    try:
        for batch in source.to_batches(columns=columns):
            block, labels, keep = _block(batch, where, features, label, offset, drop_missing)
            for s in (0, 1):
                chosen = keep & (to_test[offset : offset + batch.num_rows] == bool(s))
                k = int(chosen.sum())
                xs[s][filled[s] : filled[s] + k] = block[chosen]
                ys[s].append(labels[chosen])
                filled[s] += k
            offset += batch.num_rows
    except DataError:
        raise
    except Exception as e:  # ArrowInvalid: a ragged CSV row, a value that is not a number, a damaged file
        raise DataError(f"{where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    if filled[0] == 0:
        raise DataError(f"{where}: no rows left to read" + (" (--drop-missing left out every row)" if drop_missing else ""))
    return tuple((xs[s][: filled[s]], np.concatenate(ys[s]) if ys[s] else np.empty(0)) for s in (0, 1))  # type: ignore[return-value]


def _block(batch: Any, where: str, features: list[str], label: str | None, offset: int,
           drop_missing: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """A batch's features as float32 (m, d), its labels, and which rows are whole (no null,
    NaN or empty cell); DataError at the first gap unless `drop_missing`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = batch.num_rows
    block = np.empty((m, len(features)), np.float32)
    for j in range(len(features)):
        block[:, j] = pc.cast(batch.column(j), pa.float32()).to_numpy(zero_copy_only=False)
    gaps = np.isnan(block)  # (m, d): a null cast to float32 is NaN
    labels = np.zeros(m)
    missing = gaps.any(axis=1)
    if label:
        column = batch.column(len(features))
        missing |= pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
        labels = column.to_numpy(zero_copy_only=False)
    if missing.any() and not drop_missing:
        r = int(np.argmax(missing))
        bad = [features[j] for j in np.flatnonzero(gaps[r])] or [label]
        raise DataError(f"{where}: a missing value in column {bad[0]!r} at row {offset + r + 1} "
                        f"(--drop-missing leaves such rows out)")  # fmt: skip
    return block, labels, ~missing


def _keys(labels: np.ndarray) -> np.ndarray:
    """Labels as what classes are told apart by: integers, or strings."""
    if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
        return labels.astype(np.int64)
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    return labels.astype(str) if labels.dtype == object else labels


def class_names(labels: np.ndarray, where: str, label: str) -> tuple[str, ...]:
    """The classes: the sorted distinct training labels, as names."""
    keys = _keys(labels)
    distinct = np.unique(keys)
    if keys.dtype.kind == "f" and len(distinct) > MAX_FLOAT_CLASSES:
        raise DataError(f"{where}: label column {label!r} holds {len(distinct)} distinct fractional values in its training rows: a "
                        f"numeric target, not classes; nnps trains classifiers (--label names a column of classes)")  # fmt: skip
    if len(distinct) < 2:
        raise DataError(f"{where}: label column {label!r} holds one class only ({str(distinct[0])!r}); a classifier needs two")
    return tuple(str(v) for v in distinct)


def class_indices(info: TableInfo, labels: np.ndarray, where: str) -> np.ndarray:
    """Each label's index among `info.classes` (int32); DataError naming a label it lacks."""
    distinct, inverse = np.unique(_keys(labels).astype(str), return_inverse=True)
    index = {name: i for i, name in enumerate(info.classes)}
    unknown = [str(k) for k in distinct if str(k) not in index]
    if unknown:
        raise DataError(f"{where}: class {unknown[0]!r} is not one the network was trained on "
                        f"({', '.join(info.classes[:20])}{' ...' if len(info.classes) > 20 else ''})")  # fmt: skip
    return np.array([index[str(k)] for k in distinct], dtype=np.int32)[inverse.ravel()]
