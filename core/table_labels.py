"""A classifier's labels in a table: each row's label held as an int32 code into the distinct
values seen, so a label costs 4 bytes a row whatever the column holds (strings included);
the classes are found from the few distinct values, not from the rows.

`Vocabulary.encode` takes a batch's label column (pyarrow's dictionary encoding: the batch's
distinct values once, each row an index) and returns its rows' codes; `class_names` makes the
classes of the codes a training split holds (sorted, as names); `class_indices` maps codes to
a network's class indices. Labels compare by value: 1, 1.0 and True are one class; a float32
column's values are taken at their shortest decimal (0.1, not 0.10000000149011612), so a
float32 file and a float64 one name their classes alike. Numbers are named as integers where
every class is a whole number ("1"), else as decimals ("1.0", "0.5").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnps.core.errors import DataError
from nnps.core.tables import TableInfo

MAX_FLOAT_CLASSES = 20  # a label column of more distinct fractional values is a numeric target, not classes


def _key(value: Any, float32: bool) -> Any:
    """A label as classes are told apart by (1 == 1.0 == True as dict keys)."""
    if isinstance(value, bool):
        return int(value)
    if float32 and isinstance(value, float):
        return float(str(np.float32(value)))  # its shortest decimal as float32
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _names(value: Any) -> list[str]:
    """The names a label value may have: "1" and "1.0" for a whole number, else its str."""
    if isinstance(value, (int, float)) and _whole(value):
        return [str(int(value)), str(float(value))]
    return [str(value)]


class Vocabulary:
    """The distinct label values seen so far, in order of first sight; a value's code is its place."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._codes: dict[Any, int] = {}

    def _code(self, value: Any, float32: bool = False) -> int:
        key = _key(value, float32)
        if key not in self._codes:
            self._codes[key] = len(self.values)
            self.values.append(key)
        return self._codes[key]

    def encode(self, column: Any) -> np.ndarray:
        """The int32 codes of a label column's rows (a null row gets 0: it is left out as missing)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(column)
        float32 = pa.types.is_float32(encoded.dictionary.type)
        remap = np.array([self._code(v, float32) for v in encoded.dictionary.to_pylist()] or [0], dtype=np.int32)
        return remap[pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)]


def class_names(codes: np.ndarray, vocab: Vocabulary, where: str, label: str) -> tuple[str, ...]:
    """The classes of a training split: its distinct labels, sorted, as names."""
    values = [vocab.values[c] for c in np.flatnonzero(np.bincount(codes, minlength=len(vocab.values)))]
    if any(isinstance(v, float) for v in values) and len(values) > MAX_FLOAT_CLASSES:
        raise DataError(f"{where}: label column {label!r} holds {len(values)} distinct fractional values in its training rows: a "
                        f"numeric target, not classes: train a regression with --task regress")  # fmt: skip
    values.sort(key=lambda v: (isinstance(v, str), v))
    whole = all(_whole(v) for v in values)
    names = tuple(str(int(v)) if whole and not isinstance(v, str) else str(v) for v in values)
    if len(names) < 2:
        raise DataError(f"{where}: label column {label!r} holds one class only ({names[0]!r}); a classifier needs two")
    return names


def class_indices(info: TableInfo, codes: np.ndarray, vocab: Vocabulary, where: str) -> np.ndarray:
    """Each row's index among `info.classes` (int32); DataError naming a label it lacks."""
    index = {name: i for i, name in enumerate(info.classes)}
    table = np.array([next((index[n] for n in _names(v) if n in index), -1) for v in vocab.values] or [0],
                     dtype=np.int32)  # fmt: skip
    present = np.flatnonzero(np.bincount(codes, minlength=len(vocab.values)))
    unknown = [str(vocab.values[c]) for c in present if table[c] < 0]
    if unknown:
        raise DataError(f"{where}: class {unknown[0]!r} is not one the network was trained on "
                        f"({', '.join(info.classes[:20])}{' ...' if len(info.classes) > 20 else ''})")  # fmt: skip
    return table[codes]
