"""A validation split carved from the training data, for model selection.

`nnps sweep` picks among trials by their accuracy on examples none of them trained on,
and reads the test set once, for the best trial only: choosing by test accuracy would
make the test set part of training. The split is a seeded permutation of the training
indices, so every trial of a sweep, and a `--resume`, holds out the same examples. A run
with `validation_fraction` > 0 trains on the rest and its per-epoch `test_*` metrics are
the validation split's.
"""

from __future__ import annotations

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ConfigError

SPLIT_SALT = 0x76616C  # "val": a stream of its own, apart from the batch order's


def carve(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """`dataset` with `fraction` of its training examples moved to the place of its test set."""
    n = len(dataset.y_train)
    k = int(round(n * fraction))
    if not 0 < k < n:
        raise ConfigError(f"--validation-fraction {fraction}: {k} of {n} training examples; leaves no split")
    order = np.random.default_rng([seed, SPLIT_SALT]).permutation(n)
    held, kept = np.sort(order[:k]), np.sort(order[k:])
    return Dataset(f"{dataset.name} (validation {fraction:g})", dataset.x_train[kept], dataset.y_train[kept],
                   dataset.x_train[held], dataset.y_train[held], dataset.image_shape)  # fmt: skip


def for_config(config: TrainConfig, dataset: Dataset) -> Dataset:
    """The data a run with `config` trains and is measured on."""
    if config.validation_fraction == 0:
        return dataset
    return carve(dataset, config.validation_fraction, config.seed)
