"""Requests the machine or the data cannot serve: one line, at once, nothing allocated or started."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from nnps.core import idx
from nnps.core.memory import GIB
from tests.conftest import MNIST_10K
from tests.test_cli import run_main


def test_network_too_large_is_one_line_before_allocating(tmp_path: Path) -> None:
    """784-100000-100000-10 (10 billion parameters) ended in numpy's _ArrayMemoryError."""
    # A parent of its own reports the nnps process's peak memory (ru_maxrss of its one child).
    measure = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(rc)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "nnps.cli.main", "train", "--data",
                          str(MNIST_10K), "--hidden", "100000,100000", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert re.fullmatch(r"error: a 784-100000-100000-10 network does not fit: its 10,079,600,010 float32 parameters "
                        r"\(with gradients and sgd's state\) and batch 10's activations need 150\.2 GiB; this machine "
                        r"has [\d.]+ GiB available\n", out.stderr), out.stderr  # fmt: skip
    # nothing of the network's size was allocated (the largest child stayed far below one vector: 37.5 GiB)
    assert int(out.stdout) < GIB
    assert not (tmp_path / "run").exists()


def test_dataset_too_large_is_one_line_before_reading(tmp_path: Path, capsys) -> None:
    """An IDX header announcing 2^31 images: refused from the header, before decompressing."""
    d = tmp_path / "huge"
    d.mkdir()
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", idx.IMAGES_MAGIC, 2**31, 28, 28))
    rng = np.random.default_rng(0)
    idx.write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 5), compress=True)
    idx.write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)), compress=True)
    idx.write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 5), compress=True)
    rc, _, err = run_main(["data", "info", str(d)], capsys)
    assert rc == 1
    assert re.fullmatch(rf"error: {re.escape(str(d / 'train-images-idx3-ubyte.gz'))}: 2147483648 x 28 x 28 uint8 "
                        r"images need 1568\.0 GiB; this machine has [\d.]+ GiB available\n", err), err  # fmt: skip


def test_more_workers_than_cpus_is_one_line_without_starting_ray(tmp_path: Path, capsys) -> None:
    """--workers 99 on this machine waited a minute for Ray, then ran every step in-process."""
    import os

    assert not ray.is_initialized()
    rc, _, err = run_main(["train", "--data", str(MNIST_10K), "--workers", "99", "--run-dir", str(tmp_path / "r")],
                          capsys)  # fmt: skip
    cpus = os.cpu_count()
    assert (rc, err) == (1, f"error: --workers 99: this machine (the embedded Ray) has {cpus} CPUs, one per worker; "
                            f"use --workers {cpus} or fewer, or auto\n")  # fmt: skip
    assert not ray.is_initialized() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_batch_larger_than_the_training_set_is_refused(workers: str, tmp_path: Path, capsys) -> None:
    rc, _, err = run_main(["train", "--data", str(MNIST_10K), "--batch-size", "10001", "--workers", workers,
                           "--run-dir", str(tmp_path / "r")], capsys)  # fmt: skip
    assert (rc, err) == (1, f"error: --batch-size 10001 is larger than the training set (10,000 examples in "
                            f"{MNIST_10K}); use at most 10000 (full-batch gradient descent)\n")  # fmt: skip
    assert not ray.is_initialized() and not (tmp_path / "r").exists()
