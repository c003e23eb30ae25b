"""What a sweep is, before it runs: its spec (kept as SWEEP_DIR/sweep.json), the axes as
Tune's search space, its data, and how many trials run at a time with how many workers each
(the cost model on the largest trial, or the flags, refused in one line where they cannot fit)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nnps.core import space, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ConfigError
from nnps.core.rundir import write_atomically


@dataclass
class SweepSpec:
    base: dict[str, Any]  # the TrainConfig every trial starts from (varied fields at their defaults)
    axes: dict[str, str]  # field -> the flag's text, e.g. {"lr": "0.01:3.0:log"}
    epochs: int
    samples: int | None = None
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 4.0
    concurrency: int | None = None  # None: one trial per CPU
    extra: dict[str, Any] = field(default_factory=dict)

    def parsed(self) -> list[space.Axis]:
        return [space.parse_axis(f, t) for f, t in self.axes.items()]

    def check(self) -> None:
        axes = self.parsed()
        if not axes:
            raise ConfigError("nothing varies: give some flag a list (a,b) or a range (lo:hi)")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError(f"--scheduler must be asha or fifo, got {self.scheduler!r}")
        if self.samples is not None and self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if self.grace_period < 1 or self.grace_period > self.epochs or self.reduction_factor <= 1:
            raise ConfigError(f"--grace-period must be in 1..--epochs and --reduction-factor > 1, got "
                              f"{self.grace_period}, {self.reduction_factor}")  # fmt: skip
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1 or auto, got {self.concurrency}")
        if not 0 < TrainConfig.from_dict(self.base).validation_fraction < 1:
            raise ConfigError("a sweep selects on a validation split: --validation-fraction must be in (0, 1)")

    def trials(self) -> int:
        axes = self.parsed()
        return space.grid_size(axes) if space.is_grid(axes, self.samples) else int(self.samples or 1)

    def save(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        write_atomically(sweep_dir / "sweep.json", text.encode())

    @classmethod
    def load(cls, sweep_dir: Path) -> "SweepSpec":
        try:
            return cls(**json.loads((sweep_dir / "sweep.json").read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{sweep_dir}: no sweep.json; not a sweep directory")
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"{sweep_dir}/sweep.json is not a sweep spec ({e})")


def domains(spec: SweepSpec) -> dict[str, Any]:
    """The axes as Tune's search space: grid_search for a grid, else sampling domains; in
    the order of their names, the order Tune draws them in, so the draw does not depend on the
    order of the flags (or on sweep.json's, read back for a resume)."""
    from ray import tune

    axes = spec.parsed()
    grid = space.is_grid(axes, spec.samples)
    out: dict[str, Any] = {}
    for a in sorted(axes, key=lambda a: a.field):
        values = [list(v) if isinstance(v, tuple) else v for v in a.values]
        if grid:
            out[a.field] = tune.grid_search(values)
        elif not a.is_range:
            out[a.field] = tune.choice(values)
        elif space.NUMERIC[a.field] is int:
            out[a.field] = (tune.lograndint if a.log else tune.randint)(int(a.lo), int(a.hi) + 1)
        else:
            out[a.field] = (tune.loguniform if a.log else tune.uniform)(a.lo, a.hi)
    return out


def sweep_data(spec: SweepSpec) -> Dataset:
    """The data every trial trains on: the dataset less its validation split."""
    base = TrainConfig.from_dict({**spec.base, "workers": 0})
    return validation.data_for(base)


def largest_trial(spec: SweepSpec) -> TrainConfig:
    """The trial whose step takes longest: the widest network and the largest batch of the space."""
    config = TrainConfig.from_dict({**spec.base, "workers": 0})
    for a in spec.parsed():
        if a.field == "hidden":
            config = config.replace(hidden=max(a.values, key=lambda h: sum(x * y for x, y in zip((784, *h), (*h, 10)))))
        elif a.field == "batch_size":
            config = config.replace(batch_size=int(max(a.values) if a.values else a.hi))
    return config


def shape(spec: SweepSpec, data: Dataset, cpus: int) -> tuple[int, int, str]:
    """(trials at a time, workers per trial, why): --concurrency and --workers as given,
    the rest from the cost model (core/costmodel.sweep_shape) on the largest trial."""
    from nnps.cluster.driver import predict
    from nnps.core import costmodel

    k_fixed, c_fixed = check_fits(spec, cpus, "the Ray at hand")
    if c_fixed and k_fixed is not None:
        return c_fixed, k_fixed, f"--concurrency {c_fixed}, --workers {k_fixed}"
    big = largest_trial(spec)
    counts = [k_fixed] if k_fixed else ([] if k_fixed == 0 else range(1, cpus))
    choice = predict(big, data, [k for k in counts if (c_fixed or 1) * (1 + k) <= cpus])
    p = choice.predicted_s if k_fixed is None else {k_fixed: choice.predicted_s[k_fixed]}
    c, k = costmodel.sweep_shape(cpus, spec.trials(), p, c_fixed, k_fixed)  # check_fits: some shape fits
    pick = f", {k} workers {p[k] * 1e3:.2f}" if k else ""
    return c, k, (f"the cost model on the largest trial, {'-'.join(map(str, (784, *big.hidden, 10)))} at batch "
                  f"{big.batch_size}: in-process {choice.predicted_s[0] * 1e3:.2f}{pick} ms a step; {choice.source}")


def check_fits(spec: SweepSpec, cpus: int, where: str) -> tuple[int | None, int | None]:
    """(--workers, --concurrency) as given (None: auto), refused in one line where they
    cannot fit `cpus`: a trial takes a CPU, and one more for each of its workers."""
    given = spec.base.get("workers", 0)
    k, c = (None if given == "auto" else int(given)), spec.concurrency
    per_trial = 1 + k if k else 1
    if k is not None and per_trial > cpus:
        raise ConfigError(f"--workers {k}: a trial takes {per_trial} CPUs (its process and {k} workers); "
                          f"{where} has {cpus}")  # fmt: skip
    if c and c * per_trial > cpus:
        each = f"{per_trial} CPUs" if k else "one CPU (or more, with workers)"
        raise ConfigError(f"--concurrency {c}: {where} has {cpus} CPUs; a trial takes {each}")
    return k, c
