"""The driver's view of a `--partitioned` table: metadata only.

`layout(config)` finds the parts (core/parts.py) and the feature columns from footers and
schemas; after the workers have read their parts, `PartedData` stands in for a Dataset in
planning and training (sizes, the TableInfo, a fingerprint, the Route) without a row in
it. `load_whole` reads every part in this process through the same code: the serial
reference (`--workers 0`), a replay, an evaluation of a run's test rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ConfigError
from nnps.core.part_rows import PartRows, combine
from nnps.core.parts import Part, Route, assign, find_parts, route_of, table_rows_of
from nnps.core.table_rows import label_columns
from nnps.core.tables import TableInfo, columns_of, open_source


@dataclass(frozen=True)
class Layout:
    """A partitioned table's parts (--data's, then --test-data's) and feature columns."""

    features: list[str]
    parts: list[Part]

    @property
    def first_rows(self) -> list[int]:
        return table_rows_of(self.parts)


def layout(config: TrainConfig) -> Layout:
    """The parts and features of config's table, from metadata; ConfigError for a source
    that cannot be cut (an .npz is read whole by numpy)."""
    for source in (config.data, config.test_data):
        if source and source.lower().endswith(".npz"):
            raise ConfigError(f"--partitioned: {source} is an .npz, which numpy reads whole; write it as Parquet "
                              f"to read it in parts")  # fmt: skip
    labels, targets = label_columns(config), config.task == "regress"
    train = open_source(config.data)  # listed, and every footer read, once
    features = columns_of(train, config.data, labels, config.features, targets)
    parts = find_parts(train, config.data)
    if config.test_data:
        test = open_source(config.test_data)
        columns_of(test, config.test_data, labels, tuple(features), targets, given=False)
        parts += find_parts(test, config.test_data, test=True)
    return Layout(features, parts)


@dataclass(frozen=True)
class PartedData:
    """A Dataset's stand-in for a table whose rows are on the workers."""

    name: str
    table: TableInfo
    n_train: int
    n_test: int
    route: Route
    fingerprint: str
    description: dict[str, Any]  # config.json's extra.parts

    @property
    def num_inputs(self) -> int:
        return len(self.table.features)

    @property
    def num_outputs(self) -> int:
        return self.table.outputs


def digest(parts: list[Part], train: list[int], test: list[int], info: TableInfo) -> str:
    """Which data a checkpoint was trained on: the parts, their row counts and the statistics."""
    text = json.dumps([[list(p.__dict__.values()) for p in parts], train, test, info.to_meta()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(lay: Layout, owner: list[int], train: list[int], test: list[int]) -> dict[str, Any]:
    """The parts as config.json records them: [path, row group (-1: a row range), lo, hi, test
    part, training rows, test rows, owner] each."""
    return {"columns": ["path", "group", "lo", "hi", "test", "train_rows", "test_rows", "worker"],
            "parts": [[p.path, p.group, p.lo, p.hi, p.test, a, b, w]
                      for p, a, b, w in zip(lay.parts, train, test, owner)]}  # fmt: skip


def parted(config: TrainConfig, lay: Layout, summaries: list[dict[str, Any]], owner: list[int], k: int) -> PartedData:
    """The stand-in, from the workers' summaries of their parts."""
    info, train, test = combine(config, lay.features, summaries, lay.parts)
    route = route_of(train, owner, k, config.seed, config.batch_size)
    name = config.data.rstrip("/").rsplit("/", 1)[-1]
    return PartedData(name, info, sum(train), sum(test), route, digest(lay.parts, train, test, info),
                      describe(lay, owner, train, test))  # fmt: skip


def load_whole(config: TrainConfig, workers: int = 1) -> tuple[Dataset, PartedData]:
    """Every part read here: the Dataset (rows in part order, so global indices are its own)
    and its stand-in, its parts owned as `workers` workers would own them."""
    lay = layout(config)
    rows = PartRows.read(config, lay.features, lay.parts, lay.first_rows)
    data = parted(config, lay, [rows.summary()], assign(lay.parts, max(workers, 1)), max(workers, 1))
    x, y, x_test, y_test = rows.scaled(data.table)
    return Dataset(data.name, x, y, x_test, y_test, table=data.table, digest=data.fingerprint), data
