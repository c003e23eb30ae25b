"""A classifier's labels in a table: each row's label held as an int32 code into the distinct
values seen, so a label costs 4 bytes a row whatever the column holds (strings included);
the classes are found from the few distinct values, not from the rows.

`Vocabulary.encode` takes a batch's label column (pyarrow's dictionary encoding: the batch's
distinct values once, each row an index) and returns its rows' codes; `class_names` makes the
classes of the codes a training split holds (sorted, as names); `class_indices` maps codes to
a network's class indices. Labels compare by value: 1, 1.0 and True are one class, "1".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnps.core.errors import DataError
from nnps.core.tables import TableInfo

MAX_FLOAT_CLASSES = 20  # a label column of more distinct fractional values is a numeric target, not classes


def _key(value: Any) -> Any:
    """A label as classes are told apart by: integral numbers as ints, the rest as they are."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Vocabulary:
    """The distinct label values seen so far, in order of first sight; a value's code is its place."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._codes: dict[Any, int] = {}

    def _code(self, value: Any) -> int:
        key = _key(value)
        if key not in self._codes:
            self._codes[key] = len(self.values)
            self.values.append(key)
        return self._codes[key]

    def encode(self, column: Any) -> np.ndarray:
        """The int32 codes of a label column's rows (a null row gets 0: it is left out as missing)."""
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(column)
        remap = np.array([self._code(v) for v in encoded.dictionary.to_pylist()] or [0], dtype=np.int32)
        return remap[pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)]


def class_names(codes: np.ndarray, vocab: Vocabulary, where: str, label: str) -> tuple[str, ...]:
    """The classes of a training split: its distinct labels, sorted, as names."""
    values = [vocab.values[c] for c in np.flatnonzero(np.bincount(codes, minlength=len(vocab.values)))]
    if any(isinstance(v, float) for v in values) and len(values) > MAX_FLOAT_CLASSES:
        raise DataError(f"{where}: label column {label!r} holds {len(values)} distinct fractional values in its training rows: a "
                        f"numeric target, not classes: train a regression with --task regress")  # fmt: skip
    values.sort(key=lambda v: (isinstance(v, str), v))
    if len(values) < 2:
        raise DataError(f"{where}: label column {label!r} holds one class only ({str(values[0])!r}); a classifier needs two")
    return tuple(str(v) for v in values)


def class_indices(info: TableInfo, codes: np.ndarray, vocab: Vocabulary, where: str) -> np.ndarray:
    """Each row's index among `info.classes` (int32); DataError naming a label it lacks."""
    index = {name: i for i, name in enumerate(info.classes)}
    table = np.array([index.get(str(v), -1) for v in vocab.values] or [0], dtype=np.int32)
    present = np.flatnonzero(np.bincount(codes, minlength=len(vocab.values)))
    unknown = [str(vocab.values[c]) for c in present if table[c] < 0]
    if unknown:
        raise DataError(f"{where}: class {unknown[0]!r} is not one the network was trained on "
                        f"({', '.join(info.classes[:20])}{' ...' if len(info.classes) > 20 else ''})")  # fmt: skip
    return table[codes]
