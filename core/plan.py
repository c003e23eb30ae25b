"""What a run is before it runs: its network, sampler, first and last step, and where it
starts (fresh, --init, or --resume from the newest checkpoint that reads whole, after
checking that the run's config and data are the checkpoint's); and what a checkpoint holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnps.core import checkpoint, memory
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import CheckpointError, ConfigError
from nnps.core.network import Network, initial_params
from nnps.core.rundir import RunDir
from nnps.core.sampler import Sampler, sampler_for
from nnps.core.server import Snapshot
from nnps.core.tables import TableInfo


@dataclass
class Plan:
    """What a run is: the network, the sampler, where it starts and where it stops."""

    config: TrainConfig
    network: Network
    sampler: Sampler
    start: Snapshot
    total_steps: int
    table: TableInfo | None = None  # a table's features, classes or targets, and scaling

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch



def build_network(config: TrainConfig, dataset: Dataset) -> Network:
    """The run's network; ConfigError, before anything of its size is allocated, if training
    it cannot fit in this machine's memory."""
    sizes = (dataset.num_inputs, *config.hidden, dataset.num_outputs)
    network = Network(sizes, config.activation, config.output, config.cost, config.dtype)
    memory.check_network(network, config.batch_size, config.optimizer)
    return network


def check_batch(config: TrainConfig, dataset: Dataset) -> None:
    """Sizes that mean nothing for this data, refused before anything starts: a mini-batch
    larger than the training set (every step would be the whole set: full-batch gradient
    descent, not what --batch-size asked for), a staleness bound no update could reach."""
    n = dataset.n_train
    if config.batch_size > n:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the training set ({n:,} examples "
                          f"in {config.data}); use at most {n} (full-batch gradient descent)")  # fmt: skip
    total = config.epochs * -(-n // config.batch_size)
    total = total if config.steps is None else min(total, config.steps)
    if config.consistency == "bounded" and config.staleness is not None and config.staleness >= max(total, 1):
        raise ConfigError(f"--staleness {config.staleness} bounds nothing in a run of {total} updates: that is "
                          f"--consistency async")  # fmt: skip


def plan_run(config: TrainConfig, dataset: Dataset, run_dir: RunDir | None, resume: bool,
             say: Callable[[str], None] = lambda _: None) -> Plan:  # fmt: skip
    check_batch(config, dataset)
    network = build_network(config, dataset)
    sampler = sampler_for(dataset.n_train, config.batch_size, config.seed, config.partitioned)
    total = config.epochs * sampler.steps_per_epoch
    if config.steps is not None:
        total = min(total, config.steps)
    if resume and run_dir is not None and run_dir.checkpoints():
        start = _resume_point(config, network, dataset, run_dir, say)
    elif config.init:
        ck = checkpoint.load(config.init)
        if ck.network.sizes != network.sizes:
            raise ConfigError(f"--init {config.init}: checkpoint has sizes {list(ck.network.sizes)}, "
                              f"this run needs {list(network.sizes)}")  # fmt: skip
        start = Snapshot(ck.params.astype(network.np_dtype))
    else:
        start = Snapshot(initial_params(network, config.weight_init, config.seed))
    return Plan(config, network, sampler, start, total, dataset.table)


def newest_readable(run_dir: RunDir, say: Callable[[str], None]) -> checkpoint.Checkpoint | None:
    """The newest checkpoint that reads whole, saying which newer ones could not (a disk
    that lost a file's pages, an edit); CheckpointError naming the newest if none can."""
    skipped: list[CheckpointError] = []
    for step, name in reversed(run_dir.checkpoints()):
        try:
            ck = checkpoint.from_bytes(run_dir.read(name), run_dir.uri_of(name))
        except CheckpointError as e:
            skipped.append(e)
            continue
        for e in skipped:
            say(f"note: {e}; going on from the checkpoint before it")
        return ck
    if skipped:
        raise CheckpointError(f"{skipped[0]}; no checkpoint of {run_dir} reads whole")
    return None


def _resume_point(config: TrainConfig, network: Network, dataset: Dataset, run_dir: RunDir,
                  say: Callable[[str], None]) -> Snapshot:  # fmt: skip
    ck = newest_readable(run_dir, say)
    assert ck is not None  # plan_run asks only where checkpoints exist
    saved = ck.meta.get("config", {})
    if config.schedule == "cosine" and saved.get("epochs", config.epochs) != config.epochs:
        raise ConfigError(f"--resume --epochs {config.epochs}: {run_dir} has a cosine schedule over "
                          f"{saved.get('epochs')} epochs (eta falls to 0 at its end); over {config.epochs} epochs "
                          f"every step from the first would have had another rate, so the run cannot be extended. "
                          f"Train a new run with --epochs {config.epochs}, or go on from these weights with a new "
                          f"schedule: --init {run_dir.uri_of('final.npz')}")  # fmt: skip
    keys = TrainConfig.RESULT_KEYS
    mine, defaults = config.to_dict(), TrainConfig().to_dict()  # keys newer than the run: their defaults
    changed = [k for k in keys if saved.get(k, defaults[k]) != mine[k]]
    if changed:
        raise ConfigError(f"--resume: {', '.join(f'{k}={mine[k]!r} (run has {saved.get(k)!r})' for k in changed)}"
                          f" would change the run in {run_dir}")  # fmt: skip
    if ck.meta.get("dataset") != dataset.fingerprint:
        raise ConfigError(f"--resume: the data differs from the data {run_dir} was trained on")
    progress = ck.meta.get("progress", [0.0, 0, 0])
    return Snapshot(ck.params, ck.opt_state, ck.step, (float(progress[0]), int(progress[1]), int(progress[2])),
                    draws=tuple(int(d) for d in ck.meta.get("draws", ())))  # fmt: skip


def nothing_left(config: TrainConfig, run_dir: RunDir) -> str | None:
    """Why a --resume of run_dir has no step to take (its newest checkpoint is at the end
    of config's epochs or steps), or None. Reads one checkpoint's metadata, not the data."""
    ck = newest_readable(run_dir, lambda _: None)  # the run says which it skips, once, as it resumes
    if ck is None:
        return None
    step, epoch = ck.step, int(ck.meta.get("epoch", 0))  # epoch: step // steps_per_epoch
    if config.steps is not None and step >= config.steps:
        return f"{run_dir} is at step {step}, --steps {config.steps}"
    if epoch >= config.epochs:
        return f"{run_dir} has trained its {config.epochs} epochs (step {step}); --epochs N (N > {config.epochs}) trains on"
    return None


def checkpoint_bytes(plan: Plan, dataset: Dataset, snap: Snapshot) -> bytes:
    meta = {
        "step": snap.step,
        "epoch": snap.step // plan.steps_per_epoch,
        "seed": plan.config.seed,
        "dataset": dataset.fingerprint,
        "optimizer": plan.config.optimizer,
        "config": plan.config.to_dict(),
        "progress": list(snap.epoch_sums),
    }
    if snap.draws:  # --partitioned bounded/async: where each worker's own sampler is
        meta["draws"] = list(snap.draws)
    if dataset.table is not None:  # what a reader needs to turn a table's rows into inputs
        meta["table"] = dataset.table.to_meta()
    return checkpoint.to_bytes(checkpoint.Checkpoint(plan.network, snap.params, snap.opt_state, meta))

