"""A trial of a sweep, and the ASHA scheduler whose decisions survive a killed driver.

A trial is an nnps run: its own run directory under the sweep's (`trials/NAME/`), trained
in-process one epoch per `core.training.train` call, each call resuming the last (a run
resumed equals a run uninterrupted, so a trial cut into epochs equals one `nnps train`).
After each epoch it reports the validation accuracy and cost to Tune with a checkpoint
that holds only the epoch's number: the run directory is the real checkpoint, so a trial
that Tune restarts (its process killed, or the driver resumed) goes on from its files.

The data reaches the trials through Ray's object store, put there once by the driver
(sweep_runner.shared_data): every trial on a node, and every worker of a trial that has
workers, reads the same pages, one copy per node.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.early_stopping import EarlyStopping
from nnps.core.rundir import RunDir, write_atomically
from nnps.core.training import ExecutorFactory, make_in_process, train

METRIC, COST = "val_accuracy", "val_cost"
TIME = "epoch"


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one trial: the sweep's fixed flags with this trial's values."""
    values = {k: (tuple(v) if k == "hidden" else v) for k, v in params.items()}
    return TrainConfig.from_dict({**base, **values})


def epochs_done(run: RunDir) -> list[dict[str, Any]]:
    """The run's per-epoch metrics rows, in order (none if it has not started)."""
    return [r for r in run.read_metrics() if "epoch" in r] if run.exists("config.json") else []


def run_trial(params: dict[str, Any], *, data: Any, base: dict[str, Any], trials_dir: str, epochs: int) -> None:
    """Tune's function trainable: train the trial epoch by epoch, reporting each to Tune.
    `data`: where the sweep's data is (sweep_runner.DataHolder); `base["workers"]`: k
    workers of the trial's own (in its placement group), or 0 to train in this process."""
    from threadpoolctl import threadpool_limits

    config = trial_config(base, params)
    dataset: Dataset = data.dataset()
    run = RunDir(f"{trials_dir}/trial-{tune.get_context().get_trial_id().rsplit('_', 1)[-1]}")
    start = 0
    if (ck := tune.get_checkpoint()) is not None:
        with ck.as_directory() as d, open(os.path.join(d, "epoch.json")) as f:
            start = json.load(f)["epoch"]
    with threadpool_limits(1):  # one core per trial: the trials are the parallelism
        for epoch in range(start + 1, epochs + 1):
            rows = epochs_done(run)
            if len(rows) < epoch:  # else the files already hold it (the driver died before Tune saw it)
                train(config.replace(epochs=epoch), dataset, run, resume=True, make_executor=executor(config, data))
                rows = epochs_done(run)
            row = rows[epoch - 1]
            stopped = config.early_stopping and EarlyStopping.from_rows(config.early_stopping, rows[:epoch]).stop
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "epoch.json"), "w") as f:
                    json.dump({"epoch": epoch}, f)
                tune.report({TIME: epoch, METRIC: row["test_accuracy"], COST: row["test_cost"], "step": row["step"],
                             "data_shared": shared(dataset)}, checkpoint=tune.Checkpoint.from_directory(d))  # fmt: skip
            if stopped:  # --early-stopping: the trial ends itself
                return


def executor(config: TrainConfig, data: Any) -> ExecutorFactory:
    """In-process, or k Ray workers in the trial's placement group (a CPU and a BLAS thread
    each) reading the sweep's one copy of the data."""
    if not config.workers:
        return make_in_process
    from nnps.cluster.ray_executor import RayExecutor

    return lambda plan, dataset: RayExecutor(plan, dataset, int(config.workers), shared=data.holder, threads=1)


def shared(data: Dataset) -> bool:
    """Whether the trial reads the data in place from Ray's object store (read-only pages
    that every trial on the node maps) rather than from a copy of its own."""
    return all(not a.flags.writeable and not a.flags.owndata for a in (data.x_train, data.y_train, data.x_test))


class RecordedASHA(AsyncHyperBandScheduler):
    """Tune's ASHA, with its rungs and every decision it made kept in a file after each
    result. Tune does not save a scheduler's state with the experiment; without this, a
    resumed sweep would judge its remaining trials against empty rungs. A result seen again
    after a resume (its epoch reported before the kill, not yet in Tune's saved state) gets
    the decision it got the first time."""

    def __init__(self, state_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_path = state_path
        self.decisions: dict[tuple[str, int], str] = {}
        self.loaded = False

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        if os.path.exists(self.state_path):
            with open(self.state_path, "rb") as f:
                self.__dict__.update(pickle.load(f))

    def keep(self) -> None:
        write_atomically(self.state_path, pickle.dumps({k: v for k, v in self.__dict__.items()
                                                        if k not in ("state_path", "loaded")}))  # fmt: skip

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.load()
        if trial.trial_id not in self._trial_info:
            super().on_trial_add(tune_controller, trial)
            self.keep()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.load()
        key = (trial.trial_id, int(result.get(TIME, -1)))
        if key not in self.decisions:
            self.decisions[key] = super().on_trial_result(tune_controller, trial, result)
            self.keep()
        return self.decisions[key]

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.load()
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
            self.keep()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.load()
        self._trial_info.pop(trial.trial_id, None)
        self.keep()


def scheduler(name: str, state_path: str, epochs: int, grace: int, reduction: float) -> TrialScheduler | None:
    """ASHA on validation accuracy after each epoch, or None for FIFO (every trial to the end)."""
    if name == "fifo":
        return None
    return RecordedASHA(state_path, time_attr=TIME, max_t=epochs, grace_period=grace, reduction_factor=reduction,
                        brackets=1)  # fmt: skip
