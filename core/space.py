"""A sweep's search space, written with `nnps train`'s own flags.

    --lr 0.01:3.0:log          a range: lo:hi, or lo:hi:log for a log-uniform one
    --batch-size 10,100        a choice among the listed values
    --hidden 30,100,16x16      hidden layers' choices: 16x16 is two layers of 16
    --activation relu          one value: fixed for every trial

A flag given as a list or a range varies; every other train flag is fixed for all trials.
`Axis` is what nnps parses and checks; `cluster/sweep.py` turns axes into Ray Tune's
sampling domains, so Tune samples and schedules, seeded by the sweep's --seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError

# The flags that may vary, and the type of their values. Anything else (--data, --seed,
# --workers, ...) is fixed: the data and its validation split are shared by every trial.
NUMERIC = {"lr": float, "momentum": float, "l2": float, "lr_gamma": float, "batch_size": int, "lr_step_epochs": int}
CHOICES = ("hidden", "activation", "output", "cost", "weight_init", "optimizer", "schedule", "dtype")
VARIABLE = (*NUMERIC, *CHOICES)


@dataclass(frozen=True)
class Axis:
    """One varied flag: `values` for a choice, or `lo`, `hi`, `log` for a range."""

    field: str
    values: tuple[Any, ...] = ()
    lo: float = 0.0
    hi: float = 0.0
    log: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values

    def describe(self) -> str:
        if self.values:
            return f"{flag(self.field)} {{{', '.join(map(show, self.values))}}}"
        return f"{flag(self.field)} {show(self.lo)}..{show(self.hi)}{' (log)' if self.log else ''}"


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def show(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def varies(text: str, field: str) -> bool:
    """Whether a flag's text is a list or a range rather than one value."""
    return ":" in text or "," in text or (field == "hidden" and "x" in text)


def hidden_choice(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in text.split("x")) if text.lower() != "none" else ()
    except ValueError:
        raise ConfigError(f"--hidden choice {text!r} is not widths like 30 or 16x16")
    if any(n < 1 for n in sizes):
        raise ConfigError(f"--hidden choice {text!r} has a width below 1")
    return sizes


def parse_axis(field: str, text: str) -> Axis:
    """One varied flag's text as an Axis, or a ConfigError naming the flag and the fault."""
    name = flag(field)
    if field not in VARIABLE:
        raise ConfigError(f"{name} cannot vary in a sweep (every trial shares it); give it one value")
    if ":" in text:
        return parse_range(field, text)
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise ConfigError(f"{name} {text!r}: an empty choice")
    if field == "hidden":
        values: tuple[Any, ...] = tuple(hidden_choice(p) for p in parts)
    elif field in NUMERIC:
        try:
            values = tuple(NUMERIC[field](p) for p in parts)
        except ValueError:
            raise ConfigError(f"{name} {text!r}: choices must be {NUMERIC[field].__name__} numbers")
    else:
        values = tuple(parts)
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} {text!r}: a choice is listed twice")
    for v in values:  # each choice must make a valid config on its own
        TrainConfig(**{field: v})
    return Axis(field, values)


def parse_range(field: str, text: str) -> Axis:
    name = flag(field)
    if field not in NUMERIC:
        raise ConfigError(f"{name} takes a choice (a,b,c), not a range: {text!r}")
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise ConfigError(f"{name} {text!r}: a range is lo:hi or lo:hi:log")
    try:
        lo, hi = NUMERIC[field](parts[0]), NUMERIC[field](parts[1])
    except ValueError:
        raise ConfigError(f"{name} {text!r}: lo and hi must be {NUMERIC[field].__name__} numbers")
    log = len(parts) == 3
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ConfigError(f"{name} {text!r}: an empty range (needs lo < hi)")
    if log and lo <= 0:
        raise ConfigError(f"{name} {text!r}: a log range needs lo > 0")
    TrainConfig(**{field: lo})
    TrainConfig(**{field: hi})
    return Axis(field, (), lo, hi, log)


def is_grid(axes: list[Axis], samples: int | None) -> bool:
    """A grid when every varied flag is a list and no --samples is given."""
    return samples is None and all(not a.is_range for a in axes)


def grid_size(axes: list[Axis]) -> int:
    return math.prod(len(a.values) for a in axes)
