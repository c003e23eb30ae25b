"""Run directories on S3 (`--run-dir s3://...`, what a multi-node cluster needs), against a
real S3 API served on 127.0.0.1 by moto's server (the `s3` fixture), reached through
AWS_ENDPOINT_URL as AWS's own tools take it. The objects are read back with boto3, an S3
client independent of pyarrow's."""

from __future__ import annotations

import json
import re

import boto3
import numpy as np
import pytest
from typer.testing import CliRunner

from nnps.cli.main import app, main
from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.training import train
from tests.conftest import MNIST_10K, S3_BUCKET, S3_PRIVATE

runner = CliRunner()
TRAIN = ["train", "--data", str(MNIST_10K), "--hidden", "20", "--batch-size", "100", "--epochs", "2", "--lr", "3.0",
         "--dtype", "float64", "--seed", "5", "--checkpoint-every", "30", "--workers", "0"]  # fmt: skip


@pytest.fixture
def aws(s3: dict[str, str], monkeypatch) -> dict[str, str]:
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    return s3


def objects(aws: dict[str, str], prefix: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_DEFAULT_REGION"],
                          aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    listed = client.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix).get("Contents", [])
    # (pyarrow marks a directory with an empty object named after it: not a file of the run's)
    return {o["Key"][len(prefix):]: client.get_object(Bucket=S3_BUCKET, Key=o["Key"])["Body"].read()
            for o in listed if o["Key"] != prefix}  # fmt: skip


def test_train_resume_evaluate_fetch_on_s3(aws, mnist10k, tmp_path) -> None:
    uri = f"s3://{S3_BUCKET}/resumed"
    first = runner.invoke(app, [*TRAIN, "--steps", "90", "--run-dir", uri])
    assert first.exit_code == 0, first.output
    stored = objects(aws, "resumed/")
    assert sorted(stored) == ["ckpt-000000030.npz", "ckpt-000000060.npz", "ckpt-000000090.npz", "config.json",
                              "final.npz", "metrics.jsonl"]  # fmt: skip
    assert json.loads(stored["config.json"])["steps"] == 90
    # resumed from its last checkpoint on S3, to the end of epoch 2: equal to a run never stopped
    res = runner.invoke(app, ["train", "--run-dir", uri, "--resume", "--steps", "200"])
    assert res.exit_code == 0, res.output
    whole = train(TrainConfig(data=str(MNIST_10K), hidden=(20,), batch_size=100, epochs=2, lr=3.0, dtype="float64",
                              seed=5), mnist10k)  # fmt: skip
    final = checkpoint.from_bytes(objects(aws, "resumed/")["final.npz"], uri)
    assert final.step == 200 and np.max(np.abs(final.params - whole["params"])) < 1e-12
    rows = [json.loads(line) for line in objects(aws, "resumed/")["metrics.jsonl"].decode().splitlines()]
    # the first run's last evaluation (partial epoch 1, at step 90), then epochs 1 and 2
    assert [(r["epoch"], r["step"], r.get("partial", False)) for r in rows] == [(1, 90, True), (1, 100, False),
                                                                                 (2, 200, False)]  # fmt: skip
    # evaluate reads the checkpoint straight from S3
    ev = runner.invoke(app, ["evaluate", f"{uri}/final.npz", "--data", str(MNIST_10K), "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(rows[-1]["test_accuracy"])
    # fetch copies the results out of it
    fe = runner.invoke(app, ["fetch", "--run-dir", uri, "--out", str(tmp_path / "results")])
    assert fe.exit_code == 0, fe.output
    assert (tmp_path / "results" / "final.npz").read_bytes() == objects(aws, "resumed/")["final.npz"]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def test_no_such_bucket_is_one_line(aws, capsys) -> None:
    rc, err = run_main([*TRAIN, "--run-dir", "s3://no-such-bucket/run"], capsys)
    assert (rc, err) == (1, "error: s3://no-such-bucket/run: cannot create run directory (Bucket 'no-such-bucket' "
                            "not found. To create buckets, enable the allow_bucket_creation option.)\n")  # fmt: skip
    rc, err = run_main(["evaluate", "s3://no-such-bucket/run/final.npz", "--data", str(MNIST_10K)], capsys)
    assert rc == 1 and err.startswith("error: s3://no-such-bucket/run/final.npz: ") and err.count("\n") == 1


def test_refused_credentials_are_one_line_and_touch_nothing(aws, capsys, monkeypatch) -> None:
    assert runner.invoke(app, [*TRAIN, "--steps", "30", "--run-dir", f"s3://{S3_BUCKET}/kept"]).exit_code == 0
    before = objects(aws, "kept/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    rc, err = run_main([*TRAIN, "--steps", "60", "--run-dir", f"s3://{S3_BUCKET}/kept", "--resume"], capsys)
    assert rc == 1 and err.count("\n") == 1
    assert re.fullmatch(rf"error: s3://{S3_BUCKET}/kept/config.json: cannot look up \(.*ACCESS_DENIED.*\)\n", err), err
    rc, err = run_main(["fetch", "--run-dir", f"s3://{S3_BUCKET}/kept", "--out", "/tmp/nnps-never-written"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "ACCESS_DENIED" in err, err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws["AWS_SECRET_ACCESS_KEY"])
    assert objects(aws, "kept/") == before  # nothing written, nothing lost


def test_two_trains_racing_for_one_run_directory_on_s3(aws) -> None:
    """Started at the same moment, three times over: one holds the directory by the earliest
    claim, the other is refused in one line naming it and withdraws its claim."""
    import sys

    from tests.test_cli import race_of

    for race in range(3):
        uri = f"s3://{S3_BUCKET}/race-{race}"
        args = [sys.executable, "-m", "nnps.cli.main", *TRAIN, "--epochs", "1000", "--run-dir", uri]
        winner, _, err = race_of(args)
        assert err.startswith(f"error: {uri} is in use by process {winner} on ") and err.count("\n") == 1, err
        claims = [v for k, v in objects(aws, f"race-{race}/").items() if k.startswith("run.lock-")]
        assert [json.loads(c)["pid"] for c in claims] == [winner]  # the holder's claim alone (it was killed)


def test_a_table_on_s3_trains_as_the_same_files_on_disk(aws, tmp_path) -> None:
    """A directory of Parquet files on the S3 API, read by pyarrow's S3 filesystem: the same
    rows, split and weights as the same files in a local directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    local = tmp_path / "houses"
    local.mkdir()
    client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_DEFAULT_REGION"],
                          aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    for part in range(2):
        x = rng.normal(size=(150, 3))
        table = pa.table({"rooms": x[:, 0], "area": x[:, 1] * 50 + 100, "age": x[:, 2] * 10 + 30,
                          "band": np.where(x[:, 0] + x[:, 1] > 0, "upper", "lower")})  # fmt: skip
        pq.write_table(table, local / f"part-{part}.parquet")
        client.put_object(Bucket=S3_BUCKET, Key=f"houses/part-{part}.parquet",
                          Body=(local / f"part-{part}.parquet").read_bytes())  # fmt: skip
    args = ["train", "--label", "band", "--hidden", "6", "--epochs", "2", "--lr", "0.5", "--dtype", "float64",
            "--workers", "0", "--json"]  # fmt: skip
    on_s3 = runner.invoke(app, [*args, "--data", f"s3://{S3_BUCKET}/houses/", "--run-dir", str(tmp_path / "a")])
    on_disk = runner.invoke(app, [*args, "--data", str(local), "--run-dir", str(tmp_path / "b")])
    assert on_s3.exit_code == 0 and on_disk.exit_code == 0, on_s3.output + on_disk.output
    a = checkpoint.load(str(tmp_path / "a" / "final.npz"))
    b = checkpoint.load(str(tmp_path / "b" / "final.npz"))
    assert a.table == b.table and a.table.classes == ("lower", "upper")
    assert np.array_equal(a.params, b.params)
    rc_err = runner.invoke(app, [*args, "--data", f"s3://{S3_BUCKET}/no-such/", "--run-dir", str(tmp_path / "c")])
    assert rc_err.exit_code == 1 and rc_err.stderr == f"error: s3://{S3_BUCKET}/no-such/: no such file or directory\n"


def test_a_table_the_credentials_may_not_read_is_one_line(s3_users, tmp_path, capsys, monkeypatch) -> None:
    """The reader's policy denies reading objects under private/: training on a table there is
    refused in one line naming it, and nothing is written; the same rows elsewhere train."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    owner = s3_users["nnps"]
    client = boto3.client("s3", endpoint_url=owner["AWS_ENDPOINT_URL"], region_name=owner["AWS_DEFAULT_REGION"],
                          aws_access_key_id=owner["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=owner["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    x = np.random.default_rng(4).normal(size=(60, 2))
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "label": (x[:, 0] > 0).astype(int)}), tmp_path / "t.parquet")
    for key in (f"{S3_PRIVATE}t.parquet", "open/t.parquet"):
        client.put_object(Bucket=S3_BUCKET, Key=key, Body=(tmp_path / "t.parquet").read_bytes())
    for name, value in s3_users["reader"].items():
        monkeypatch.setenv(name, value)
    args = ["train", "--hidden", "4", "--epochs", "1", "--workers", "0"]
    rc, err = run_main([*args, "--data", f"s3://{S3_BUCKET}/{S3_PRIVATE}t.parquet", "--run-dir", str(tmp_path / "r")],
                       capsys)  # fmt: skip
    assert rc == 1 and err.count("\n") == 1, err
    assert re.fullmatch(rf"error: s3://{S3_BUCKET}/{S3_PRIVATE}t\.parquet: .*ACCESS_DENIED.*\n", err), err
    assert not (tmp_path / "r").exists()
    rc, err = run_main([*args, "--data", f"s3://{S3_BUCKET}/open/t.parquet", "--run-dir", str(tmp_path / "r")], capsys)
    assert rc == 0 and (tmp_path / "r" / "final.npz").exists(), err
