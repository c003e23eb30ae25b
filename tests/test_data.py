"""Dataset readers: every malformed input is one clear error naming the file."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnps.core import idx
from nnps.core.datasets import load_path, write_parquet_dir
from nnps.core.errors import DataError
from tests.conftest import DATA, MNIST_10K


def write_idx_dir(d: Path, n_train: int = 20, n_test: int = 10, compress: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if compress else ""
    idx.write_idx(d / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    idx.write_idx(d / f"train-labels-idx1-ubyte{ext}", rng.integers(0, 10, n_train), compress)
    idx.write_idx(d / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    idx.write_idx(d / f"t10k-labels-idx1-ubyte{ext}", rng.integers(0, 10, n_test), compress)
    return d


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    ds = load_path(write_idx_dir(tmp_path / "d", compress=compress))
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784) and ds.x_train.dtype == np.uint8


def test_real_mnist_subset(mnist10k) -> None:
    assert mnist10k.x_train.shape == (10000, 784) and mnist10k.x_test.shape == (10000, 784)
    assert np.bincount(mnist10k.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(("folder", "count"), [("mnist-10k", 4), ("kuberay-v1.7.0", 3)])
def test_carried_files_match_their_digests(folder: str, count: int) -> None:
    """The files the suite carries are the ones their README describes, byte for byte."""
    d = DATA / folder
    listed = (MNIST_10K / "SHA256SUMS").read_text() if folder == "mnist-10k" else (d / "README.md").read_text()
    digests = {name: digest for digest, name in
               (line.split() for line in listed.splitlines() if len(line.split()) == 2 and len(line.split()[0]) == 64)}
    files = sorted(p.name for p in d.iterdir() if p.suffix in (".gz", ".yaml"))
    assert sorted(digests) == files and len(files) == count
    for name in files:
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digests[name], name


def load_error(d: Path) -> str:
    """The one-line message load_path(d) fails with."""
    with pytest.raises(DataError) as e:
        load_path(d)
    return str(e.value)


def corrupt(tmp_path: Path, name: str, data: bytes) -> tuple[Path, Path]:
    d = write_idx_dir(tmp_path / "d", compress=False)
    (d / name).write_bytes(data)
    return d, d / name


def test_bad_magic(tmp_path: Path) -> None:
    d, f = corrupt(tmp_path, "train-images-idx3-ubyte", b"\x00\x00\x08\x01" + b"\x00" * 100)
    assert load_error(d) == f"{f}: bad magic number 0x00000801, expected 0x00000803 for IDX images"


def test_truncated_images(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    f = d / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    assert load_error(d) == f"{f}: truncated: {16 + 10 * 784 - 5} bytes, header (10, 28, 28) needs {16 + 10 * 784}"


def test_trailing_bytes(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    f = d / "train-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes() + b"xyz")
    with pytest.raises(DataError, match=r"3 unexpected trailing bytes after \(20,\) labels"):
        load_path(d)


def test_count_mismatch(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    idx.write_idx(d / "train-labels-idx1-ubyte", np.zeros(19))
    assert load_error(d) == f"{d / 'train-labels-idx1-ubyte'}: 19 labels for 20 images in {d / 'train-images-idx3-ubyte'}"


def test_label_out_of_range(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    labels = np.zeros(10)
    labels[4] = 12
    idx.write_idx(d / "t10k-labels-idx1-ubyte", labels)
    assert load_error(d) == f"{d / 't10k-labels-idx1-ubyte'}: label 12 at index 4 is out of range 0-9"


def test_wrong_image_size(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    idx.write_idx(d / "t10k-images-idx3-ubyte", np.zeros((10, 20, 20)))
    assert load_error(d) == f"{d / 't10k-images-idx3-ubyte'}: image size (20, 20) differs from the training images' (28, 28)"


def test_corrupt_gzip(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=True)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match=r"corrupt gzip stream"):
        load_path(d)


def test_missing_files(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    assert load_error(d) == f"{d}: missing IDX files t10k-labels-idx1-ubyte"


def test_npz(tiny_npz: Path, tmp_path: Path) -> None:
    ds = load_path(tiny_npz)
    assert ds.x_train.shape == (240, 36) and ds.image_shape == (6, 6)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 4, 4)), y_train=np.zeros(2))
    assert load_error(bad) == f"{bad}: missing arrays x_test, y_test (has x_train, y_train)"
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"garbage.npz: not a readable .npz file"):
        load_path(garbage)


def test_parquet_round_trip_and_damage(tiny_npz: Path, tmp_path: Path) -> None:
    ds = load_path(tiny_npz)
    out = tmp_path / "pq"
    write_parquet_dir(ds, out)
    back = load_path(out)
    np.testing.assert_array_equal(back.x_train, ds.x_train)
    np.testing.assert_array_equal(back.y_test, ds.y_test)
    assert back.image_shape == (6, 6) and back.fingerprint == ds.fingerprint
    (out / "test.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataError, match=r"test.parquet: not a readable Parquet file"):
        load_path(out)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    d = write_idx_dir(tmp_path / "d", compress=False)
    f = d / "train-images-idx3-ubyte"
    f.write_bytes(gzip.compress(f.read_bytes()))
    assert load_path(d).x_train.shape == (20, 784)
    shutil.rmtree(d)
