"""A training run's configuration: one dataclass, validated when built.

The CLI builds a `TrainConfig`, the driver and the actors receive the same object, and
the run directory keeps it as `config.json`; `from_dict` reads it back for `--resume`.
Errors are `ConfigError`s that echo the bad value, so the CLI can print them as they are.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from nnps.core.activations import HIDDEN, OUTPUT
from nnps.core.costs import COSTS
from nnps.core.errors import ConfigError
from nnps.core.network import DTYPES
from nnps.core.optimizers import OPTIMIZERS, SCHEDULES
from nnps.core.table_npz import has_test_rows
from nnps.core.tables import is_table

WEIGHT_INITS = ("normal", "scaled")
TRANSPORTS = ("auto", "unix", "tcp", "ray")  # what carries a step: cluster/transport.py
CONSISTENCIES = ("sync", "bounded", "async")  # how updates wait for each other: core/staleness.py
TASKS = ("classify", "regress")  # a table's label: classes, or numeric targets (a linear output layer)


def parse_hidden(text: str) -> tuple[int, ...]:
    """'30' -> (30,), '16,16' -> (16, 16), '' or 'none' -> () (no hidden layer)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated layer widths like 30 or 16,16, got {text!r}")
    if any(n < 1 for n in sizes):
        raise ConfigError(f"--hidden layer widths must be positive, got {text!r}")
    return sizes


def parse_features(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); '' -> () (every column but the label)."""
    names = tuple(part.strip() for part in text.split(",")) if text.strip() else ()
    if any(not n for n in names):
        raise ConfigError(f"--features must be comma-separated column names like a,b, got {text!r}")
    return names


def _choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# Flags that mean something only with another setting: (whether they apply, what they need).
NEEDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr_step_epochs": (lambda c: c.schedule == "step", "--schedule step"),
    "lr_gamma": (lambda c: c.schedule == "step", "--schedule step"),
    "momentum": (lambda c: c.optimizer in ("momentum", "nesterov"), "--optimizer momentum or nesterov"),
    "transport": (lambda c: c.workers != 0, "Ray workers (--workers N, or auto)"),
    "warm_start": (lambda c: c.workers != 0 and c.address is None and c.consistency == "sync" and not c.partitioned,
                   "sync steps on Ray workers of an embedded Ray (no --address), the table not --partitioned"),
    **{name: (lambda c: is_table(c.data), "a table: --data a CSV or Parquet source")
       for name in ("label", "features", "test_data", "test_fraction", "standardize", "drop_missing", "task",
                     "partitioned")},
}


@dataclass(frozen=True)
class TrainConfig:
    data: str = "mnist"
    hidden: tuple[int, ...] = (30,)
    activation: str = "sigmoid"
    output: str | None = None  # None: sigmoid, or linear for --task regress
    cost: str = "quadratic"
    weight_init: str = "normal"  # the seed's N(0, 1); "scaled": Xavier (He for relu)
    optimizer: str = "sgd"
    lr: float = 3.0
    momentum: float = 0.9
    l2: float = 0.0
    schedule: str = "constant"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    batch_size: int = 10
    epochs: int = 30
    steps: int | None = None  # stop after this many optimizer steps in all
    checkpoint_every: int | None = None  # steps; None: at the end of every epoch
    seed: int = 0
    dtype: str = "float32"
    init: str | None = None  # start from this checkpoint's weights
    workers: int | str = "auto"  # 0: in-process; N: N Ray worker actors; "auto": the cost model picks
    address: str | None = None  # Ray cluster to join; None: an embedded local one
    transport: str = "auto"  # the step's channel, then plain Ray calls (cluster/transport.py)
    consistency: str = "sync"  # sync: one step of k shards; bounded/async: each worker's batch is an update
    staleness: int | None = None  # bounded: no update computed on parameters more than this many versions old
    warm_start: bool = True  # embedded Ray: train in-process while it starts (cluster/warm_start.py)
    snapshot_weights: bool = False  # keep W^1 after every epoch in the run directory (nnps inspect animates it)
    validation_fraction: float = 0.0  # >0: hold out this part of the training set; per-epoch metrics are on it
    early_stopping: int | None = None  # stop after this many epochs without a better validation cost
    # A table (--data a CSV or Parquet source: core/tables.py): its columns and test split
    task: str = "classify"  # or regress: --label names numeric target columns (a,b for several)
    label: str = "label"  # the column of classes, or the target columns
    features: tuple[str, ...] = ()  # the feature columns; (): every column but the label
    test_data: str | None = None  # the test rows, with the same columns
    test_fraction: float | None = None  # else this part of the rows, seeded; 0.2 where neither is given
    standardize: bool = True  # each feature to mean 0, deviation 1 over the training split
    drop_missing: bool = False  # leave out rows with a missing value instead of refusing the table
    partitioned: bool = False  # each worker reads and holds only its own parts of the table (core/parts.py)
    extra: dict[str, Any] = field(default_factory=dict)  # room for later versions' keys

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(n) for n in self.hidden))
        if not self.data:
            raise ConfigError("--data must name a dataset or a path, got ''")
        if any(n < 1 for n in self.hidden):
            raise ConfigError(f"--hidden layer widths must be positive, got {self.hidden!r}")
        _choice("--activation", self.activation, sorted(HIDDEN))
        _choice("--task", self.task, TASKS)
        if self.output is None:
            object.__setattr__(self, "output", "linear" if self.task == "regress" else "sigmoid")
        _choice("--output", self.output, sorted(OUTPUT))
        _choice("--cost", self.cost, COSTS)
        _choice("--weight-init", self.weight_init, WEIGHT_INITS)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--schedule", self.schedule, SCHEDULES)
        _choice("--dtype", self.dtype, DTYPES)
        _choice("--transport", self.transport, TRANSPORTS)
        _choice("--consistency", self.consistency, CONSISTENCIES)
        if self.consistency == "bounded" and (self.staleness is None or self.staleness < 0):
            raise ConfigError(f"--consistency bounded needs --staleness TAU >= 0, got {self.staleness!r}")
        if self.consistency != "bounded" and self.staleness is not None:
            raise ConfigError(f"--staleness applies to --consistency bounded only, got it with {self.consistency!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if self.l2 < 0:
            raise ConfigError(f"--l2 must be >= 0, got {self.l2!r}")
        if self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1:
            raise ConfigError(
                f"--lr-step-epochs must be >= 1 and --lr-gamma in (0, 1], got {self.lr_step_epochs!r}, {self.lr_gamma!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size!r}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs!r}")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {self.steps!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1 step, got {self.checkpoint_every!r}")
        if isinstance(self.workers, str):
            if self.workers != "auto":
                try:
                    object.__setattr__(self, "workers", int(self.workers))
                except ValueError:
                    raise ConfigError(f"--workers must be a count or auto, got {self.workers!r}")
        if isinstance(self.workers, int) and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers!r}")
        if self.consistency != "sync" and self.workers == 0:
            raise ConfigError(f"--consistency {self.consistency} runs on Ray workers: use --workers N (N >= 1), "
                              f"or --consistency sync")  # fmt: skip
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.early_stopping is not None and (self.early_stopping < 1 or self.validation_fraction == 0):
            raise ConfigError(f"--early-stopping {self.early_stopping}: needs PATIENCE >= 1 epochs and a validation "
                              f"split to watch (--validation-fraction F)")  # fmt: skip
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2^63), got {self.seed!r}")
        self._check_table()

    def _check_table(self) -> None:
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))
        if not self.label or (self.task == "regress" and not all(self.label.split(","))):
            raise ConfigError(f"--label must name a column (--task regress: columns a,b), got {self.label!r}")
        if self.task == "regress":
            if len(set(self.label.split(","))) != len(self.label.split(",")):
                raise ConfigError(f"--label names a target column twice: {self.label!r}")
            if not is_table(self.data):
                raise ConfigError(f"--task regress predicts a table's numeric columns; --data {self.data} is images")
            if self.output != "linear" or self.cost != "quadratic":
                raise ConfigError(f"--task regress trains a linear output layer on the quadratic cost; got --output "
                                  f"{self.output} --cost {self.cost}")  # fmt: skip
        elif self.output == "linear":
            raise ConfigError("--output linear is a regression's output layer: use it with --task regress")
        if self.partitioned and self.validation_fraction:
            raise ConfigError(f"--validation-fraction {self.validation_fraction} holds rows out on the driver, which "
                              f"--partitioned never reads: give --test-data, or leave out --partitioned")  # fmt: skip
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"--features names a column twice: {','.join(self.features)!r}")
        if self.test_fraction is not None and not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.test_fraction is not None and self.test_data:
            raise ConfigError(f"--test-data {self.test_data} and --test-fraction {self.test_fraction}: give one")
        if is_table(self.data) and self.test_fraction is None and not self.test_data and not (
                self.data.lower().endswith(".npz") and has_test_rows(self.data)):
            object.__setattr__(self, "test_fraction", 0.2)  # (an .npz table's own x_test, y_test are its test rows)

    def refuse_ignored(self, given: set[str]) -> None:
        """A flag given (on the command line) that this config would ignore is refused in one
        line, not silently dropped: --lr-gamma without --schedule step, and the like."""
        for name in sorted(given & set(NEEDS)):
            applies, what = NEEDS[name]
            if not applies(self):
                value = getattr(self, name)
                shown = (f"--{'' if value else 'no-'}{name.replace('_', '-')}" if isinstance(value, bool)
                         else f"--{name.replace('_', '-')} {value}")  # fmt: skip
                raise ConfigError(f"{shown} does nothing here: it applies with {what}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"], d["features"] = list(self.hidden), list(self.features)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: bytes | str, where: str) -> TrainConfig:
        """A run's saved config.json, or a ConfigError naming the file and what is wrong with it."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: not valid JSON ({e})")
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: not a JSON object of config keys")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}")
        except (TypeError, ValueError) as e:  # a value of the wrong type, e.g. "hidden": "many"
            raise ConfigError(f"{where}: a value of the wrong type ({e})")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        return cls(**d)

    # What must agree between a run and the run it resumes; the rest (workers, address, transport,
    # warm_start, snapshot_weights, epochs, steps, checkpoint_every) may change across a resume without changing results.
    RESULT_KEYS = (
        "data", "hidden", "activation", "output", "cost", "weight_init", "optimizer", "lr", "momentum",
        "l2", "schedule", "lr_step_epochs", "lr_gamma", "batch_size", "seed", "dtype", "init", "consistency",
        "staleness", "validation_fraction", "early_stopping", "label", "features", "test_data", "test_fraction",
        "standardize", "drop_missing", "task", "partitioned",
    )  # fmt: skip
