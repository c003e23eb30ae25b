"""`nnps ui`: a local web page of runs, their live curves, weights and a canvas to draw on."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from nnps.cli.errors import handle_errors
from nnps.core.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@handle_errors
def ui(
    run_dirs: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN_DIR...]", help="Run directories (paths or URIs)")] = None,
    address: Annotated[Optional[str], typer.Option(help="A Ray dashboard whose nnps jobs to show too")] = None,
    port: Annotated[int, typer.Option(help="Port (0: a free one)")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback lets whoever reaches it read the runs")] = "127.0.0.1",
) -> None:  # fmt: skip
    """Serve a page on 127.0.0.1: the runs, learning curves that grow while they train, W^1 per epoch,
    a canvas to draw a digit on, and the confusion matrix. Reads only the runs and the dashboard named."""
    from nnps.ui.runs import job_runs, local_runs
    from nnps.ui.server import serve

    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be 0-65535, got {port}")
    if not run_dirs and not address:
        raise ConfigError("give one or more RUN_DIRs, or --address of a Ray dashboard with nnps jobs")
    local = local_runs(list(run_dirs or []))
    if address:
        job_runs(address)  # fails now, in one line, if the dashboard cannot be reached

    def runs():  # type: ignore[no-untyped-def]
        return local + (job_runs(address) if address else [])

    if host not in LOOPBACK:
        print(f"warning: serving on {host}: anyone who can reach this address can read these runs", file=sys.stderr)

    def ready(url: str) -> None:
        print(f"nnps ui: {url}  (Ctrl-C to stop)", flush=True)

    serve(runs, host, port, ready)
