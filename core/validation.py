"""A validation split carved from the training data, for model selection.

`nnps sweep` picks among trials by their accuracy on examples none of them trained on,
and reads the test set once, for the best trial only: choosing by test accuracy would
make the test set part of training. The split is a seeded permutation of the training
indices, so every trial of a sweep, and a `--resume`, holds out the same examples. A run
with `validation_fraction` > 0 trains on the rest and its per-epoch `test_*` metrics are
the validation split's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnps.core import catalog, table_rows, tables
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ConfigError
from nnps.core.parted_data import load_whole

SPLIT_SALT = 0x76616C  # "val": a stream of its own, apart from the batch order's


def carve(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """`dataset` with `fraction` of its training examples moved to the place of its test set."""
    n = len(dataset.y_train)
    k = int(round(n * fraction))
    if not 0 < k < n:
        raise ConfigError(f"--validation-fraction {fraction}: {k} of {n} training examples; leaves no split")
    order = np.random.default_rng([seed, SPLIT_SALT]).permutation(n)
    held, kept = np.sort(order[:k]), np.sort(order[k:])
    return dataclasses.replace(dataset, name=f"{dataset.name} (validation {fraction:g})", x_train=dataset.x_train[kept],
                               y_train=dataset.y_train[kept], x_test=dataset.x_train[held],
                               y_test=dataset.y_train[held])  # fmt: skip


def data_for(config: TrainConfig, progress: catalog.Progress | None = None,
             info: tables.TableInfo | None = None) -> Dataset:  # fmt: skip
    """What `--data` names, read as the config says (a table, or images by name or path),
    less its validation split where the config holds one out. `info`: a checkpoint's table
    description, to read the table as that network was trained (table_rows.load)."""
    if tables.is_table(config.data):
        return for_config(config, table_of(config, info))
    return for_config(config, catalog.load(config.data, progress=progress))


def table_of(config: TrainConfig, info: tables.TableInfo | None = None) -> Dataset:
    """A table run's rows as the run read them: a --partitioned table's parts, its test rows a
    hash of the row number (parted_data.py), else table_rows.load's."""
    if config.partitioned:
        return load_whole(config)[0]
    return table_rows.load(config, info)


def for_config(config: TrainConfig, dataset: Dataset) -> Dataset:
    """The data a run with `config` trains and is measured on."""
    if config.validation_fraction == 0:
        return dataset
    return carve(dataset, config.validation_fraction, config.seed)
