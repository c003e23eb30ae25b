"""`nnps ui`'s web server: aiohttp, plain HTML, CSS and JavaScript from this package (README.md,
"Looking inside").

    GET  /                                   the page (static/index.html)
    GET  /api/runs                           the runs: local run directories and the dashboard's nnps jobs
    GET  /api/runs/{i}                       one run's config, workers, transport, examples/s, snapshots
    GET  /api/runs/{i}/metrics?since=N       its metrics rows from row N (the page polls it while it trains)
    GET  /api/runs/{i}/weights/{epoch}.png   W^1 after an epoch as a grid of images
    POST /api/runs/{i}/predict               {"pixels": [n_0 numbers 0-255]} -> prediction, outputs, activations
    GET  /api/runs/{i}/confusion             the latest checkpoint's confusion matrix on the test set
    GET  /api/runs/{i}/confusion/{t}/{p}.png  test images of true class t predicted as p

Every error is JSON {"error": "..."} with a 4xx status; bodies are capped (MAX_BODY). The work
(numpy, file reads) runs in a thread pool, so a slow checkpoint read stalls no other request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from aiohttp import web

from nnps.core.errors import NnpsError
from nnps.ui import images
from nnps.ui.runs import NotFound, Run

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024  # a 28x28 image as JSON is ~3 KB
MAX_PIXELS = 128 * 128  # the pad sends 112x112
RUNS = web.AppKey("runs", Callable[[], list[Run]])
log = logging.getLogger("nnps.ui")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def one_line_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """nnps's errors and bad requests as JSON with a status; the server goes on."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            return error(e.status, e.reason or "bad request")
        raise
    except NotFound as e:
        return error(404, str(e))
    except (NnpsError, ValueError) as e:  # a checkpoint that does not load, a malformed image
        return error(422 if isinstance(e, NnpsError) else 400, str(e))
    except Exception as e:  # a fault of this server's: still JSON, and the server goes on
        log.exception("nnps ui: %s %s", request.method, request.path)
        return error(500, f"internal error ({type(e).__name__}); the server's log has the details")


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))


def run_of(request: web.Request) -> Run:
    runs = request.app[RUNS]()
    key = request.match_info["i"]
    if not key.isdigit() or int(key) >= len(runs):
        raise NotFound(f"no run {key!r}: this page serves runs 0..{len(runs) - 1}")
    return runs[int(key)]


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def list_runs(request: web.Request) -> web.Response:
    runs = await in_thread(request.app[RUNS])
    return web.json_response([{"id": i, "name": r.name, "uri": r.uri, "job": r.job} for i, r in enumerate(runs)])


async def run_summary(request: web.Request) -> web.Response:
    return web.json_response(await in_thread(run_of(request).summary))


async def run_metrics(request: web.Request) -> web.Response:
    since = request.query.get("since", "0")
    if not since.isdigit():
        raise ValueError(f"since must be a row number, got {since!r}")
    rows = await in_thread(run_of(request).metrics)
    return web.json_response({"rows": rows[int(since):], "total": len(rows)})


async def weights_png(request: web.Request) -> web.Response:
    epoch = request.match_info["epoch"]
    if not epoch.isdigit():
        raise ValueError(f"epoch must be a number, got {epoch!r}")
    w1 = await in_thread(run_of(request).weights, int(epoch))
    return web.Response(body=await in_thread(images.neuron_grid, w1), content_type="image/png")


async def predict(request: web.Request) -> web.Response:
    run = run_of(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"the body is not JSON ({e})")
    except RecursionError:
        raise ValueError("the body nests too deeply to be a request")
    if isinstance(body, dict) and "row" in body:  # a table's row, in its columns' units
        row = numbers(body["row"], '{"row": [the features\' values]}', "a row's values must be finite numbers")
        return web.json_response(await in_thread(run.predict_row, row))
    pixels = numbers(body.get("pixels") if isinstance(body, dict) else None,
                     f'{{"pixels": [up to {MAX_PIXELS} numbers 0-255]}}', "pixels must be numbers 0-255")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixels must be numbers 0-255")
    return web.json_response(await in_thread(run.predict, np.rint(pixels).astype(np.uint8)))


def numbers(values: Any, expected: str, what: str) -> np.ndarray:
    """A list of up to MAX_PIXELS finite numbers from the page (pixels, or a table's row), or
    ValueError saying what was `expected` or `what` they must be."""
    if not isinstance(values, list) or not 0 < len(values) <= MAX_PIXELS:
        raise ValueError(f"expected {expected}")
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(what)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise ValueError(what)
    return a


async def test_row(request: web.Request) -> web.Response:
    k = request.match_info["k"]
    if not k.isdigit():
        raise ValueError(f"a test row is a number, got {k!r}")
    return web.json_response(await in_thread(run_of(request).test_row, int(k)))


async def confusion(request: web.Request) -> web.Response:
    run = run_of(request)
    summary = await in_thread(run.summary)
    if summary["table"] and summary["table"]["targets"]:  # a regression: predicted against true instead
        return web.json_response({"scatter": await in_thread(run.scatter), "r2": summary.get("test_r2")})
    name, m = await in_thread(run.test_mistakes)
    n = len(m.confusion)
    return web.json_response({"checkpoint": name, "confusion": m.confusion.tolist(), "classes": run.classes(n),
                              "accuracy": float(np.trace(m.confusion)) / max(int(m.confusion.sum()), 1)})  # fmt: skip


async def confusion_cell(request: web.Request) -> web.Response:
    run = run_of(request)
    t, p = request.match_info["t"], request.match_info["p"]
    _, m = await in_thread(run.test_mistakes)
    n = len(m.confusion)
    if not (t.isdigit() and p.isdigit() and int(t) < n and int(p) < n):
        raise NotFound(f"no cell ({t}, {p}): classes are 0..{n - 1}")
    ds = await in_thread(run.dataset)
    if ds.table is not None:
        raise NotFound("a table's test rows are not images: pick one by its number")
    which = np.flatnonzero((ds.y_test == int(t)) & (m.predicted == int(p)))[: images.CELL_IMAGES]
    return web.Response(body=await in_thread(images.image_grid, ds.x_test[which], ds.image_shape),
                        content_type="image/png")  # fmt: skip


def make_app(runs: Callable[[], list[Run]]) -> web.Application:
    app = web.Application(middlewares=[one_line_errors], client_max_size=MAX_BODY)
    app[RUNS] = runs
    app.add_routes([
        web.get("/", index),
        web.static("/static", STATIC),
        web.get("/api/runs", list_runs),
        web.get("/api/runs/{i}", run_summary),
        web.get("/api/runs/{i}/metrics", run_metrics),
        web.get("/api/runs/{i}/weights/{epoch}.png", weights_png),
        web.post("/api/runs/{i}/predict", predict),
        web.get("/api/runs/{i}/confusion", confusion),
        web.get("/api/runs/{i}/confusion/{t}/{p}.png", confusion_cell),
        web.get("/api/runs/{i}/rows/{k}", test_row),
    ])  # fmt: skip
    return app


def serve(runs: Callable[[], list[Run]], host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve until interrupted; `ready(url)` once listening (port 0: a free one)."""

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise NnpsError(f"cannot listen on {host}:{port}: {e.strerror or e}")

    async def main() -> None:
        runner = web.AppRunner(make_app(runs), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        bound = sock.getsockname()[1]
        ready(f"http://{host if ':' not in host else f'[{host}]'}:{bound}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
