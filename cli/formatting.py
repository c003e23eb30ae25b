"""How the CLI says a run's channels, its consistency mode and a download's progress."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from rich.console import Console


def print_json(obj: Any, sort_keys: bool = False) -> None:
    """`--json`'s output: one line of JSON on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=sort_keys) + "\n")


def consistency_note(s: dict | None) -> str:
    """"async, 2 workers, staleness max 3, mean 1.02": a bounded or async run's mode ("" for sync)."""
    if not s:
        return ""
    mode = f"bounded (TAU {s['tau']})" if s["mode"] == "bounded" else s["mode"]
    return f"{mode}, {s['workers']} workers, staleness max {s['max']}, mean {s['mean']:.2f}"


def steps_by_channel(record: dict | None) -> str:
    """"unix 53, in-process 7": the steps each channel carried, most first ("" in-process)."""
    steps = sorted(((n, name) for name, n in (record or {}).get("steps", {}).items() if n), reverse=True)
    return ", ".join(f"{name} {n}" for n, name in steps)


def download_progress(console: Console) -> Callable[[str, int, int | None], None]:
    """A callback drawing a Rich bar per file the catalog downloads."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    state: dict[str, object] = {}

    def report(name: str, done: int, total: int | None) -> None:
        if name not in state:
            bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                           console=console, transient=True)  # fmt: skip
            bar.start()
            state[name] = (bar, bar.add_task(name, total=total))
        bar, task = state[name]  # type: ignore[misc]
        bar.update(task, completed=done)
        if total is not None and done >= total:
            bar.stop()

    return report
