"""Rich progress for training: one bar per epoch with cost, accuracy and examples/s."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichReporter:
    def __init__(self, console: Console, total_epochs: int) -> None:
        self.console, self.total_epochs = console, total_epochs
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[text]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def run_start(self, total_steps: int, steps_per_epoch: int, start_step: int, epochs: int) -> None:
        pass

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        if self.task is None:  # started on the first epoch, so errors before it print cleanly
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=steps + done, completed=done, epoch=epoch,
                                           of=self.total_epochs, text="")  # fmt: skip

    def advance(self, steps: int, cost: float, accuracy: float, examples_per_s: float) -> None:
        """`accuracy` NaN: a regression, which has none."""
        acc = f"  acc {accuracy:.2%}" if accuracy == accuracy else ""
        self.progress.update(self.task, advance=steps, text=f"cost {cost:.4f}{acc}  {examples_per_s:,.0f} ex/s")

    def epoch_end(self, row: dict[str, Any]) -> None:
        # one line each, however narrow the terminal (or 80 columns when piped): a log stays one epoch a line
        self.console.print(epoch_text(row["epoch"], row, " (partial)" if row.get("partial") else ""), soft_wrap=True)


# Ray's job manager writes these into every job's log: "2026-12-03 09:25:17,502\tINFO
# job_manager.py:581 -- Runtime env is setting up." and "Running entrypoint for job ...".
RAY_NOTICE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+INFO \S+\.py:\d+ -- |Running entrypoint for job ")


class LogView:
    """A job's log as `nnps train` prints it: its progress records become a line per epoch
    (the periodic ones in between are dropped); Ray's own notices of the job's start (its
    INFO records, "Running entrypoint ...") are dropped; other lines pass as they are. With
    `raw`, only the records, one JSON object a line. Fed chunks that may split lines."""

    def __init__(self, raw: bool = False) -> None:
        self.raw, self.pending, self.shown = raw, "", 0

    def feed(self, chunk: str) -> str:
        from nnps.core.progress import MARKER

        text, _, self.pending = (self.pending + chunk).rpartition("\n")
        out = []
        for line in text.split("\n") if text else []:
            if not line.startswith(MARKER):
                out += [] if self.raw or RAY_NOTICE.match(line) else [line]
                continue
            try:
                record = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                continue
            if self.raw:
                out.append(json.dumps(record, sort_keys=True))
            elif record.get("epochs_done", 0) > self.shown:
                self.shown = record["epochs_done"]
                out.append(epoch_text(record["epochs_done"], record))
        return "".join(f"{line}\n" for line in out)


def epoch_text(epoch: int, r: dict[str, Any], note: str = "") -> str:
    """"epoch   3  step    1800  train cost 0.0712  acc 91.20%  test cost ...": one epoch's numbers
    (a regression's: its test R^2 and MAE in place of the accuracies)."""
    nan = float("nan")
    if "test_r2" in r:
        train, test = "", f"test R^2 {r['test_r2']:.4f}  MAE {r.get('test_mae', nan):.4g}"
    else:
        train, test = f"acc {r.get('train_accuracy', nan):.2%}  ", f"test acc {r.get('test_accuracy', nan):.2%}"
    return (f"epoch {epoch:>3}{note}  step {r.get('step', 0):>7}  train cost {r.get('train_cost', nan):.4f}  "
            f"{train}test cost {r.get('test_cost', nan):.4f}  {test}  {r.get('examples_per_s', 0):,.0f} ex/s")
