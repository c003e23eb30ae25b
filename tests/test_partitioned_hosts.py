"""A training set larger than the memory any one host may use, on S3, trained across two hosts.

Two hosts (tests/hosts.py: network namespaces), each host's Ray node in a memory cgroup
smaller than the table's float32 rows but larger than half of them; the table on a real S3
API (moto's server, on the first host's address, outside the cgroups) that every host
reaches over its interface. `nnps train --partitioned --workers 2` runs to the end, each
worker holding its half, and its weights equal serial SGD computed here from the same rows
(the table's local copy, read whole by `--workers 0`). The cgroups' peaks show where the
rows were held.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nnps.cluster import driver
from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from tests.hosts import Hosts, available

pytestmark = pytest.mark.ray

ROWS, FEATURES = 1_600_000, 100  # 640 MB of float32 rows
LIMIT = 560 << 20  # each node's memory: above half the rows (320 MB) plus a node's own, below all of them
S3_PORT = 9700
BUCKET = "tables"
ARGS = ["--label", "y", "--hidden", "8", "--batch-size", "500", "--steps", "40", "--lr", "0.5", "--dtype", "float64",
        "--seed", "4", "--partitioned"]  # fmt: skip


def write_table(path: Path) -> Path:
    """ROWS rows of FEATURES float32 features and a class, 8 row groups."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=FEATURES).astype(np.float32)
    with pq.ParquetWriter(path, pa.schema([*(pa.field(f"f{j}", pa.float32()) for j in range(FEATURES)),
                                          pa.field("y", pa.int8())]), compression="none") as out:  # fmt: skip
        for _ in range(8):
            x = rng.standard_normal((ROWS // 8, FEATURES), dtype=np.float32)
            out.write_table(pa.table({**{f"f{j}": x[:, j] for j in range(FEATURES)}, "y": (x @ w > 0).astype(np.int8)}))
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("big") / "big.parquet")


@pytest.fixture(scope="module")
def hosts(table: Path) -> Iterator[tuple[Hosts, dict[str, str]]]:
    why = available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-host tests must run in CI: {why}")
        pytest.skip(f"no network namespaces here: {why}")
    s3 = {"AWS_ENDPOINT_URL": f"http://198.51.100.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "nnps",
          "AWS_SECRET_ACCESS_KEY": "nnps-secret", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    h = Hosts([2, 2], env=s3, memory=LIMIT)
    moto = h.popen(0, str(Path(sys.executable).parent / "moto_server"), "-H", "198.51.100.1", "-p", str(S3_PORT))
    try:
        upload = ("import boto3, time\n"
                  "for _ in range(100):\n"
                  "    try:\n"
                  "        s3 = boto3.client('s3'); s3.create_bucket(Bucket='%s'); break\n"
                  "    except Exception: time.sleep(0.3)\n"
                  "s3.upload_file('%s', '%s', 'big/big.parquet')\n") % (BUCKET, table, BUCKET)  # fmt: skip
        h.run(0, sys.executable, "-c", upload)
        yield h, s3
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        h.close()


def test_a_table_larger_than_any_host_trains_across_two_and_equals_serial(hosts, table: Path, tmp_path: Path) -> None:
    h, _ = hosts
    before = [limit.peak() for limit in h.limits]
    out = h.run(0, sys.executable, "-m", "nnps.cli.main", "train", "--data", f"s3://{BUCKET}/big/", *ARGS,
                "--address", h.address, "--workers", "2", "--run-dir", str(tmp_path / "run"), "--json", check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["step"] == 40
    peaks = [limit.peak() for limit in h.limits]
    rows = ROWS * FEATURES * 4
    # each node held its half of the rows (more than half of them would not fit the other), none all of them
    assert all(rows // 2 * 0.9 < p <= LIMIT < rows for p in peaks), (before, peaks)
    cfg = TrainConfig(data=str(table), label="y", hidden=(8,), batch_size=500, steps=40, lr=0.5, dtype="float64",
                      seed=4, partitioned=True, workers=0)  # fmt: skip
    serial = driver.run(cfg, None)["params"]
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    parts = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["parts"]["parts"]
    assert [p[-1] for p in parts] == [0, 0, 0, 0, 1, 1, 1, 1]
