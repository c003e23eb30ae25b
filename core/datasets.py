"""Datasets: train and test splits of uint8 images with integer labels, or of a table's
standardized float32 rows with class indices (`table`: tables.py, table_rows.py).

Sources, told apart by what the path is:
- a directory holding the four MNIST-format IDX files (gzip'd or raw);
- a directory holding `train.parquet` and `test.parquet` (what `nnps data prepare` writes);
- an `.npz` file with arrays `x_train, y_train, x_test, y_test`.
A bare name (`mnist`, `fashion-mnist`, ...) is looked up in the catalog (`catalog.py`).

Images stay uint8, flattened to (count, rows*cols): four times less memory than float32
to hold and to ship; a worker scales each shard to [0, 1] as it computes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from nnps.core import idx
from nnps.core.errors import DataError
from nnps.core.tables import TableInfo

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NUM_CLASSES = 10


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (n, rows*cols) uint8; a table's: (n, features) float32, standardized
    y_train: np.ndarray  # (n,) uint8; a table's: int32 indices into table.classes, or (n, T) float32 targets
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int] = (28, 28)
    table: TableInfo | None = None  # a table's features, classes and standardization; None: images
    digest: str | None = None  # a partitioned table's fingerprint (core/parted_data.py), else the arrays'

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def num_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_outputs(self) -> int:
        """Output units: the classes, or a regression's targets."""
        return self.table.outputs if self.table else NUM_CLASSES

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the arrays: which data a checkpoint was trained on."""
        if self.digest:
            return self.digest
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()[:16]

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if which == "train":
            return self.x_train, self.y_train
        if which == "test":
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {which!r}")


def checked(name: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], where: dict[str, str]) -> Dataset:
    """Build a Dataset after checking counts, image sizes and label ranges agree."""
    shapes = {s: images[s].shape[1:] for s in ("train", "test")}
    for split in ("train", "test"):
        x, y = images[split], labels[split]
        if x.ndim != 3:
            raise DataError(f"{where['x_' + split]}: images must be (count, rows, cols), got shape {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{where['y_' + split]}: labels must be one-dimensional, got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(
                f"{where['y_' + split]}: {len(y)} labels for {len(x)} images in {where['x_' + split]}"
            )
        if len(x) == 0:
            raise DataError(f"{where['x_' + split]}: no images")
        if y.size and int(y.max()) >= NUM_CLASSES:
            bad = int(np.argmax(y >= NUM_CLASSES))
            raise DataError(f"{where['y_' + split]}: label {int(y[bad])} at index {bad} is out of range 0-9")
    if shapes["train"] != shapes["test"]:
        raise DataError(
            f"{where['x_test']}: image size {shapes['test']} differs from the training images' {shapes['train']}"
        )
    rows, cols = shapes["train"]
    flat = {s: np.ascontiguousarray(images[s].reshape(len(images[s]), rows * cols)) for s in images}
    return Dataset(name, flat["train"], np.ascontiguousarray(labels["train"]), flat["test"],
                   np.ascontiguousarray(labels["test"]), (rows, cols))  # fmt: skip


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` (raw or .gz), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_idx_dir(directory: Path, name: str | None = None) -> Dataset:
    files = find_idx_files(directory)
    if files is None:
        missing = [s for s in IDX_FILES.values() if not any(directory.glob(s + "*"))]
        raise DataError(f"{directory}: missing IDX files {', '.join(missing)}")
    images = {s: idx.read_images(files["x_" + s]) for s in ("train", "test")}
    labels = {s: idx.read_labels(files["y_" + s]) for s in ("train", "test")}
    return checked(name or directory.name, images, labels, {k: str(v) for k, v in files.items()})


def load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in IDX_FILES if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)} (has {', '.join(z.files) or 'none'})")
            arrays = {k: z[k] for k in IDX_FILES}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError: all "not a readable npz"
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})")
    for k, a in arrays.items():
        if a.dtype != np.uint8:
            if a.size and (a.min() < 0 or a.max() > 255 or not np.all(np.mod(a, 1) == 0)):
                raise DataError(f"{path}: array {k} must hold integers 0-255, has dtype {a.dtype}")
            arrays[k] = a.astype(np.uint8)
    for k in ("x_train", "x_test"):
        if arrays[k].ndim == 2:  # already flattened: assume square images
            side = int(round(np.sqrt(arrays[k].shape[1])))
            if side * side != arrays[k].shape[1]:
                raise DataError(f"{path}: {k} rows of {arrays[k].shape[1]} pixels are not square images")
            arrays[k] = arrays[k].reshape(-1, side, side)
    where = {k: f"{path}[{k}]" for k in IDX_FILES}
    return checked(path.stem, {s: arrays["x_" + s] for s in ("train", "test")},
                   {s: arrays["y_" + s] for s in ("train", "test")}, where)  # fmt: skip


def load_parquet_dir(directory: Path) -> Dataset:
    import pyarrow.parquet as pq  # pyarrow is heavy to import; only this path needs it

    images, labels, where = {}, {}, {}
    for split in ("train", "test"):
        path = directory / f"{split}.parquet"
        where["x_" + split] = where["y_" + split] = str(path)
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for damaged files
            raise DataError(f"{path}: not a readable Parquet file ({e})")
        try:
            images[split], labels[split] = _image_table(table, path)
        except DataError:
            raise
        except Exception as e:  # what a damaged file's schema holds: names not UTF-8, metadata not JSON, ...
            raise DataError(f"{path}: not an image Parquet file ({type(e).__name__}: {e})")
    return checked(directory.name, images, labels, where)


def _image_table(table: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split's table, as write_parquet_dir writes it."""
    if not {"image", "label"} <= set(table.column_names):
        raise DataError(f"{path}: needs columns 'image' and 'label', has {table.column_names}")
    meta = json.loads((table.schema.metadata or {}).get(b"nnps", b"{}"))
    rows, cols = meta.get("rows", 28), meta.get("cols", 28)
    blobs = table.column("image").to_pylist()
    if any(b is None or len(b) != rows * cols for b in blobs):
        raise DataError(f"{path}: every image must be {rows}x{cols} = {rows * cols} bytes")
    images = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(-1, rows, cols)
    y = table.column("label").to_numpy(zero_copy_only=False)
    if y.size and (y.min() < 0 or y.max() > 255):
        raise DataError(f"{path}: label {int(y.max() if y.max() > 255 else y.min())} is out of range 0-9")
    return images, y.astype(np.uint8)


def write_parquet_dir(ds: Dataset, out: Path) -> list[Path]:
    """Write `train.parquet` and `test.parquet` (image: binary rows*cols bytes, label: uint8)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows, cols = ds.image_shape
    written = []
    for split in ("train", "test"):
        x, y = ds.split(split)
        table = pa.table({"image": pa.array([r.tobytes() for r in x], pa.binary()), "label": pa.array(y, pa.uint8())})
        table = table.replace_schema_metadata({"nnps": json.dumps({"rows": rows, "cols": cols, "name": ds.name})})
        path = out / f"{split}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)  # atomic: a reader never sees half a file
        written.append(path)
    return written


def load_path(path: Path) -> Dataset:
    """Load a dataset from a path, whatever its format."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".npz":
            return load_npz(path)
        raise DataError(f"{path}: unsupported file type; give a directory of IDX or Parquet files, or an .npz")
    if (path / "train.parquet").exists():
        return load_parquet_dir(path)
    return load_idx_dir(path)
