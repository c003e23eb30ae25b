"""The catalog's lookup order and its verified download, against a real HTTP server on
127.0.0.1 serving files this test writes."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from nnps.core import catalog
from nnps.core.errors import DataError
from tests.test_data import write_idx_dir


@pytest.fixture
def server(tmp_path: Path):
    root = write_idx_dir(tmp_path / "served", n_train=30, n_test=12, compress=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):  # keep pytest's output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def entry_for(root: Path, url: str, wrong: str | None = None) -> catalog.Entry:
    files = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((root / f"{stem}.gz").read_bytes())
        digest = "0" * 64 if stem == wrong else hashlib.sha256(raw).hexdigest()
        files.append(catalog.FileSpec(f"{stem}.gz", digest, None))
    return catalog.Entry("toy", "test data", (url,), tuple(files))


def test_download_verifies_and_loads(server, tmp_path: Path) -> None:
    root, url = server
    seen = []
    dest = catalog.download(entry_for(root, url), tmp_path / "cache" / "toy",
                            progress=lambda name, done, total: seen.append((name, done, total)))  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in root.iterdir())
    assert seen[-1][1] == seen[-1][2]  # the bar reached the file's Content-Length
    assert catalog.load_idx_dir(dest).x_train.shape == (30, 784)


def test_wrong_checksum_leaves_no_file(server, tmp_path: Path) -> None:
    root, url = server
    dest = tmp_path / "cache" / "toy"
    with pytest.raises(DataError) as e:
        catalog.download(entry_for(root, url, wrong="t10k-images-idx3-ubyte"), dest)
    digest = hashlib.sha256(gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes())).hexdigest()
    assert str(e.value).startswith(f"could not download toy/t10k-images-idx3-ubyte.gz: {url}t10k-images-idx3-ubyte.gz: "
                                   f"checksum mismatch (SHA-256 of its contents is {digest[:16]}..., expected 0000000000000000...)")  # fmt: skip
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert (dest / "train-images-idx3-ubyte.gz").exists()  # what verified before stays


def test_unreachable_mirror(tmp_path: Path) -> None:
    e = catalog.Entry("toy", "", ("http://127.0.0.1:9/",), (catalog.FileSpec("a.gz", "0" * 64, None),))
    with pytest.raises(DataError, match=r"could not download toy/a.gz: http://127.0.0.1:9/a.gz: .*refused"):
        catalog.download(e, tmp_path / "x", timeout=3)


def test_not_found_offline_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NNPS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(catalog, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DataError) as e:
        catalog.resolve("kmnist")
    assert str(e.value) == (f"dataset 'kmnist' not found in {tmp_path / 'kmnist'} or {tmp_path / 'system' / 'kmnist'}; "
                            "run `nnps data download kmnist`, or pass --data DIR with the four IDX files")  # fmt: skip


def test_lookup_prefers_cache_then_system_and_checks_hashes(tmp_path: Path, monkeypatch) -> None:
    from tests.conftest import MNIST_10K

    monkeypatch.setenv("NNPS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "SYSTEM_DIR", tmp_path / "system")
    system = tmp_path / "system" / "mnist"
    system.mkdir(parents=True)
    for f in MNIST_10K.glob("t10k-*"):  # the official test files, re-compressed: raw digests match
        (system / f.name).write_bytes(f.read_bytes())
    for f in MNIST_10K.glob("train-*"):  # the 10k subset: its digests do NOT match full MNIST's
        (system / f.name).write_bytes(f.read_bytes())
    assert catalog.find("mnist") == system
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: SHA-256 of its contents is 2889698e6bc3614"):
        catalog.resolve("mnist")
    catalog.verify_file(system / "t10k-images-idx3-ubyte.gz", catalog.CATALOG["mnist"].files[2])


def test_unknown_name() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar': not a path, and the catalog has mnist, fashion-mnist, kmnist"):
        catalog.entry("cifar")


def test_debian_fashion_mnist_verifies() -> None:
    # `make test` installs Debian's dataset-fashion-mnist; its files are re-compressed.
    ds = catalog.resolve("fashion-mnist")
    assert ds.x_train.shape == (60000, 784) and np.bincount(ds.y_train).tolist() == [6000] * 10
