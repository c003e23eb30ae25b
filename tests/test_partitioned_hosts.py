"""A training set larger than the memory any one host may use, on S3, trained across two hosts.

Two hosts (tests/hosts.py: network namespaces), each host's Ray node in a memory cgroup
(v2's memory.max where the memory controller is on the unified hierarchy, else v1's
memory.limit_in_bytes, as on a hybrid host) smaller than the table's float32 rows but
larger than half of them; the table on a real S3
API (moto's server, on the first host's address, outside the cgroups) that every host
reaches over its interface. `nnps train --partitioned --workers 2` runs to the end, each
worker holding its half, and its weights equal serial SGD computed here from the same rows
(the table's local copy, read whole by `--workers 0`). The cgroups' peaks show where the
rows were held.
"""

from __future__ import annotations

import json
import os
import subprocess
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

ROWS, FEATURES, FILES = 5_800_000, 100, 20  # 2.16 GiB of float32 rows, in files of 116 MB
LIMIT = 2150 << 20  # each node's: above half the rows (1.08 GiB) plus a node's own (measured: 0.75 GiB on the head), below all of them
S3_PORT = 9700
BUCKET = "tables"
ARGS = ["--label", "y", "--hidden", "8", "--batch-size", "500", "--steps", "40", "--lr", "0.5", "--dtype", "float64",
        "--seed", "4", "--partitioned"]  # fmt: skip


def write_table(directory: Path) -> Path:
    """ROWS rows of FEATURES float32 features and a class: FILES files of 2 row groups each."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=FEATURES).astype(np.float32)
    schema = pa.schema([*(pa.field(f"f{j}", pa.float32()) for j in range(FEATURES)), pa.field("y", pa.int8())])
    for i in range(FILES):
        x = rng.standard_normal((ROWS // FILES, FEATURES), dtype=np.float32)
        table = pa.table([*(x[:, j] for j in range(FEATURES)), (x @ w > 0).astype(np.int8)], schema=schema)
        pq.write_table(table, directory / f"part-{i:02d}.parquet", row_group_size=ROWS // FILES // 2,
                       compression="none", use_dictionary=False)  # fmt: skip
    os.sync()  # written back before the upload, which would otherwise wait on the disk
    return directory


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("big"))


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
    log = (table.parent / "moto.log").open("w")  # a file: a pipe nobody reads would stall moto once full
    moto = subprocess.Popen(["ip", "netns", "exec", h.names[0], str(Path(sys.executable).parent / "moto_server"),
                             "-H", "198.51.100.1", "-p", str(S3_PORT)], env=h.env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        h.wait_for_port("198.51.100.1", S3_PORT)
        upload = ("import boto3, pathlib, sys\n"
                  "s3 = boto3.client('s3'); s3.create_bucket(Bucket=sys.argv[2])\n"
                  "for f in sorted(pathlib.Path(sys.argv[1]).glob('*.parquet')):\n"
                  "    s3.put_object(Bucket=sys.argv[2], Key='big/' + f.name, Body=f.read_bytes())\n")  # fmt: skip
        done = h.run(0, sys.executable, "-c", upload, str(table), BUCKET, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        yield h, s3
    finally:
        try:
            moto.kill()
            moto.wait(timeout=30)
            log.close()
        finally:
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
    print(f"peaks of the nodes' cgroups: {[p >> 20 for p in peaks]} MB (before the run {[b >> 20 for b in before]})")
    rows = ROWS * FEATURES * 4
    # each node held its half of the rows (more than half of them would not fit the other), none all of them
    assert all(rows // 2 * 0.9 < p <= LIMIT < rows for p in peaks), (before, peaks)
    cfg = TrainConfig(data=str(table), label="y", hidden=(8,), batch_size=500, steps=40, lr=0.5, dtype="float64",
                      seed=4, partitioned=True, workers=0)  # fmt: skip
    serial = driver.run(cfg, None)["params"]
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert np.max(np.abs(final.params - serial)) < 1e-9
    parts = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["parts"]["parts"]
    assert [p[-1] for p in parts] == [0] * FILES + [1] * FILES  # 2 row groups a file
