"""An `.npz` of float arrays as a table: `x_train` (n, d) and `y_train` (n,) or (n, T), with
`x_test`/`y_test` as its test rows where it has them. (An .npz of images holds (n, rows,
cols) arrays: core/datasets.py reads those.)

Its columns are named x1..xd, and its labels `label` (one column: classes, or one target
with --task regress) or y1..yT (several targets: --task regress --label y1,y2). The arrays
are read whole (an .npz is one compressed file, not read in batches) and handed to the
table reader as an Arrow table in memory.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nnps.core.errors import DataError


def _header(z: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of an array in the archive, from its header alone; None if it has none."""
    if f"{name}.npy" not in z.namelist():
        return None
    with z.open(f"{name}.npy") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)  # then the header alone, not the data
        shape, _, dtype = fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
    return shape, dtype


def is_npz_table(source: str) -> bool:
    """An .npz whose x_train is float rows (n, d), not images (n, rows, cols), nor flattened uint8 images (n, pixels)."""
    try:
        with zipfile.ZipFile(Path(source).expanduser()) as z:
            found = _header(z, "x_train")
    except (OSError, zipfile.BadZipFile, ValueError):
        return False  # not there or not readable: the image reader says why
    return found is not None and len(found[0]) == 2 and found[1].kind == "f"


def has_test_rows(source: str) -> bool:
    try:
        with zipfile.ZipFile(Path(source).expanduser()) as z:
            return _header(z, "x_test") is not None
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def arrow_table(source: str, part: str) -> Any:
    """The `part` ("train" or "test") rows of an .npz table as an Arrow table."""
    import pyarrow as pa

    try:
        with np.load(Path(source).expanduser(), allow_pickle=False) as z:
            x, y = z[f"x_{part}"], z[f"y_{part}"] if f"y_{part}" in z.files else None
    except Exception as e:  # BadZipFile, a missing array, a damaged member
        raise DataError(f"{source}: not a readable .npz table ({type(e).__name__}: {e})")
    if x.ndim != 2 or (y is not None and (y.ndim not in (1, 2) or len(y) != len(x))):
        raise DataError(f"{source}: x_{part} must be (rows, features) and y_{part} (rows,) or (rows, targets); "
                        f"got {x.shape} and {None if y is None else y.shape}")  # fmt: skip
    columns: dict[str, Any] = {f"x{j + 1}": x[:, j] for j in range(x.shape[1])}
    if y is not None and y.ndim == 2:
        columns.update({f"y{t + 1}": y[:, t] for t in range(y.shape[1])})
    elif y is not None:
        columns["label"] = y
    return pa.table(columns)
