"""`nnps serve` on a real embedded Ray Serve, driven as a user drives it: the command in its
own process, requests over HTTP on loopback, answers checked against `nnps predict`."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.conftest import MNIST_10K, free_port

pytestmark = pytest.mark.ray
NNPS = str(Path(sys.executable).parent / "nnps")
IMAGES = MNIST_10K / "t10k-images-idx3-ubyte.gz"


def pixels(n: int) -> np.ndarray:
    raw = gzip.decompress(IMAGES.read_bytes())
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)[:n]


def train(run_dir: Path, *extra: str) -> None:
    args = ["--data", str(MNIST_10K), "--hidden", "30", "--lr", "3.0", "--batch-size", "10", "--workers", "0",
            "--run-dir", str(run_dir)]  # fmt: skip
    subprocess.run([NNPS, "train", *args, *extra], check=True, capture_output=True, timeout=300)


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    req = urllib.request.Request(url, body, headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def infer_body(x: np.ndarray, datatype: str = "UINT8") -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype,
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip


def multipart(name: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    b = "nnps-test-boundary"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


class Served:
    """An `nnps serve` process and its base URL."""

    def __init__(self, target: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([NNPS, "serve", str(target), "--port", str(self.port), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.first_line = self.proc.stdout.readline()  # printed once the application is running
        assert self.first_line.startswith("serving "), self.first_line + self.proc.stdout.read()
        assert call(self.url + "/v2/health/ready") == (200, {"ready": True})

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out = self.proc.communicate(timeout=60)[0]
        assert self.proc.returncode == 0, out
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    run = tmp_path_factory.mktemp("serve") / "digits"
    train(run, "--epochs", "1")
    s = Served(run, "--max-batch-size", "16", "--batch-wait-ms", "10")
    yield s, run
    assert "stopped" in s.stop()


def test_both_protocols_answer_as_nnps_predict_does(served, tmp_path: Path) -> None:
    from PIL import Image

    s, run = served
    assert s.first_line.startswith("serving digits (step 1000, final.npz; following) at ")
    assert call(s.url + "/v2/health/live") == (200, {"live": True})
    status, meta = call(s.url + "/v2/models/digits")
    assert status == 200 and meta["versions"] == ["1000"] and meta["inputs"][0]["shape"] == [-1, 784]
    specs = [f"{IMAGES}:{i}" for i in range(5)]
    png = tmp_path / "digit.png"
    Image.fromarray(255 - pixels(6)[5].reshape(28, 28)).resize((56, 56)).save(png)  # dark on light, larger
    out = subprocess.run([NNPS, "predict", str(run / "final.npz"), *specs, str(png), "--json"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    expected = np.array([r["activations"] for r in json.loads(out)])  # (6, 10)

    status, reply = call(s.url + "/v2/models/digits/infer", infer_body(pixels(5)))
    assert status == 200 and reply["model_version"] == "1000"
    acts = reply["outputs"][0]
    assert acts["shape"] == [5, 10]
    np.testing.assert_allclose(np.array(acts["data"]).reshape(5, 10), expected[:5], rtol=1e-5, atol=1e-7)
    assert reply["outputs"][1]["data"] == expected[:5].argmax(axis=1).tolist()

    status, reply = call(s.url + "/predict", json.dumps({"rows": pixels(5).tolist()}).encode())
    assert status == 200 and reply["step"] == 1000
    np.testing.assert_allclose([p["activations"] for p in reply["predictions"]], expected[:5], rtol=1e-5, atol=1e-7)

    status, reply = call(s.url + "/predict", *multipart("digit.png", png.read_bytes()))
    assert status == 200, reply
    np.testing.assert_allclose(reply["predictions"][0]["activations"], expected[5], rtol=1e-5, atol=1e-7)
    assert reply["predictions"][0]["class"] == int(expected[5].argmax())


def test_concurrent_requests_are_batched(served) -> None:
    s, _ = served
    before = call(s.url + "/stats")[1]["batch_sizes"]
    x = pixels(64)
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: call(s.url + "/v2/models/digits/infer", infer_body(x[i:i + 1])), range(64)))
    assert all(status == 200 for status, _ in replies)
    after = call(s.url + "/stats")[1]["batch_sizes"]
    grown = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    assert sum(k * v for k, v in grown.items()) == 64, grown  # every request went through a batch
    assert max(grown) > 1 and max(grown) <= 16, grown  # and some batches held several, none over the cap


def bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48M pixels, a few tens of KB on the wire
    return buf.getvalue()


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), [
    ("/v2/models/digits/infer", b"{not json", None, 400, "the body is not JSON"),
    ("/v2/models/digits/infer", infer_body(np.zeros((2, 5), np.uint8)), None, 400, "shape [2, 5] does not fit"),
    ("/v2/models/digits/infer", infer_body(np.zeros((1, 784)), "BF16"), None, 400, "datatype 'BF16' is not one of"),
    ("/v2/models/digits/infer", infer_body(np.full((1, 784), 300.0), "FP32"), None, 400, "within 0-255"),
    ("/v2/models/digits/infer", infer_body(np.zeros((1025, 784), np.uint8)), None, 413, "1025 rows in one request"),
    ("/v2/models/other/infer", infer_body(np.zeros((1, 784), np.uint8)), None, 404, "no model 'other' here"),
    ("/predict", b"x" * (9 * 1024 * 1024), None, 413, "request body over 8,388,608 bytes"),
    ("/predict", *multipart("notes.txt", b"not an image at all"), 415, "notes.txt: not an image Pillow can read"),
    ("/predict", *multipart("bomb.png", bomb()), 400, "bomb.png: 8000x6000 pixels, more than the 40,000,000"),
    ("/predict", json.dumps({"rows": "seven"}).encode(), None, 400, '{"rows": [[784 pixel values 0-255]'),
])  # fmt: skip
def test_a_bad_request_is_a_json_4xx_and_serving_goes_on(served, path, body, headers, status, message) -> None:
    s, _ = served
    got, reply = call(s.url + path, body, headers)
    assert got == status and message in reply["error"], reply
    assert call(s.url + "/predict", json.dumps({"rows": pixels(1).tolist()}).encode())[0] == 200


def test_a_followed_run_swaps_checkpoints_under_load(tmp_path: Path) -> None:
    run = tmp_path / "growing"
    train(run, "--epochs", "1")
    s = Served(run)
    steps: list[list[int]] = [[] for _ in range(4)]
    failures: list[Any] = []
    done = threading.Event()

    def client(i: int) -> None:
        body = json.dumps({"rows": pixels(1).tolist()}).encode()
        while not done.is_set():
            status, reply = call(s.url + "/predict", body)
            steps[i].append(reply["step"]) if status == 200 else failures.append(reply)

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client, i) for i in range(4)]
        train(run, "--resume", "--epochs", "40")
        deadline = time.monotonic() + 30
        while not any(seq and seq[-1] == 40_000 for seq in steps) and time.monotonic() < deadline:
            time.sleep(0.2)
        done.set()
        [c.result() for c in clients]
    s.stop()
    assert not failures, failures[:3]
    for seq in steps:
        assert seq == sorted(seq), "a client saw an older checkpoint after a newer one"
    seen = sorted({x for seq in steps for x in seq})
    assert seen[0] == 1000 and seen[-1] == 40_000 and len(seen) >= 3, seen


def status_of(url: str, body: bytes) -> int:
    """The HTTP status of a request whatever its body (a proxy's 5xx may be plain text); 0 if no answer came."""
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def test_a_replica_killed_under_load_is_replaced(served) -> None:
    s, _ = served
    pid = call(s.url + "/stats")[1]["replica"]
    body = json.dumps({"rows": pixels(1).tolist()}).encode()
    outcomes: list[tuple[float, int]] = []  # (seconds taken, status; 0 for a failed connection)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            status = status_of(s.url + "/predict", body)
            outcomes.append((time.monotonic() - t0, status))

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        time.sleep(2)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                stats = call(s.url + "/stats")
            except ValueError:  # a proxy's plain-text 5xx while the replica is down
                stats = (0, {})
            if stats[0] == 200 and stats[1]["replica"] != pid:
                break
            time.sleep(0.5)
        served_after = len(outcomes)
        time.sleep(2)
        stop.set()
        [c.result() for c in clients]  # a client that died would hide its requests
    statuses = [st for _, st in outcomes]
    assert call(s.url + "/stats")[1]["replica"] != pid, "no new replica"
    assert set(statuses) <= {200, 500, 502, 503}, set(statuses)  # answered, or a clear 5xx
    assert max(t for t, _ in outcomes) < 60  # none hung
    assert statuses[served_after:].count(200) >= 8  # and it serves again


def test_bad_flags_and_targets_are_one_line(served, tmp_path: Path) -> None:
    import socket

    _, run = served
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            ([str(tmp_path / "empty")], f"error: {tmp_path / 'empty'}: no checkpoint yet (neither final.npz nor ckpt-*.npz)"),
            ([str(tmp_path / "bad.npz")], f"error: {tmp_path / 'bad.npz'}: not a readable checkpoint"),
            ([str(run), "--autoscale", "3,1"], "error: --autoscale 3,1: needs 1 <= MIN <= MAX"),
            ([str(run), "--replicas", "0"], "error: --replicas must be >= 1, got 0"),
            ([str(run), "--port", str(port)], f"error: cannot listen on 127.0.0.1:{port}: Address already in use"),
            ([str(run), "--port", "70000"], "error: --port must be 0-65535, got 70000"),
        ]
        for args, message in cases:
            r = subprocess.run([NNPS, "serve", *args], capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


def test_a_table_network_is_served_in_its_columns_units(tmp_path: Path) -> None:
    """A classifier trained on a table answers rows of raw feature values (as arrays or by
    column name) as `nnps predict` answers the same rows from a CSV; a regression's answers
    come back in its target's units. Checked against a forward pass written here."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    names = [f"f{j}" for j in range(13)]
    table = tmp_path / "wine.csv"
    kinds = np.array(["barolo", "grignolino", "barbera"])[wine.target]
    table.write_text(",".join([*names, "kind", "alcohol_next"]) + "\n" + "".join(
        ",".join([*map(str, row), kind, str(row[0] + 0.5 * row[9])]) + "\n" for row, kind in zip(wine.data, kinds)))
    common = ["--data", str(table), "--hidden", "8", "--epochs", "5", "--workers", "0"]
    subprocess.run([NNPS, "train", *common, "--label", "kind", "--features", ",".join(names), "--lr", "0.5",
                    "--run-dir", str(tmp_path / "kind")], check=True, capture_output=True, timeout=300)  # fmt: skip
    subprocess.run([NNPS, "train", *common, "--task", "regress", "--label", "alcohol_next", "--features",
                    ",".join(names), "--optimizer", "adam", "--lr", "0.01", "--run-dir", str(tmp_path / "next")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    rows = wine.data[:4]
    (tmp_path / "rows.csv").write_text(",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    expected = json.loads(subprocess.run([NNPS, "predict", str(tmp_path / "kind"), str(tmp_path / "rows.csv"),
                                          "--json"], check=True, capture_output=True, text=True).stdout)  # fmt: skip
    with np.load(tmp_path / "kind" / "final.npz") as z:
        table_meta = json.loads(str(z["meta"]))["table"]
        ws, bs = [z["w1"], z["w2"]], [z["b1"], z["b2"]]
    a = (rows - np.array(table_meta["mean"])) / np.array(table_meta["std"])
    for w, b in zip(ws, bs):
        a = 1 / (1 + np.exp(-(a @ w.T + b)))
    s = Served(tmp_path / "kind")
    try:
        status, reply = call(s.url + "/predict", json.dumps({"rows": rows.tolist()}).encode())
        assert status == 200, reply
        got = np.array([p["activations"] for p in reply["predictions"]])
        np.testing.assert_allclose(got, a, rtol=1e-5, atol=1e-6)
        assert [p["label"] for p in reply["predictions"]] == [e["label"] for e in expected]
        by_name = [dict(zip(names, map(float, r))) for r in rows]
        assert call(s.url + "/predict", json.dumps({"rows": by_name}).encode())[1]["predictions"] == reply["predictions"]
        status, meta = call(s.url + "/v2/models/kind")
        assert meta["parameters"]["classes"] == ["barbera", "barolo", "grignolino"]
        assert meta["parameters"]["table"]["features"] == names
        status, reply = call(s.url + "/predict", json.dumps({"rows": [{"f0": 1.0}]}).encode())
        assert status == 400 and reply["error"].startswith("a row lacks column 'f1'; the network takes f0, f1"), reply
        status, reply = call(s.url + "/predict", *multipart("digit.png", b"\x89PNG"))
        assert status == 415 and "rows of a table as JSON" in reply["error"], reply
    finally:
        s.stop()
    # the regression's answers: its linear output in the target's units, from the file's arrays here
    from nnps.cluster import serving

    w = serving.load_weights(str(tmp_path / "next"))
    values = [p["values"]["alcohol_next"] for p in serving.answers(w, w.forward(rows))]
    with np.load(tmp_path / "next" / "final.npz") as z:
        meta = json.loads(str(z["meta"]))["table"]
        h = 1 / (1 + np.exp(-(((rows - np.array(meta["mean"])) / np.array(meta["std"])) @ z["w1"].T + z["b1"])))
        expected = (h @ z["w2"].T + z["b2"])[:, 0] * meta["target_std"][0] + meta["target_mean"][0]
    np.testing.assert_allclose(values, expected, rtol=1e-5)
