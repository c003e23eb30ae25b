"""A table cut into parts fixed by the data, and which worker owns each training row.

Parts come from metadata only (a Parquet file's row groups, or PART_ROWS-row ranges of a CSV),
each a contiguous range of row numbers, the same for every run on the same files. `assign` gives
each of k workers a contiguous run of parts; `held_out` makes the test split a function of the
row number; `Route` sends each of a batch's global indices to its row's owner (uneven shards,
an empty one kept in place). So no process holds the table or a mask of all its rows:
docs/architecture.md, "Data larger than one machine: `--partitioned`".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from nnps.core.errors import DataError
from nnps.core.sampler import StreamSampler, mix64
from nnps.core.tables import TEST_SALT

Array = np.ndarray
PART_ROWS = 131_072  # rows per part of a CSV file (Parquet's parts are its row groups)


@dataclass(frozen=True)
class Part:
    """Rows lo..hi-1 of one file: its Parquet row group `group`, or (-1) a CSV's row range;
    `test`: every row is a test row (the parts of --test-data)."""

    path: str
    group: int
    lo: int
    hi: int
    test: bool = False

    @property
    def rows(self) -> int:
        return self.hi - self.lo

    def name(self) -> str:
        return f"{self.path} row group {self.group}" if self.group >= 0 else f"{self.path} rows {self.lo + 1}-{self.hi}"


def find_parts(dataset: Any, source: str, test: bool = False) -> list[Part]:
    """The parts of `source` (opened: tables.open_source) in row order, from Parquet footers (a
    CSV: a counting pass)."""
    parts: list[Part] = []
    for fragment in dataset.get_fragments():
        try:
            meta = getattr(fragment, "metadata", None)
            if meta is not None:  # row group g: the file's rows lo..hi-1
                ends = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
                parts += [Part(fragment.path, g, int(ends[g]), int(ends[g + 1]), test)
                          for g in range(meta.num_row_groups) if ends[g + 1] > ends[g]]  # fmt: skip
                continue
            n = fragment.count_rows()
        except Exception as e:  # a damaged footer, a ragged CSV row
            raise DataError(f"{fragment.path}: cannot read its row counts ({' '.join(str(e).split())[:300]})")
        parts += [Part(fragment.path, -1, lo, min(lo + PART_ROWS, n), test) for lo in range(0, n, PART_ROWS)]
    if not parts:
        raise DataError(f"{source}: no rows")
    return parts


def assign(parts: list[Part], k: int) -> list[int]:
    """The owner of each part: k contiguous runs of parts, each near 1/k of the rows (a
    worker may get none where there are fewer parts than workers)."""
    ends = np.cumsum([p.rows for p in parts])
    total = int(ends[-1])
    return [min(k - 1, int((end - p.rows / 2) * k // total)) for p, end in zip(parts, ends)]


def held_out(seed: int, fraction: float, rows: Array) -> Array:
    """Which of the table's row numbers `rows` are test rows: a uniform hash of (seed, row)
    below `fraction` (splitmix64), the same wherever the row is read."""
    z = mix64(rows.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + TEST_SALT) % 2**64))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


def table_rows_of(parts: list[Part]) -> list[int]:
    """Each part's first row number in its table (--data's, or --test-data's)."""
    first, at = [], {False: 0, True: 0}
    for p in parts:
        first.append(at[p.test])
        at[p.test] += p.rows
    return first


@dataclass(frozen=True)
class Route:
    """Where the training rows are: part p holds training rows starts[p]..starts[p+1]-1
    (global, in part order) and belongs to worker owner[p]."""

    starts: tuple[int, ...]  # (P + 1,)
    owner: tuple[int, ...]  # (P,)
    workers: int
    seed: int = 0
    batch_size: int = 1

    @cached_property
    def arrays(self) -> tuple[Array, Array]:
        """(starts, owner) as arrays, made once: `owners` runs every step."""
        return np.asarray(self.starts, np.int64), np.asarray(self.owner)

    def owners(self, indices: Array) -> Array:
        """The worker owning each global training index."""
        starts, owner = self.arrays
        return owner[np.searchsorted(starts, indices, side="right") - 1]

    def shards(self, indices: Array) -> list[Array]:
        """A batch's indices by owner, in batch order: shards[w] is worker w's (maybe empty)."""
        owners = self.owners(indices)
        return [indices[owners == w] for w in range(self.workers)]

    def held(self, worker: int) -> tuple[Array, Array]:
        """(the first global training row, the training rows) of each part `worker` holds, in part order."""
        starts, owner = self.arrays
        mine = np.flatnonzero(owner == worker)
        return starts[mine], starts[mine + 1] - starts[mine]

    def rows_held(self, worker: int) -> int:
        """How many training rows `worker` holds."""
        return int(self.held(worker)[1].sum())


def route_of(train_counts: list[int], owner: list[int], workers: int, seed: int, batch_size: int) -> Route:
    """The Route of parts holding `train_counts` training rows each."""
    starts = (0, *(int(s) for s in np.cumsum(train_counts)))
    return Route(starts, tuple(owner), workers, seed, batch_size)


class OwnBatches:
    """Bounded/async training on parts: the j-th update sent to worker w takes batch j of w's
    own sampler over its own training rows (an epoch a permutation of them, seeded by (seed,
    w)), as global indices, as Li et al.'s workers each sample their own data. `draws`: each
    worker's j so far (a Snapshot's, so a rebuilt server and a resumed run go on where it
    was); a replay counts them from the record. Constant memory: a StreamSampler over w's
    row count, its ranks mapped to global rows through w's parts."""

    def __init__(self, route: Route, draws: tuple[int, ...] = ()) -> None:
        self.route = route
        self.draws = list(draws) or [0] * route.workers
        held = [route.held(w) for w in range(route.workers)]
        self.first = [first for first, _ in held]  # each owned part's first global row
        self.rank = [np.concatenate([[0], np.cumsum(sizes)]) for _, sizes in held]  # (P_w + 1,) ranks where parts begin
        self.samplers = [StreamSampler(int(r[-1]), min(route.batch_size, int(r[-1])), route.seed * 1_000_003 + w)
                         if r[-1] else None for w, r in enumerate(self.rank)]  # fmt: skip

    def next(self, worker: int, t: int) -> Array:
        """The batch of the update `worker` is sent now (update t of the run)."""
        self.draws[worker] += 1
        return self.batch(worker, self.draws[worker] - 1)

    def batch(self, worker: int, j: int) -> Array:
        """Worker `worker`'s j-th batch, as global training indices."""
        sampler = self.samplers[worker]
        if sampler is None:
            raise DataError(f"worker {worker} owns no training rows; an update needs rows: use fewer --workers")
        ranks = sampler.batch(j)
        p = np.searchsorted(self.rank[worker], ranks, side="right") - 1
        return self.first[worker][p] + (ranks - self.rank[worker][p])
