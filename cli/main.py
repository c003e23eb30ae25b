"""The `nnps` command."""

from __future__ import annotations

import sys

import click
import typer

try:  # Typer >= 0.29 vendors click and raises its own copies of click's exceptions
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older Typer uses click itself
    _typer_click = click.exceptions

NO_ARGS = (click.exceptions.NoArgsIsHelpError, _typer_click.NoArgsIsHelpError)
USAGE = (click.UsageError, _typer_click.UsageError)
ABORT = (click.exceptions.Abort, getattr(_typer_click, "Abort", click.exceptions.Abort), typer.Abort)

from nnps.cli.options import PASS_ON
from nnps.cli import bench, data, evaluate, inspect, jobs, plot, replay, serve, sweep, train, ui

app = typer.Typer(
    name="nnps",
    help="Train fully-connected networks by synchronous data-parallel SGD on a Ray parameter server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(train.train)
app.command()(evaluate.evaluate)
app.command()(evaluate.predict)
app.command()(replay.replay)
app.command(context_settings=PASS_ON)(jobs.submit)
app.command()(jobs.status)
app.command()(jobs.logs)
app.command()(jobs.stop)
app.command()(jobs.jobs)
app.command()(jobs.fetch)
app.command()(plot.plot)
app.command()(inspect.inspect)
app.command()(ui.ui)
app.command()(serve.serve)
app.command(context_settings=PASS_ON)(sweep.sweep)
app.command()(bench.bench)
app.add_typer(data.app, name="data")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors are one line too (click's default is a box)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="nnps", standalone_mode=False)
    except NO_ARGS:
        sys.exit(0)  # the help text is already printed
    except USAGE as e:
        where = f"{e.ctx.command_path}: " if e.ctx else ""
        print(f"error: {where}{e.format_message()}", file=sys.stderr)
        sys.exit(2)
    except ABORT:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
