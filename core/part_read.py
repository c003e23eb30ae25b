"""One part of a table read into its place in a worker's arrays, in bounded memory.

A Parquet row group is decoded a few columns at a time (READ_BYTES of float32 a read):
pyarrow decodes a row group's column chunks whole whatever the batch size, so reading every
column at once costs about 2.5 times the row group in Arrow buffers (a 100 MB row group
peaked at 400-500 MB); each column goes straight into the rows' final places, test rows
apart. A CSV's row range is decoded a batch at a time, skipping the file's rows before it.
Either way the part's missing values are found as core/table_rows.py finds them: refused
with their column and row, or (--drop-missing) the row left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnps.core.errors import DataError
from nnps.core.parts import Part
from nnps.core.table_labels import Vocabulary
from nnps.core.table_rows import BATCH_ROWS, _block, _floats

Array = np.ndarray
READ_BYTES = 16 << 20  # float32 bytes of a row group decoded at a time


@dataclass
class Placed:
    """Where a worker's rows go: training (0) and test (1) arrays made at their final size,
    how many of each are filled, and their labels so far."""

    xs: list[Array]
    filled: list[int] = field(default_factory=lambda: [0, 0])
    ys: list[list[Array]] = field(default_factory=lambda: [[], []])


def read_parts(dataset: Any, fragment: Any, parts: list[Part], masks: list[Array], features: list[str],
               labels: list[str], drop_missing: bool, targets: bool, vocab: Vocabulary,
               into: Placed) -> list[tuple[int, int]]:  # fmt: skip
    """Parts of one file into `into` (masks: which of each part's rows are test rows): row groups
    one by one, a run of consecutive CSV row ranges in one pass. Returns each part's (training,
    test) rows placed; DataError naming the part."""
    counts = []
    try:
        if parts[0].group < 0:
            return _row_ranges(dataset, fragment, parts, masks, features, labels, drop_missing, targets, vocab, into)
        for part, mask in zip(parts, masks):
            before = list(into.filled)
            _row_group(dataset, fragment, part, mask, features, labels, drop_missing, targets, vocab, into)
            counts.append((into.filled[0] - before[0], into.filled[1] - before[1]))
        return counts
    except DataError:
        raise
    except Exception as e:  # a damaged or unreachable file
        part = parts[len(counts)]
        raise DataError(f"{part.name()}: cannot read it ({' '.join(str(e).split())[:300] or type(e).__name__})")


def _scanner(dataset: Any, fragment: Any, columns: list[str], **kw: Any) -> Any:
    import pyarrow.dataset as pds

    return pds.Scanner.from_fragment(fragment, schema=dataset.schema, columns=columns, batch_readahead=1,
                                     fragment_readahead=1, use_threads=False, **kw)  # fmt: skip


def _row_group(dataset: Any, fragment: Any, part: Part, mask: Array, features: list[str], labels: list[str],
               drop_missing: bool, targets: bool, vocab: Vocabulary, into: Placed) -> None:  # fmt: skip
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    piece = fragment.subset(row_group_ids=[part.group])
    # the columns of a read fetched in few requests (coalesced ranges): an object store's latency per request
    buffered = pds.ParquetFragmentScanOptions(pre_buffer=True)
    n, where = part.rows, [~mask, mask]
    missing, y = np.zeros(n, bool), np.zeros(n, np.int32)
    if labels:
        table = _scanner(dataset, piece, labels, fragment_scan_options=buffered).to_table()
        if targets:
            y = np.stack([_floats(table.column(t)) for t in labels], axis=1)
            missing |= np.isnan(y).any(axis=1)
        else:
            column = table.column(labels[0]).combine_chunks()
            missing |= pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)
            y = vocab.encode(column)
    gap = (n, "")  # (row, column) of the first missing value
    if missing.any():
        r = int(np.argmax(missing))
        gap = (r, labels[int(np.argmax(np.isnan(y[r])))] if targets else labels[0])
    views = [into.xs[s][into.filled[s] : into.filled[s] + int(where[s].sum())] for s in (0, 1)]
    per = max(1, READ_BYTES // (4 * n))
    for lo in range(0, len(features), per):
        table = _scanner(dataset, piece, features[lo : lo + per], fragment_scan_options=buffered).to_table()
        for j, name in enumerate(features[lo : lo + per]):
            v = _floats(table.column(name))  # (n,) float32; a null is NaN
            if (nan := np.isnan(v)).any():
                missing |= nan
                gap = min(gap, (int(np.argmax(nan)), name))
            for s in (0, 1):
                views[s][:, lo + j] = v[where[s]]
    if missing.any() and not drop_missing:
        raise DataError(f"{part.name()}: a missing value in column {gap[1]!r} at row {part.lo + gap[0] + 1} "
                        f"(--drop-missing leaves such rows out)")  # fmt: skip
    for s in (0, 1):
        keep = ~missing[where[s]]
        if not keep.all():
            views[s][: int(keep.sum())] = views[s][keep]
        into.ys[s].append(y[where[s]][keep])
        into.filled[s] += int(keep.sum())


def _row_ranges(dataset: Any, fragment: Any, parts: list[Part], masks: list[Array], features: list[str],
                labels: list[str], drop_missing: bool, targets: bool, vocab: Vocabulary,
                into: Placed) -> list[tuple[int, int]]:  # fmt: skip
    """Consecutive row ranges of a CSV file in one pass from its start (a CSV has no index to
    seek by): the rows before the first skipped, each row to its place; per part (training, test)."""
    first, span = parts[0].lo, parts[-1].hi - parts[0].lo
    mask, ends = np.concatenate(masks), np.cumsum([p.rows for p in parts])
    counts = np.zeros((len(parts), 2), np.int64)
    at = -first  # the batch's first row, counted from the first part's
    for batch in _scanner(dataset, fragment, features + labels, batch_size=BATCH_ROWS).to_batches():
        lo, hi = max(0, -at), min(batch.num_rows, span - at)
        if hi > lo:
            block, y, keep = _block(batch.slice(lo, hi - lo), parts[0].path, features, labels, first + at + lo,
                                    drop_missing, targets, vocab)  # fmt: skip
            which = np.searchsorted(ends, np.arange(at + lo, at + hi), side="right")  # each row's part
            for s in (0, 1):
                chosen = keep & (mask[at + lo : at + hi] == bool(s))
                k = int(chosen.sum())
                into.xs[s][into.filled[s] : into.filled[s] + k] = block[chosen]
                into.ys[s].append(y[chosen])
                into.filled[s] += k
                counts[:, s] += np.bincount(which[chosen], minlength=len(parts))
        at += batch.num_rows
        if at >= span:
            break
    return [(int(a), int(b)) for a, b in counts]
