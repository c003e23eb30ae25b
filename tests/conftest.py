"""Shared fixtures: the real MNIST subset the repository carries (tests/data), and small synthetic data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from nnps.core.datasets import Dataset, load_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # what the suite reads; nothing outside the clone
MNIST_10K = DATA / "mnist-10k"


@pytest.fixture(scope="session")
def mnist10k() -> Dataset:
    return load_path(MNIST_10K)


def make_tiny(n_train: int = 240, n_test: int = 60, side: int = 6, seed: int = 0) -> Dataset:
    """Separable-ish random images: class c has brighter pixels in band c (mod side)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 90, (n, side, side)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, c % side, :] += 120
            x[i, :, (c // side) % side] += 40
        return x.reshape(n, -1), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset("tiny", x_train, y_train, x_test, y_test, (side, side))


@pytest.fixture
def tiny() -> Dataset:
    return make_tiny()


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    ds = make_tiny()
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=ds.x_train.reshape(-1, 6, 6), y_train=ds.y_train,
             x_test=ds.x_test.reshape(-1, 6, 6), y_test=ds.y_test)  # fmt: skip
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_BUCKET = "nnps-runs"


S3_PRIVATE = "private/"  # the prefix of the bucket that the second user, "reader", may not read


@pytest.fixture(scope="session")
def s3(s3_users: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment of the user allowed all of S3 (see s3_users)."""
    return s3_users["nnps"]


@pytest.fixture(scope="session")
def s3_users(tmp_path_factory) -> Iterator[dict[str, dict[str, str]]]:
    """A real S3 API on 127.0.0.1: moto's server in its own process, with IAM authentication
    on. Its first seven requests (unauthenticated) make two users, their access keys and
    policies (nnps: all of S3; reader: all but reading objects under S3_PRIVATE), and the
    bucket; every later request must be signed with a key. Yields each user's environment as
    a user would set it, endpoint given as AWS tools take it (AWS_ENDPOINT_URL)."""
    import boto3

    port = free_port()
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"}, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # a bare TCP connect: an HTTP request would use up one of the seven
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    setup = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                 aws_secret_access_key="setup")  # fmt: skip
    iam = boto3.client("iam", **setup)
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{S3_BUCKET}/{S3_PRIVATE}*"}
    users = {}
    for user, statements in (("nnps", [allow]), ("reader", [allow, deny])):
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": statements}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        users[user] = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    boto3.client("s3", **setup).create_bucket(Bucket=S3_BUCKET)
    yield users
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
