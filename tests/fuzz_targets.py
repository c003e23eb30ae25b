"""What the fuzzers feed (tests/test_fuzz.py under hypothesis, bench/fuzz.py under atheris):
each reader nnps applies to a file or a request, the errors it may raise for a bad one, and
its seed corpus in tests/data/fuzz/NAME/ (small valid files, made by `bench/fuzz.py
--make-corpus`)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypothesis import strategies as st

from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.datasets import load_npz, load_parquet_dir
from nnps.core.errors import CheckpointError, ConfigError, DataError, NnpsError
from nnps.core.idx import read_images, read_labels
from nnps.core.images import decode
from nnps.core.rundir import RunDir
from nnps.core.record import UpdateLog

CORPUS = Path(__file__).parent / "data" / "fuzz"


@dataclass(frozen=True)
class Target:
    name: str
    read: Callable[[bytes, Path], object]  # (input, a scratch directory) -> whatever it loads
    errors: tuple[type[BaseException], ...]  # what a bad input may raise

    def seeds(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((CORPUS / self.name).iterdir())]


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _parquet(data: bytes, tmp: Path) -> object:
    for split in ("train", "test"):
        _file(tmp / "pq", f"{split}.parquet", data)
    return load_parquet_dir(tmp / "pq")


def _metrics(data: bytes, tmp: Path) -> object:
    _file(tmp / "run", "metrics.jsonl", data)
    return RunDir(str(tmp / "run")).read_metrics()


class UiServer:
    """`nnps ui`'s app on a real socket in a thread, serving the corpus's checkpoint as a run."""

    url: str | None = None
    lock = threading.Lock()

    @classmethod
    def start(cls, tmp: Path) -> str:
        with cls.lock:
            if cls.url is None:
                import asyncio

                from aiohttp import web

                from nnps.ui.runs import Run
                from nnps.ui.server import make_app

                run = tmp / "ui-run"
                _file(run, "final.npz", (CORPUS / "checkpoint" / "seed-0.npz").read_bytes())
                ready = threading.Event()
                holder: dict[str, str] = {}

                async def main() -> None:
                    runner = web.AppRunner(make_app(lambda: [Run("fuzz", str(run))]), access_log=None)
                    await runner.setup()
                    site = web.TCPSite(runner, "127.0.0.1", 0)
                    await site.start()
                    holder["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
                    ready.set()
                    await asyncio.Event().wait()

                threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
                ready.wait(30)
                cls.url = holder["url"]
            return cls.url


class BadAnswer(Exception):
    """The server answered outside its contract: not JSON, or a 5xx."""


def _ui_predict(data: bytes, tmp: Path) -> object:
    req = urllib.request.Request(f"{UiServer.start(tmp)}/api/runs/0/predict", data=data,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        answer = json.loads(body)
    except ValueError:
        raise BadAnswer(f"{status}: not JSON: {body[:200]!r}")
    if status >= 500 or (status >= 400) != ("error" in answer):
        raise BadAnswer(f"{status}: {answer}")
    if status >= 400:
        raise RequestRefused(answer["error"])
    return answer


class RequestRefused(Exception):
    """A 4xx with a JSON error: how the page's server refuses a bad request."""


TARGETS = [
    Target("idx-images", lambda d, t: read_images(_file(t, "images", d)), (DataError,)),
    Target("idx-labels", lambda d, t: read_labels(_file(t, "labels", d)), (DataError,)),
    Target("npz", lambda d, t: load_npz(_file(t, "data.npz", d)), (DataError,)),
    Target("parquet", _parquet, (DataError,)),
    Target("image", lambda d, t: decode(d, "upload", (28, 28), 20), (DataError,)),
    Target("checkpoint", lambda d, t: checkpoint.from_bytes(d, "ckpt.npz"), (CheckpointError,)),
    Target("updates", lambda d, t: UpdateLog.from_bytes(d, "updates.npy"), (DataError,)),
    Target("config", lambda d, t: TrainConfig.from_json(d, "config.json"), (ConfigError,)),
    Target("metrics", _metrics, (NnpsError,)),
    Target("ui-predict", _ui_predict, (RequestRefused,)),
]


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with bytes flipped, a stretch cut out, bytes inserted, or a stretch repeated."""

    @st.composite
    def one(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.sampled_from(("flip", "cut", "insert", "repeat")))
            if kind == "flip" and at < len(data):
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "cut":
                del data[at : at + draw(st.integers(1, 64))]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            else:
                data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
        return bytes(data)

    return one()
