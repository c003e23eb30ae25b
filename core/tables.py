"""Tables of numeric features: CSV or Parquet, read with pyarrow.dataset.

A source is a CSV or Parquet file, a directory of Parquet files (hive partitions fine) or
a glob of either, on the local disk or any filesystem pyarrow reaches (s3://, gs://), or an
.npz of float arrays (table_npz.py).
`--label COL` names the classes' column; the features are `--features A,B,...` or every
other column, so that none is left out silently. The classes are the sorted distinct
training labels (integers or strings), their names kept in the checkpoint.

Memory: the rows are read a batch at a time into float32 arrays made at their final size
(the row count comes first: Parquet's footers, a CSV's counting pass), so a table costs
its float32 rows plus one batch. The test split (`--test-fraction F`, seeded) is chosen
by row number before reading, and each row goes straight to its split.

Standardization: each feature's mean and standard deviation over the TRAINING split, two
passes over its rows in chunks (float64 sums); a constant column gets a deviation of 1, so
it becomes 0. The statistics go into the checkpoint (`TableInfo`), and every reader of a
checkpoint scales a table's rows with them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnps.core.errors import DataError
from nnps.core.table_npz import arrow_table, is_npz_table

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
MAX_COLUMNS = 100_000  # a header wider than this is refused from the schema, before any row is read
CHUNK_ROWS = 65_536  # rows per pass when standardizing
TEST_SALT = 0x74657374  # "test": the test split's stream, apart from the batch order's and validation's


def is_table(source: str) -> bool:
    """Whether `--data source` names a table (not an image dataset or a catalog name)."""
    if "://" in source or any(c in source for c in "*?["):
        return True
    if source.lower().endswith(".npz"):  # rows (n, d), or images (n, rows, cols)
        return is_npz_table(source)
    if source.lower().endswith(SUFFIXES):
        return True
    path = Path(source).expanduser()
    if not path.is_dir():
        return False
    images = (path / "train.parquet").exists() or any(path.glob("*-idx?-ubyte*"))
    return not images and any(path.rglob("*.parquet"))


@dataclass(frozen=True)
class TableInfo:
    """What a network trained on a table needs to read rows: the features' names in input
    order, the class names in output order (a classifier) or the target columns (a
    regression: `classes` empty), and the standardization of each (None: off)."""

    features: tuple[str, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    targets: tuple[str, ...] = ()  # a regression's target columns, in output order
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None

    @property
    def outputs(self) -> int:
        return len(self.targets) if self.targets else len(self.classes)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Standardize rows (n, features) in place, a chunk at a time; returns x."""
        return _standardize(x, self.mean, self.std)

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        """A regression's targets (n, T) to the units the network learns, in place."""
        return _standardize(y, self.target_mean, self.target_std)

    def unscale_targets(self, a: np.ndarray) -> np.ndarray:
        """The network's outputs (n, T) in the targets' own units (a new array)."""
        if self.target_mean is None or self.target_std is None:
            return np.array(a, dtype=np.float64)
        return a * np.asarray(self.target_std) + np.asarray(self.target_mean)

    def to_meta(self) -> dict[str, Any]:
        listed = {k: None if v is None else list(v) for k, v in
                  (("mean", self.mean), ("std", self.std), ("target_mean", self.target_mean),
                   ("target_std", self.target_std))}  # fmt: skip
        return {"features": list(self.features), "classes": list(self.classes), "targets": list(self.targets),
                **listed}  # fmt: skip

    @classmethod
    def from_meta(cls, d: Any, where: str) -> TableInfo:
        """A checkpoint's `table` entry, checked."""
        try:
            features, classes = tuple(str(f) for f in d["features"]), tuple(str(c) for c in d["classes"])
            targets = tuple(str(t) for t in d.get("targets") or ())
            stats = {k: None if d.get(k) is None else tuple(float(v) for v in d[k])
                     for k in ("mean", "std", "target_mean", "target_std")}  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{where}: its table description is damaged ({type(e).__name__}: {e})")
        if bool(classes) == bool(targets):
            raise DataError(f"{where}: its table names {len(classes)} classes and {len(targets)} targets; one of them")
        _check_stats(stats["mean"], stats["std"], len(features), f"{where}: its standardization", "features")
        _check_stats(stats["target_mean"], stats["target_std"], len(targets), f"{where}: its target scaling", "targets")
        return cls(features, classes, targets=targets, **stats)


def _standardize(x: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> np.ndarray:
    if mean is not None and std is not None:
        m, s = np.asarray(mean, x.dtype), np.asarray(std, x.dtype)
        for lo in range(0, len(x), CHUNK_ROWS):
            x[lo : lo + CHUNK_ROWS] -= m
            x[lo : lo + CHUNK_ROWS] /= s
    return x


def _check_stats(mean: tuple[float, ...] | None, std: tuple[float, ...] | None, n: int, what: str, of: str) -> None:
    if (mean is None) != (std is None) or (mean is not None and not len(mean) == len(std or ()) == n):
        raise DataError(f"{what} does not match its {n} {of}")
    if std is not None and not all(s > 0 and np.isfinite(s) for s in std):
        raise DataError(f"{what} holds a deviation that is not a positive number")


def standardization(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each column's mean and standard deviation (1 where it is constant), in float64, two
    passes of CHUNK_ROWS rows."""
    return deviations(moments(x))


Moments = tuple[int, np.ndarray, np.ndarray]  # (n, mean, M2) of each column, float64


def moments(x: np.ndarray) -> Moments:
    """(n, mean, sum of squared deviations) of each column, in chunks, float64."""
    n = len(x)
    mean = sum((x[lo : lo + CHUNK_ROWS].sum(axis=0, dtype=np.float64) for lo in range(0, n, CHUNK_ROWS)),
               np.zeros(x.shape[1])) / max(n, 1)  # fmt: skip
    m2 = sum((((x[lo : lo + CHUNK_ROWS] - mean) ** 2).sum(axis=0) for lo in range(0, n, CHUNK_ROWS)),
             np.zeros(x.shape[1]))  # fmt: skip
    return n, mean, m2


def merge(a: Moments, b: Moments) -> Moments:
    """The moments of two sets of rows together (Chan, Golub and LeVeque's update)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    if n == 0:
        return a
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def deviations(m: Moments) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) as standardization wants them: a constant column's deviation 1."""
    n, mean, m2 = m
    std = np.sqrt(m2 / max(n, 1))
    std[~(std > 1e-12)] = 1.0
    return tuple(mean.tolist()), tuple(std.tolist())


def open_source(source: Any) -> Any:
    """A pyarrow Dataset over `source` (a path or URI, or an Arrow table in memory); DataError
    in one line if it cannot be opened."""
    import pyarrow.csv as pcsv
    import pyarrow.dataset as pds
    import pyarrow.fs as pfs

    if not isinstance(source, str):
        return pds.dataset(source)
    if source.lower().endswith(".npz"):
        return pds.dataset(arrow_table(source, "train"))
    try:
        if "://" in source:
            fs, path = pfs.FileSystem.from_uri(source)
        else:
            fs, path = pfs.LocalFileSystem(), str(Path(source).expanduser().absolute())
        # Parquet without pre-buffering: pyarrow's default reads ahead whole files' column chunks
        fmt: Any = ("csv" if path.lower().rstrip("/").endswith((".csv", ".csv.gz")) else
                    pds.ParquetFileFormat(default_fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=False)))  # fmt: skip
        paths: Any = path
        if any(c in path for c in "*?["):
            paths = _glob(fs, path)
        elif fs.get_file_info(path).type == pfs.FileType.NotFound:
            raise DataError(f"{source}: no such file or directory")
        if fmt == "csv":  # an empty cell is a missing value, in a column of strings too
            fmt = pds.CsvFileFormat(convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        dataset = pds.dataset(paths, filesystem=fs, format=fmt, partitioning="hive")
        if len(dataset.schema.names) > MAX_COLUMNS:
            raise DataError(f"{source}: {len(dataset.schema.names):,} columns; nnps reads tables of at most "
                            f"{MAX_COLUMNS:,}")  # fmt: skip
        _same_columns(dataset, source)
        return dataset
    except DataError:
        raise
    except Exception as e:  # ArrowInvalid (a truncated footer, ...), OSError (access denied), ValueError
        raise DataError(f"{source}: cannot read it as a table ({_reason(e)})")


def _same_columns(dataset: Any, source: str) -> None:
    """Every file of a source has the first one's columns (a file's own header or footer)."""
    first: tuple[str, list[str]] | None = None
    for fragment in dataset.get_fragments():
        names = fragment.physical_schema.names
        if first is None:
            first = (fragment.path, names)
        elif sorted(names) != sorted(first[1]):
            raise DataError(f"{source}: the files' columns differ: {first[0]} has {', '.join(first[1][:20])}; "
                            f"{fragment.path} has {', '.join(names[:20])}")  # fmt: skip


def _glob(fs: Any, pattern: str) -> list[str]:
    import pyarrow.fs as pfs

    base = pattern[: min(pattern.index(c) for c in "*?[" if c in pattern)].rsplit("/", 1)[0] or "/"
    found = fs.get_file_info(pfs.FileSelector(base, recursive=True, allow_not_found=True))
    paths = sorted(f.path for f in found if f.type == pfs.FileType.File and fnmatch.fnmatch(f.path, pattern))
    if not paths:
        raise DataError(f"{pattern}: no file matches")
    return paths


def _reason(e: BaseException) -> str:
    """pyarrow's message, less its preamble ("Error creating dataset. Could not read schema ...")."""
    text = " ".join(str(e).split()) or type(e).__name__
    for mark in ("Invalid: ", "input source "):
        if mark in text:
            text = text.rsplit(mark, 1)[1]
    return text.split("': ", 1)[1] if text.startswith("'") and "': " in text else text


def columns_of(dataset: Any, source: str, labels: list[str], features: tuple[str, ...], targets: bool = False,
               given: bool = True) -> list[str]:  # fmt: skip
    """The feature columns to read, checked against the schema before any row is read.
    `labels`: the class column, or a regression's target columns (`targets`, numeric too);
    [] for rows to predict, which need none. `given`: the features are the user's --features
    (else a trained network's)."""
    import pyarrow as pa

    names = dataset.schema.names
    for label in labels:
        if label not in names:
            shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise DataError(f"{source}: no label column {label!r} (--label COL); its columns are {shown}")
    chosen = list(features) or [c for c in names if c not in labels]
    missing = [c for c in chosen if c not in names]
    if missing:
        whose = "of --features" if given else "that the network takes as a feature"
        raise DataError(f"{source}: no column {missing[0]!r} {whose}; its columns are {', '.join(names[:30])}")
    if both := [c for c in chosen if c in labels]:
        raise DataError(f"{source}: --features names the label column {both[0]!r}")
    if not chosen:
        raise DataError(f"{source}: no feature column beside the label {','.join(labels)!r}")
    for c in chosen + (labels if targets else []):
        kind = dataset.schema.field(c).type
        if pa.types.is_null(kind):
            raise DataError(f"{source}: column {c!r} holds no value at all")
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            if c in labels:
                raise DataError(f"{source}: target column {c!r} holds {kind}, not numbers; --task regress "
                                f"predicts numbers (classes are --task classify)")  # fmt: skip
            if not given:  # a trained network's feature: the rows must give it as numbers
                raise DataError(f"{source}: column {c!r} holds {kind}, not numbers; the network takes it as a feature")
            others = ",".join(x for x in chosen if x != c)
            raise DataError(f"{source}: column {c!r} holds {kind}, not numbers; leave it out with "
                            f"--features {others[:200]}{'...' if len(others) > 200 else ''}")  # fmt: skip
    return chosen
