"""Readers for the MNIST-family IDX files, gzip'd or raw, with strict validation.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data. MNIST uses 0x0803
(uint8, 3 dims: count, rows, cols) for images and 0x0801 (uint8, 1 dim) for labels.
Every fault is a `DataError` naming the file: a bad magic number, a truncated body,
trailing bytes, a gzip stream that does not decompress.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from nnps.core.errors import DataError
from nnps.core.memory import check_data

CHUNK = 1 << 20  # bytes inflated at a time
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def parse(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Parse IDX bytes into a uint8 array of the header's shape."""
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise DataError(f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise DataError(f"{path}: truncated: {len(data)} bytes, header {dims} needs {expected}")
    if len(data) > expected:
        raise DataError(f"{path}: {len(data) - expected} unexpected trailing bytes after {dims} {kind}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_images(path: Path) -> np.ndarray:
    """(count, rows, cols) uint8."""
    return parse(read_declared(path, IMAGES_MAGIC), path, IMAGES_MAGIC)


def read_labels(path: Path) -> np.ndarray:
    """(count,) uint8."""
    return parse(read_declared(path, LABELS_MAGIC), path, LABELS_MAGIC)


def read_declared(path: Path, magic: int) -> bytes:
    """The file's bytes, refused (DataError) from its header alone if the array it announces
    cannot fit in memory; a gzip'd one inflated only as far as its header declares (and one
    byte more, for `parse` to see trailing bytes): a small file that would inflate to
    gigabytes (a gzip bomb) costs what its header promised. A header that does not parse is
    left to `parse`, which names the fault."""
    ndim, kind = magic & 0xFF, "images" if magic == IMAGES_MAGIC else "labels"
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else path.open("rb")) as f:
            head = f.read(4 + 4 * ndim)
            size = 0
            if len(head) == 4 + 4 * ndim:
                dims = struct.unpack(f">{ndim}I", head[4:])
                size = int(np.prod(dims, dtype=np.int64))
                if struct.unpack(">I", head[:4])[0] == magic:
                    check_data(path, size, f"{' x '.join(map(str, dims))} uint8 {kind}")
            if not gzipped:
                return head + f.read()
            body = bytearray()
            while len(body) <= size and (chunk := f.read(min(CHUNK, size + 1 - len(body)))):
                body += chunk  # in chunks: a header's promise is not allocated before the bytes arrive
            return head + bytes(body)
    except OSError as e:
        raise DataError(f"{path}: {'cannot read' if not isinstance(e, gzip.BadGzipFile) else 'corrupt gzip stream'} "
                        f"({e.strerror or e})")  # fmt: skip
    except (EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as IDX (tests and bench/fuzz.py make their fixtures with it)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
