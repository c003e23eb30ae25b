"""`nnps serve` under load, against Serve's own floor and a plain aiohttp server, side by side.

For the seed network (784-30-10) and one whose forward pass dominates (784-2048-2048-10),
one OIP v2 request of one 784-pixel row at a time per client, on loopback:

    (a) nnps serve's deployment, with batching (its defaults: at most 32, no wait: a batch is what
        queued while the last one ran) and without (at most 1)
    (b) a Serve deployment that reads the body and returns a constant: Serve's floor here
    (c) one plain aiohttp process calling the same numpy forward pass: what Serve costs

The load generator is its own process: N clients (concurrency 1, 16, 64), each sending a
request as soon as its last one is answered, for --seconds after a 1 s warm-up that is not
counted; requests/s, p50 and p99 latency, and errors. Bounded: every request has a 30 s
timeout and every cell stops at its time. Run:

    .venv/bin/python bench/serve.py [--seconds 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NNPS = str(Path(sys.executable).parent / "nnps")
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "mnist-10k"
NETS = {"784-30-10": ["--hidden", "30", "--epochs", "1"], "784-2048-2048-10": ["--hidden", "2048,2048", "--steps", "1"]}


def body() -> bytes:
    row = np.random.default_rng(0).integers(0, 256, 784)
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8", "data": row.tolist()}]}).encode()


async def load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    payload, latencies, errors = body(), [], 0
    start = time.perf_counter() + 1.0  # warm-up: not counted
    end = start + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < end:
            try:
                async with session.post(url, data=payload, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if t0 >= start:
                latencies.append(time.perf_counter() - t0) if ok else None
                errors += not ok

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    ms = np.array(latencies) * 1e3
    return {"rps": len(ms) / seconds, "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"), "errors": errors}  # fmt: skip


def _load_proc(url: str, clients: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(load(url, clients, seconds)))


def measure(url: str, levels: list[int], seconds: float) -> dict[int, dict[str, Any]]:
    """Each concurrency level by a fresh load-generator process."""
    ctx = mp.get_context("spawn")
    results = {}
    for c in levels:
        q = ctx.Queue()
        p = ctx.Process(target=_load_proc, args=(url, c, seconds, q))
        p.start()
        results[c] = q.get(timeout=seconds + 120)
        p.join()
    return results


def aiohttp_server(ckpt: str, port: int) -> None:
    """(c): one process, the same numpy forward pass and OIP parsing, no Serve."""
    from aiohttp import web

    from nnps.cluster import serving

    w = serving.load_weights(ckpt)

    async def infer(request: web.Request) -> web.Response:
        x = serving.tensor_of(json.loads(await request.read()), "m", w.inputs)
        out = w.forward(x)
        return web.json_response({"outputs": [{"name": "activations", "data": out.ravel().tolist()}]})

    app = web.Application()
    app.router.add_post("/v2/models/m/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the aiohttp server did not listen on {port} in {timeout_s:g} s")
            time.sleep(0.1)


def serve_rows(ckpts: dict[str, str], levels: list[int], seconds: float, port: int) -> list[tuple[str, str, dict]]:
    import ray
    from ray import serve
    from starlette.requests import Request

    from nnps.cluster import serve_app

    @serve.deployment(max_ongoing_requests=128)
    class Constant:
        async def __call__(self, request: Request) -> dict[str, bool]:
            await request.body()
            return {"ok": True}

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v2/models/m/infer"
    rows = []
    serve.run(Constant.bind(), name="constant", route_prefix="/")
    rows.append(("any", "(b) Serve, constant", measure(url, levels, seconds)))
    serve.delete("constant")
    for net, ckpt in ckpts.items():
        for label, size, wait in (("(a) nnps serve, batching", 32, 0.0), ("(a) nnps serve, no batching", 1, 0.0)):
            serve.run(serve_app.app(ckpt, "m", follow=False, max_batch_size=size, batch_wait_ms=wait), name="m",
                      route_prefix="/")  # fmt: skip
            rows.append((net, label, measure(url, levels, seconds)))
            serve.delete("m")
    serve.shutdown()
    ray.shutdown()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="1 s per cell, concurrency 1 and 16")
    p.add_argument("--aiohttp-server", nargs=2, metavar=("CKPT", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.aiohttp_server:
        return aiohttp_server(args.aiohttp_server[0], int(args.aiohttp_server[1]))
    levels, seconds = ([1, 16], 1.0) if args.quick else ([1, 16, 64], args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = {}
        for net, flags in NETS.items():
            subprocess.run([NNPS, "train", "--data", str(DATA), *flags, "--workers", "0", "--run-dir",
                            f"{tmp}/{net}"], check=True, capture_output=True)  # fmt: skip
            ckpts[net] = f"{tmp}/{net}/final.npz"
        rows = serve_rows(ckpts, levels, seconds, free_port())
        for net, ckpt in ckpts.items():
            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--aiohttp-server", ckpt, str(port)])
            wait_listening(port)
            rows.append((net, "(c) aiohttp + numpy", measure(f"http://127.0.0.1:{port}/v2/models/m/infer", levels, seconds)))
            server.terminate()
            server.wait()
    report(rows, levels, seconds)


def report(rows: list[tuple[str, str, dict]], levels: list[int], seconds: float) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# bench/serve.py, {time.strftime('%Y-%m-%d')}, commit {commit}, {seconds:g} s per cell, 2 CPUs for Ray\n")
    cols = " | ".join(f"c{c} req/s | c{c} p50 ms | c{c} p99 ms" for c in levels)
    print(f"| network | server | {cols} | errors |\n|---|---|" + "---:|" * (3 * len(levels) + 1))
    for net, server, r in rows:
        cells = " | ".join(f"{r[c]['rps']:.0f} | {r[c]['p50']:.2f} | {r[c]['p99']:.2f}" for c in levels)
        print(f"| {net} | {server} | {cells} | {sum(r[c]['errors'] for c in levels)} |")
    get = {(n, s): r for n, s, r in rows}
    top, floor = levels[-1], get[("any", "(b) Serve, constant")]
    seed, wide = (get[(net, "(a) nnps serve, batching")] for net in NETS)
    print(f"\n(a)/(b) req/s at c{top}, seed network: {seed[top]['rps'] / floor[top]['rps']:.2f}x (goal >= 0.8x)")
    print(f"(a) p50 - (b) p50 at c1, seed network: {seed[1]['p50'] - floor[1]['p50']:+.2f} ms (goal <= 1 ms)")
    nob = get[("784-2048-2048-10", "(a) nnps serve, no batching")]
    print(f"wide network, batching / no batching req/s at c{top}: {wide[top]['rps'] / nob[top]['rps']:.2f}x (goal >= 2x)")
    for net in NETS:
        c = get[(net, "(c) aiohttp + numpy")]
        print(f"{net}: aiohttp+numpy / nnps serve (batching) req/s at c{top}: "
              f"{c[top]['rps'] / get[(net, '(a) nnps serve, batching')][top]['rps']:.1f}x")


if __name__ == "__main__":
    main()
