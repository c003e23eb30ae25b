"""Running a sweep on Ray Tune: the spec kept in the sweep directory, the Tuner (or its
restore), progress lines, and the results read back from the trials' own run directories.

    SWEEP_DIR/sweep.json         the spec: fixed flags, varied flags, samples, scheduler, epochs
    SWEEP_DIR/trials/trial-N/    one nnps run per trial (config.json, metrics.jsonl, checkpoints)
    SWEEP_DIR/tune/              Tune's experiment state (what `--resume` restores)
    SWEEP_DIR/tune-state.pkl     Tune's state as last saved whole (cluster/sweep_state.py)
    SWEEP_DIR/asha.pkl           the ASHA scheduler's rungs and decisions (cluster/sweep.py)
    SWEEP_DIR/result.json        every trial's outcome, the best, and its test accuracy
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nnps.core import environment, space, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.tables import TableInfo
from nnps.core.errors import ClusterError, ConfigError
from nnps.core.rundir import RunDir, write_atomically

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
        write_atomically(sweep_dir / "sweep.json", (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode())

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


@contextmanager
def shared_data(data: Dataset) -> Iterator["DataHolder"]:
    """The sweep's data in Ray's object store once, for every trial and their workers."""
    import ray

    from nnps.worker import training_data

    name, holder = training_data.share((data.x_train, data.y_train, data.x_test, data.y_test))
    try:
        yield DataHolder(name, data.name, data.image_shape, data.table)
    finally:
        ray.kill(holder, no_restart=True)


@dataclass(frozen=True)
class DataHolder:
    """Where a trial finds the sweep's data: the holder actor's name (worker/training_data.py)."""

    holder: str
    name: str
    image_shape: tuple[int, int]
    table: TableInfo | None

    def dataset(self) -> Dataset:
        """The arrays mapped read-only from this node's store: no copy of the trial's own."""
        from nnps.worker import training_data

        return Dataset(self.name, *training_data.fetch(self.holder), image_shape=self.image_shape, table=self.table)


def tuner(spec: SweepSpec, data: DataHolder, sweep_dir: Path, concurrency: int, workers: int, resume: bool,
          callbacks: list[Any]) -> Any:
    """A new Tuner for the spec, or the one restored from SWEEP_DIR/tune."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from nnps.cluster import sweep, sweep_state

    environment.set_for_tune()
    base = TrainConfig.from_dict(spec.base)
    resources = tune.PlacementGroupFactory([{"CPU": 1}] * (1 + workers)) if workers else {"cpu": 1}
    trainable = tune.with_resources(
        tune.with_parameters(sweep.run_trial, data=data, base={**spec.base, "workers": workers},
                             trials_dir=str((sweep_dir / "trials").absolute()), epochs=spec.epochs), resources)  # fmt: skip
    if resume and sweep_state.put_back(sweep_dir):
        return tune.Tuner.restore(str(sweep_dir / "tune"), trainable, resume_unfinished=True, resume_errored=True)
    if resume:  # killed before Tune first saved its state: Tune begins again, each trial from its run directory
        shutil.rmtree(sweep_dir / "tune", ignore_errors=True)
        (sweep_dir / "asha.pkl").unlink(missing_ok=True)
    grid = space.is_grid(spec.parsed(), spec.samples)
    config = tune.TuneConfig(
        metric=sweep.METRIC, mode="max", num_samples=1 if grid else int(spec.samples or 1),
        reuse_actors=True,
        scheduler=sweep.scheduler(spec.scheduler, str(sweep_dir / "asha.pkl"), spec.epochs, spec.grace_period,
                                  spec.reduction_factor),
        search_alg=BasicVariantGenerator(random_state=base.seed, max_concurrent=concurrency))  # fmt: skip
    run = tune.RunConfig(name="tune", storage_path=str(sweep_dir.resolve()), verbose=0,
                         callbacks=[*callbacks, sweep_state.Keeper(str(sweep_dir.resolve()))],
                         failure_config=tune.FailureConfig(max_failures=3),
                         checkpoint_config=tune.CheckpointConfig(num_to_keep=2))  # fmt: skip
    return tune.Tuner(trainable, param_space=domains(spec), tune_config=config, run_config=run)


def progress_callback(say: Callable[[str], None], epochs: int, records_of: int | None = None) -> Any:
    """A Tune callback saying, a line each, every trial's epochs and how it ended; with
    `records_of` (the sweep's trial count), also an NNPS_PROGRESS record at each event for
    `nnps status` to read from a job's log."""
    from ray import tune

    from nnps.core.progress import MARKER

    class Lines(tune.Callback):
        results = 0
        copies: set[str] = set()  # trials that reported their data was a copy of their own
        ended: set[str] = set()
        best: tuple[float, str, str] = (-1.0, "", "")

        def record(self) -> None:
            if records_of is None:
                return
            acc, name, config = self.best
            best = {"trial": name, "val_accuracy": acc, "config": config} if name else None
            print(MARKER + json.dumps({"kind": "sweep", "trials": records_of, "ended": len(self.ended),
                                       "best": best}), flush=True)  # fmt: skip

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.results += 1
            if not result.get("data_shared", True):
                self.copies.add(trial_name(trial.trial_id))
            self.best = max(self.best, (result["val_accuracy"], trial_name(trial.trial_id), describe(trial.config)))
            say(f"{trial_name(trial.trial_id)}  epoch {result['epoch']}/{epochs}  "
                f"validation {result['val_accuracy']:.2%}  {describe(trial.config)}")  # fmt: skip
            self.record()

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            say(f"{trial_name(trial.trial_id)}  its process failed; Tune runs it again from its last epoch")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epoch = (trial.last_result or {}).get("epoch", 0)
            say(f"{trial_name(trial.trial_id)}  {'done' if epoch >= epochs else f'stopped at epoch {epoch}'}")
            self.ended.add(trial_name(trial.trial_id))
            self.record()

    return Lines()


def trial_name(trial_id: str) -> str:
    """trial-00003 for Tune's `abc12_00003`: the trial's index, stable across a resume."""
    return "trial-" + trial_id.rsplit("_", 1)[-1]


def describe(params: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else space.show(tuple(v) if isinstance(v, list) else v)

    return " ".join(f"{k}={short(v)}" for k, v in sorted(params.items()))


def outcomes(sweep_dir: Path, spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial as its run directory tells it: varied values, epochs, validation accuracy."""
    rows = []
    for d in sorted((sweep_dir / "trials").glob("trial-*")):
        run = RunDir(str(d))
        if not run.exists("config.json"):
            continue
        config = json.loads(run.read("config.json"))
        metrics = [r for r in run.read_metrics() if "epoch" in r]
        last = metrics[-1] if metrics else {}
        rows.append({"trial": d.name, "params": {k: config[k] for k in spec.axes}, "epochs": len(metrics),
                     "val_accuracy": last.get("test_accuracy"), "val_cost": last.get("test_cost"),
                     "curve": [r["test_accuracy"] for r in metrics],
                     "state": "done" if len(metrics) >= spec.epochs else "stopped"})  # fmt: skip
    return rows


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial with the highest validation accuracy at its last epoch (the first such, on a tie)."""
    scored = [r for r in rows if r["val_accuracy"] is not None]
    return max(scored, key=lambda r: r["val_accuracy"]) if scored else None


def finish(sweep_dir: Path, spec: SweepSpec, seen: Any = None) -> dict[str, Any]:
    """result.json: the trials, the best, and the best's accuracy on the test set, read once here."""
    from nnps.core import checkpoint, metrics
    from nnps.core.steps import ShardWorker

    rows = outcomes(sweep_dir, spec)
    if not rows:
        raise ClusterError(f"no trial wrote its run directory under {sweep_dir / 'trials'}: Tune's logs are in "
                           f"{sweep_dir / 'tune'}")  # fmt: skip
    best = best_of(rows)
    result: dict[str, Any] = {"trials": rows, "best": best, "epochs_trained": sum(r["epochs"] for r in rows),
                              "epochs_fifo": spec.epochs * len(rows)}  # fmt: skip
    if seen is not None and seen.results:  # how the trials this driver saw held the data
        result["data"] = {"results_seen": seen.results, "trials_with_a_copy": sorted(seen.copies)}
    if best is not None:
        ck = checkpoint.load(str(sweep_dir / "trials" / best["trial"] / "final.npz"))
        base = TrainConfig.from_dict({**spec.base, "workers": 0, "validation_fraction": 0.0, "early_stopping": None})
        ds = validation.data_for(base, info=ck.table)
        worker = ShardWorker(ck.network, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
        best["test_accuracy"] = metrics.unpack(worker.evaluate(ck.params, "test"), ck.network).accuracy
    write_atomically(sweep_dir / "result.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result
