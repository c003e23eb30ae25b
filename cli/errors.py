"""The CLI's edge: nnps's own errors become one line on stderr and exit 1."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from nnps.core.errors import NnpsError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Run a command; an NnpsError (or Ctrl-C) ends it with one line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NnpsError as e:
            raise fail(str(e))
        except KeyboardInterrupt:
            raise fail("interrupted; what was written so far is intact (resume with --resume)", 130)

    return wrapper  # type: ignore[return-value]
