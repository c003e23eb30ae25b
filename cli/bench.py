"""`nnps bench`: measure where distribution pays on this machine or cluster."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nnps.cli.errors import handle_errors
from nnps.cli.formatting import print_json
from nnps.cli.options import JsonOut
from nnps.core.environment import RAY_ADDRESS
from nnps.core.config import parse_hidden
from nnps.core.errors import ConfigError


def positive_ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} must be positive integers, comma-separated, got {text!r}")
    return values


@handle_errors
def bench(
    hidden: Annotated[str, typer.Option(help="Hidden layer widths of the network to measure")] = "30",
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated")] = "10,100,1000,10000",
    workers: Annotated[Optional[str], typer.Option(help="Worker counts, comma-separated (default: 1, 2, 4, ... up to the CPUs Ray sees)")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster to measure (default: an embedded local Ray)", envvar=RAY_ADDRESS.name)] = None,
    save: Annotated[bool, typer.Option(help="Save the coordination costs for --workers auto")] = True,
    json_out: JsonOut = False,
) -> None:  # fmt: skip
    """Examples/s with N Ray workers against one process, per batch size; calibrates --workers auto."""
    import os

    import ray

    from nnps.cluster.calibrate import measure, overheads, round_trip, worker_counts
    from nnps.cluster.connect import ray_connection
    from nnps.core import costmodel

    sizes = positive_ints("--batches", batches)
    counts = positive_ints("--workers", workers) if workers else None
    with ray_connection(address, num_cpus=max([os.cpu_count() or 1, *(counts or [])])):  # room for every count asked
        cpus = int(ray.cluster_resources().get("CPU", 1))
        rt = round_trip()
        rows = measure(parse_hidden(hidden), sizes, counts or worker_counts(cpus))
    serial = {r.batch: r.seconds for r in rows if r.workers == 0}
    where = f"{address or 'local Ray'} ({cpus} CPUs)"
    if save:
        path = costmodel.save_overhead(overheads(rows), where)
    if json_out:
        return print_json({"round_trip_s": rt, "rows": [r.__dict__ for r in rows]})
    print(f"784-{hidden.replace(',', '-')}-10 on {where}; Ray actor round trip {rt * 1e3:.2f} ms; sync steps "
          f"(bench/consistency.py measures --consistency bounded and async)")  # fmt: skip
    print(f"{'batch':>6} {'workers':>7} {'mode':>14} {'ms/step':>8} {'ex/s':>10} {'vs 1 process':>12}")
    for r in rows:
        mark = "  <- pays" if r.workers and serial[r.batch] / r.seconds > 1.0 else ""
        print(f"{r.batch:>6} {r.workers:>7} {r.mode:>14} {r.seconds * 1e3:>8.2f} {r.examples_per_s:>10,.0f} "
              f"{serial[r.batch] / r.seconds:>11.2f}x{mark}")  # fmt: skip
    if save:
        print(f"coordination costs saved to {path} for --workers auto")
