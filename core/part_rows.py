"""A worker's own parts of a table: read, summed up for the driver, then scaled in place.

    rows = PartRows.read(config, features, parts, first_rows)   # only these parts, in chunks
    summary = rows.summary()            # per part: row counts, feature moments; the labels seen
    info, counts = combine(config, features, [summaries...])    # on the driver: exact, in part order
    worker = rows.shard_worker(network, info, route, me)        # scaled in place; global -> local rows

The driver reads no row: it combines each part's (count, mean, M2) in part order (Chan et
al.'s pairwise update), so every assignment of parts to workers, and `--workers 0` reading
every part, gets the same statistics bit for bit. A part's rows are float32 features plus a
label code or targets; a worker holds its training rows in part order, its test rows beside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnps.core.config import TrainConfig
from nnps.core.errors import DataError
from nnps.core.parts import Part, Route, held_out
from nnps.core.steps import ShardWorker
from nnps.core.table_labels import Vocabulary, class_names
from nnps.core.part_read import Placed, read_parts
from nnps.core.table_rows import label_columns, outputs_of
from nnps.core.tables import Moments, TableInfo, deviations, merge, moments, open_source

Array = np.ndarray


@dataclass
class PartRows:
    """The rows of some parts, as read: unscaled float32 features, label codes (in `vocab`)
    or unscaled targets, training rows and test rows apart; counts per part."""

    parts: list[Part]
    x: Array
    y: Array
    x_test: Array
    y_test: Array
    train_counts: list[int]
    test_counts: list[int]
    vocab: Vocabulary = field(default_factory=Vocabulary)

    @classmethod
    def read(cls, config: TrainConfig, features: list[str], parts: list[Part], first_rows: list[int]) -> PartRows:
        """Read `parts` (part i's first row number in its table: first_rows[i]), only them."""
        labels, targets = label_columns(config), config.task == "regress"
        masks = [np.ones(p.rows, bool) if p.test else
                 held_out(config.seed, config.test_fraction or 0.0, np.arange(r, r + p.rows))
                 for p, r in zip(parts, first_rows)]  # fmt: skip
        n_test = sum(int(m.sum()) for m in masks)
        n_train, d = sum(p.rows for p in parts) - n_test, len(features)
        into = Placed([np.empty((n_train, d), np.float32), np.empty((n_test, d), np.float32)])
        counts: list[list[int]] = [[], []]
        vocab, sources = Vocabulary(), {}
        for run in _runs(parts):
            source = config.test_data if parts[run[0]].test else config.data
            if source not in sources:
                dataset = open_source(source)
                sources[source] = (dataset, {f.path: f for f in dataset.get_fragments()})
            dataset, fragments = sources[source]
            if parts[run[0]].path not in fragments:
                raise DataError(f"{parts[run[0]].name()}: the file is gone from {source}")
            placed = read_parts(dataset, fragments[parts[run[0]].path], [parts[i] for i in run], [masks[i] for i in run],
                                features, labels, config.drop_missing, targets, vocab, into)  # fmt: skip
            for s in (0, 1):
                counts[s] += [c[s] for c in placed]
        import pyarrow as pa

        pa.default_memory_pool().release_unused()  # Arrow's freed pages back to the system: the reading's peak goes
        empty = np.empty((0, len(labels)), np.float32) if targets else np.empty(0, np.int32)
        y_of = [np.concatenate(into.ys[s]) if into.ys[s] else empty for s in (0, 1)]
        x, x_test = (into.xs[s][: into.filled[s]] for s in (0, 1))
        return cls(parts, x, y_of[0], x_test, y_of[1], counts[0], counts[1], vocab)

    def summary(self) -> dict[str, Any]:
        """What the driver needs of these parts: per part its training and test row counts and
        the moments of its training features (and targets); the label values its training rows hold."""
        stats, lo = [], 0
        for n in self.train_counts:
            x = moments(self.x[lo : lo + n])
            t = moments(self.y[lo : lo + n]) if self.y.ndim == 2 else None
            stats.append((x, t))
            lo += n
        seen = np.flatnonzero(np.bincount(self.y, minlength=len(self.vocab.values))) if self.y.ndim == 1 else []
        return {"parts": self.parts, "train": self.train_counts, "test": self.test_counts, "stats": stats,
                "labels": [self.vocab.values[c] for c in seen]}  # fmt: skip

    def scaled(self, info: TableInfo) -> tuple[Array, Array, Array, Array]:
        """(x, y, x_test, y_test) as the network takes them: features scaled in place, labels
        to class indices (or targets scaled), with the run's `info`."""
        where = self.parts[0].path if self.parts else "the table"
        x, y = info.scale(self.x), outputs_of(info, self.y, where, self.vocab)
        return x, y, info.scale(self.x_test), outputs_of(info, self.y_test, where, self.vocab)

    def shard_worker(self, network: Any, info: TableInfo, route: Route | None, me: int) -> ShardWorker:
        """A ShardWorker over these rows, scaled in place with the run's `info`; `route`: map
        the global training indices it is given to its own rows (None: it holds every part)."""
        if route is not None:
            for part, then, n in zip(self.parts, route.held(me)[1], self.train_counts):
                if then != n:  # a worker restarted after the file changed
                    raise DataError(f"{part.name()}: {n} training rows now, {then} when the run read it: the "
                                    f"table changed under the run")  # fmt: skip
        worker = ShardWorker(network, *self.scaled(info))
        if route is not None:
            worker.to_local = LocalRows(route, me)
        return worker


def _runs(parts: list[Part]) -> list[list[int]]:
    """The parts' indices in runs read together: consecutive row ranges of one CSV file (one
    pass over it), each Parquet row group alone."""
    runs: list[list[int]] = []
    for i, p in enumerate(parts):
        prev = parts[i - 1] if i else None
        if prev is not None and p.group < 0 and prev.group < 0 and prev.path == p.path and prev.hi == p.lo:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class LocalRows:
    """Global training indices to a worker's own rows: its parts' training rows, held in part order."""

    def __init__(self, route: Route, me: int) -> None:
        self.starts, sizes = route.held(me)
        self.local = np.concatenate([[0], np.cumsum(sizes)])[:-1].astype(np.int64)

    def __call__(self, g: Array) -> Array:
        p = np.searchsorted(self.starts, g, side="right") - 1
        return self.local[p] + (g - self.starts[p])


def combine(config: TrainConfig, features: list[str], summaries: list[dict[str, Any]],
            parts: list[Part]) -> tuple[TableInfo, list[int], list[int]]:  # fmt: skip
    """(the run's TableInfo, training rows per part, test rows per part) from the workers'
    summaries, combined in part order whoever read which."""
    index = {p: i for i, p in enumerate(parts)}
    train, test, stats = [0] * len(parts), [0] * len(parts), [None] * len(parts)
    vocab = Vocabulary()
    for s in summaries:
        for p, a, b, st in zip(s["parts"], s["train"], s["test"], s["stats"]):
            train[index[p]], test[index[p]], stats[index[p]] = a, b, st
        for v in s["labels"]:
            vocab._code(v)
    if sum(train) == 0:
        raise DataError(f"{config.data}: no training rows left to read")
    if sum(test) == 0:
        raise DataError(f"{config.data}: --test-fraction {config.test_fraction} of {sum(train)} rows leaves no test "
                        f"row (the split is a hash of each row's number)")  # fmt: skip
    labels = label_columns(config)
    total_x: Moments = (0, np.zeros(len(features)), np.zeros(len(features)))
    total_t: Moments = (0, np.zeros(len(labels)), np.zeros(len(labels)))
    for x_moments, t_moments in stats:
        total_x = merge(total_x, x_moments)
        if t_moments is not None:
            total_t = merge(total_t, t_moments)
    mean, std = deviations(total_x) if config.standardize else (None, None)
    if config.task == "classify":
        names = class_names(np.arange(len(vocab.values)), vocab, config.data, config.label)
        return TableInfo(tuple(features), names, mean, std), train, test
    t_mean, t_std = deviations(total_t) if config.standardize else (None, None)
    return TableInfo(tuple(features), (), mean, std, tuple(labels), t_mean, t_std), train, test
