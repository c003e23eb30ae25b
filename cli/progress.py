"""Rich progress for training: one bar per epoch with cost, accuracy and examples/s."""

from __future__ import annotations

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
            TextColumn("cost {task.fields[cost]:.4f}  acc {task.fields[acc]:.2%}  {task.fields[rate]:,.0f} ex/s"),
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
                                           of=self.total_epochs, cost=0.0, acc=0.0, rate=0.0)  # fmt: skip

    def advance(self, steps: int, cost: float, accuracy: float, examples_per_s: float) -> None:
        self.progress.update(self.task, advance=steps, cost=cost, acc=accuracy, rate=examples_per_s)

    def epoch_end(self, row: dict[str, Any]) -> None:
        partial = " (partial)" if row.get("partial") else ""
        self.console.print(
            f"epoch {row['epoch']:>3}{partial}  step {row['step']:>7}  train cost {row['train_cost']:.4f}  "
            f"acc {row['train_accuracy']:.2%}  test cost {row['test_cost']:.4f}  test acc {row['test_accuracy']:.2%}"
            f"  {row['examples_per_s']:,.0f} ex/s"
        )
