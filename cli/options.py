"""Options more than one command takes, declared once."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

import click
import typer

from nnps.core.environment import RAY_ADDRESS

RayAddress = Annotated[Optional[str], typer.Option(
    help=f"Ray cluster to join (default: ${RAY_ADDRESS.name}, else an embedded local Ray)", envvar=RAY_ADDRESS.name)]
Dashboard = Annotated[Optional[str], typer.Option("--address", help="Ray dashboard address, e.g. http://127.0.0.1:8265")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")]

PASS_ON = {"allow_extra_args": True, "ignore_unknown_options": True}  # commands whose unknown flags are train's


def command_of(fn: Callable[..., Any], **context_settings: Any) -> click.Command:
    """A command's own parser, built from its function alone: how submit and sweep read
    train's (and sweep's) flags without importing the whole CLI."""
    alone = typer.Typer()
    alone.command(context_settings=context_settings or None)(fn)
    return typer.main.get_command(alone)
