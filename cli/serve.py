"""`nnps serve`: a trained network over HTTP on Ray Serve (cluster/serve_app.py)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import PurePosixPath
from typing import Annotated, Any

import typer

from nnps.cli.errors import handle_errors
from nnps.core.errors import ClusterError, ConfigError


def default_name(target: str) -> str:
    """The run directory's name: runs/relu and runs/relu/final.npz both serve as `relu`."""
    p = PurePosixPath(target.split("://", 1)[-1].rstrip("/"))
    return (p.parent.name if p.suffix == ".npz" else p.name) or "nnps"


def bindable_port(host: str, port: int | None) -> int:
    """`port` if it is free on `host` (a free one if None), or a one-line error."""
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {port}")
    with socket.socket() as s:
        try:
            s.bind((host, port or 0))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}")
        return int(s.getsockname()[1])


def scaling(replicas: int, autoscale: str | None) -> tuple[int, tuple[int, int] | None]:
    if replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {replicas}")
    if autoscale is None:
        return replicas, None
    parts = autoscale.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--autoscale takes MIN,MAX replicas, got {autoscale!r}")
    lo, hi = int(parts[0]), int(parts[1])
    if not 1 <= lo <= hi:
        raise ConfigError(f"--autoscale {autoscale}: needs 1 <= MIN <= MAX")
    return lo, (lo, hi)


def fits(replicas: int, embedded: bool) -> None:
    """More replicas than the embedded Ray has CPUs would wait forever for a CPU: refuse."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    if embedded and replicas > cpus:
        raise ConfigError(f"{replicas} replicas need {replicas} CPUs; this machine's Ray has {cpus}")


def wait_for_signal() -> None:
    """Block until Ctrl-C or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


@handle_errors
def serve(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="A run directory (follows its newest checkpoint) or a checkpoint .npz")],
    port: Annotated[int | None, typer.Option(help="HTTP port (default: a free one, printed)")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option(help="The model's name in /v2/models/NAME (default: the run directory's)")] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the model (one CPU each)")] = 1,
    autoscale: Annotated[str | None, typer.Option(metavar="MIN,MAX", help="Autoscale between MIN and MAX replicas")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most requests stacked into one forward pass")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a batch waits to fill, in ms (0: it takes what has queued while the last one ran)")] = 0.0,
    follow: Annotated[bool, typer.Option(help="Swap to each newer checkpoint of a run directory")] = True,
    address: Annotated[str | None, typer.Option(help="Deploy to this Ray cluster (GCS address) and return")] = None,
) -> None:
    """Serve a trained network over HTTP (Open Inference Protocol v2 and /predict) on Ray Serve."""
    from nnps.cluster import serving
    from nnps.cluster.connect import embedded, ray_connection

    if max_batch_size < 1 or batch_wait_ms < 0:
        raise ConfigError(f"--max-batch-size must be >= 1 and --batch-wait-ms >= 0, got {max_batch_size}, {batch_wait_ms}")
    replicas, auto = scaling(replicas, autoscale)
    name = name or default_name(target)
    first = serving.load_weights(target)  # a bad target fails here, in one line, before Ray starts
    port = bindable_port(host, port) if address is None else (port or 8000)
    with ray_connection(address):
        fits(auto[1] if auto else replicas, embedded())
        url = deploy(target, name, port, host, follow, replicas, auto, max_batch_size, batch_wait_ms)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"serving {name} (step {first.step}, {first.source}; {'following' if follow else 'fixed'}) at {url}",
              flush=True)
        print(f"  POST http://{shown}:{port}/v2/models/{name}/infer   POST http://{shown}:{port}/predict", flush=True)
        if address is not None:
            return
        print("Ctrl-C stops it", flush=True)
        wait_for_signal()
        from ray import serve as ray_serve

        ray_serve.shutdown()
        print("stopped", flush=True)


def deploy(target: str, name: str, port: int, host: str, follow: bool, replicas: int,
           auto: tuple[int, int] | None, max_batch_size: int, batch_wait_ms: float) -> str:
    """Start Serve's proxy on host:port and run the model's application; its URL."""
    from ray import serve as ray_serve

    from nnps.cluster import serve_app

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"follow": follow, "replicas": replicas, "autoscale": auto,
                              "max_batch_size": max_batch_size, "batch_wait_ms": batch_wait_ms}  # fmt: skip
    from ray.exceptions import RayError

    for attempt in (1, 2):  # Serve's proxy can be replaced while it starts on a loaded machine: once more
        try:
            ray_serve.start(http_options={"host": host, "port": port})
            ray_serve.run(serve_app.app(target, name, **kwargs), name=name, route_prefix="/")
            break
        except (RuntimeError, RayError) as e:
            if attempt == 2 or not isinstance(e, RayError):
                raise ClusterError(f"Serve could not deploy {name}: {str(e).splitlines()[0]}")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v2/models/{name}"
