"""`nnps train`: build a TrainConfig from flags and run it."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from nnps.cli.errors import handle_errors
from nnps.cli.formatting import consistency_note, download_progress, print_json, steps_by_channel
from nnps.cli.options import JsonOut, RayAddress
from nnps.cli.progress import RichReporter
from nnps.core.config import TrainConfig, parse_features, parse_hidden
from nnps.core.errors import ConfigError
from nnps.core.progress import LineReporter
from nnps.core.rundir import RunDir, default_run_dir

DEFAULTS = TrainConfig()


@handle_errors
def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="Catalog name (mnist, fashion-mnist, kmnist), an image path (IDX dir, Parquet dir, .npz), or a table: a CSV or Parquet file, directory or glob, local or s3://...")] = DEFAULTS.data,
    hidden: Annotated[str, typer.Option(help="Hidden layer widths, comma-separated: 30 or 16,16")] = "30",
    activation: Annotated[str, typer.Option(help="Hidden activation: sigmoid, relu, tanh")] = DEFAULTS.activation,
    output: Annotated[Optional[str], typer.Option(help="Output activation: sigmoid, softmax; linear for --task regress (its default)")] = None,
    cost: Annotated[str, typer.Option(help="quadratic or cross-entropy")] = DEFAULTS.cost,
    weight_init: Annotated[str, typer.Option(help="normal: N(0,1) as the seed; scaled: Xavier/He")] = DEFAULTS.weight_init,
    optimizer: Annotated[str, typer.Option(help="sgd, momentum, nesterov, adam")] = DEFAULTS.optimizer,
    lr: Annotated[float, typer.Option(help="Learning rate eta")] = DEFAULTS.lr,
    momentum: Annotated[float, typer.Option(help="Momentum mu (momentum, nesterov)")] = DEFAULTS.momentum,
    l2: Annotated[float, typer.Option(help="L2 weight decay lambda (weights only)")] = DEFAULTS.l2,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: constant, step, cosine")] = DEFAULTS.schedule,
    lr_step_epochs: Annotated[int, typer.Option(help="step schedule: epochs between decays")] = DEFAULTS.lr_step_epochs,
    lr_gamma: Annotated[float, typer.Option(help="step schedule: decay factor")] = DEFAULTS.lr_gamma,
    batch_size: Annotated[int, typer.Option(help="Global mini-batch size")] = DEFAULTS.batch_size,
    epochs: Annotated[int, typer.Option(help="Epochs to train")] = DEFAULTS.epochs,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (0: write the initial weights)")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (default: every epoch)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and the batch order")] = DEFAULTS.seed,
    dtype: Annotated[str, typer.Option(help="float32 or float64")] = DEFAULTS.dtype,
    init: Annotated[Optional[str], typer.Option(help="Start from this checkpoint's weights")] = None,
    workers: Annotated[str, typer.Option(help="0: in-process; N: N Ray worker actors; auto: the fastest by a measured cost model")] = "auto",
    address: RayAddress = None,
    transport: Annotated[str, typer.Option(help="What carries each step to the workers: auto (unix on one node, tcp across nodes), unix, tcp or ray; each falls back to ray calls")] = DEFAULTS.transport,
    consistency: Annotated[str, typer.Option(help="sync: each step one batch over all workers; bounded or async: each worker's batch its own update, applied as it arrives")] = DEFAULTS.consistency,
    staleness: Annotated[Optional[int], typer.Option(help="bounded: no update computed on parameters more than TAU versions old", metavar="TAU")] = None,
    warm_start: Annotated[bool, typer.Option(help="With an embedded Ray: train in-process while Ray and the workers start, then hand over")] = DEFAULTS.warm_start,
    snapshot_weights: Annotated[bool, typer.Option(help="Keep W^1 after every epoch in the run directory (nnps inspect RUN_DIR animates it)")] = DEFAULTS.snapshot_weights,
    validation_fraction: Annotated[float, typer.Option(help="Hold out this part of the training set (seeded by --seed); per-epoch metrics are on it")] = DEFAULTS.validation_fraction,
    early_stopping: Annotated[Optional[int], typer.Option(help="Stop after PATIENCE epochs without a better validation cost; final.npz is the best epoch's", metavar="PATIENCE")] = None,
    task: Annotated[str, typer.Option(help="Table: classify (the label is classes) or regress (the label is numeric targets)")] = DEFAULTS.task,
    label: Annotated[str, typer.Option(help="Table: the column of classes (integers or strings); regress: the target columns, comma-separated")] = DEFAULTS.label,
    features: Annotated[str, typer.Option(help="Table: the feature columns, comma-separated (default: every column but the label)")] = "",
    test_data: Annotated[Optional[str], typer.Option(help="Table: the test rows, a table with the same columns")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(help="Table: test on this part of the rows, chosen by --seed (default 0.2 without --test-data)")] = None,
    standardize: Annotated[bool, typer.Option(help="Table: scale each feature to mean 0, deviation 1 over the training rows")] = DEFAULTS.standardize,
    drop_missing: Annotated[bool, typer.Option(help="Table: leave out rows with a missing value instead of refusing the table")] = DEFAULTS.drop_missing,
    partitioned: Annotated[bool, typer.Option(help="Table: each worker reads and holds only its own parts (Parquet row groups, CSV row ranges), for data larger than one machine")] = DEFAULTS.partitioned,
    run_dir: Annotated[Optional[str], typer.Option(help="Run directory: local path or a pyarrow URI (s3://...). Default runs/<time>")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir from its last checkpoint")] = False,
    json_out: JsonOut = False,
    log_progress: Annotated[bool, typer.Option(help="Print NNPS_PROGRESS lines instead of a progress bar (for jobs)")] = False,
) -> None:  # fmt: skip
    """Train a network by mini-batch SGD; writes config, metrics and checkpoints to a run directory."""
    options = {k: v for k, v in locals().items() if k != "ctx"}
    given = {k for k in options if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    _train(options, given)


def _train(options: dict, given: set[str]) -> None:
    """Run what the options say (`given`: the flags on the command line, which a --resume changes)."""
    from nnps.cluster import driver  # imported here: `nnps --help` stays fast

    run_dir, resume = options["run_dir"], options["resume"]
    if resume and not run_dir:
        raise ConfigError("--resume needs --run-dir, the run to continue")
    rd = RunDir(run_dir or default_run_dir())
    if resume and rd.exists("config.json"):
        # Resume the saved run; only flags given on this command line change it (e.g. --epochs).
        saved = TrainConfig.from_json(rd.read("config.json"), rd.uri_of("config.json"))
        config = saved.replace(**{k: v for k, v in config_from_options(options).to_dict().items()
                                  if k in given or (k == "address" and v)})  # fmt: skip
    else:
        config = config_from_options(options)
    config.refuse_ignored(given)
    console = Console(stderr=True)
    if options["log_progress"]:
        summary = driver.run(config, rd, resume=resume, reporter=LineReporter(), say=print)
    else:
        with RichReporter(console, config.epochs) as reporter:
            summary = driver.run(config, rd, resume=resume, reporter=reporter, progress=download_progress(console),
                                 say=lambda line: print(line, file=sys.stderr))
    summary.pop("params")
    if options["json_out"]:
        print_json(summary, sort_keys=True)
    else:
        say_done(console, config, summary)


def say_done(console: Console, config: TrainConfig, summary: dict) -> None:
    """The run's last line: steps by channel, consistency, accuracy, where the weights are."""
    m = summary["metrics"]
    split = "validation" if config.validation_fraction else "test"
    score = (f"R^2 {m['test_r2']:.4f}, MAE {m['test_mae']:.4g}" if "test_r2" in m
             else f"accuracy {m['test_accuracy']:.2%}") if m else ""  # fmt: skip
    tail = f"; {split} {score}" if m else ""
    channels, mode = steps_by_channel(summary.get("channels")), consistency_note(summary.get("staleness"))
    if summary.get("stopped_early"):
        console.print(f"stopped early at epoch {summary['epochs']}: no better validation cost for "
                      f"{config.early_stopping} epochs; final.npz holds epoch {summary['best_epoch']}'s weights")
    console.print(f"done: {summary['step']} steps{f' ({channels})' if channels else ''}{f'; {mode}' if mode else ''}"
                  f"{tail}; weights in {summary['final']}", soft_wrap=True)  # fmt: skip


NOT_CONFIG = ("run_dir", "resume", "json_out", "log_progress")


def config_from_options(options: dict) -> TrainConfig:
    """The TrainConfig that `nnps train`'s options describe (also used by `nnps submit`)."""
    values = {k: v for k, v in options.items() if k not in NOT_CONFIG and k in TrainConfig.__dataclass_fields__}
    values["hidden"] = parse_hidden(options["hidden"])
    values["features"] = parse_features(options.get("features") or "")
    return TrainConfig(**values)
