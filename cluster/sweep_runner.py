"""Running a sweep on Ray Tune: the data shared once, the Tuner (or its restore), progress
lines, and the results read back from the trials' own run directories (the spec:
cluster/sweep_spec.py).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from nnps.core import environment, space, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.tables import TableInfo
from nnps.core.errors import ClusterError
from nnps.cluster.sweep_spec import SweepSpec, domains
from nnps.core.rundir import RunDir, write_atomically


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
    write_atomically(sweep_dir / "result.json", 
                     (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result
