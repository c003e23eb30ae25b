"""`nnps sweep`: a hyperparameter search on Ray Tune, written with `nnps train`'s flags.

    nnps sweep --data mnist --hidden 30,100 --lr 0.1:3.0:log --batch-size 10,100 \\
        --samples 16 --epochs 10 --scheduler asha --run-dir sweeps/s1
    nnps sweep --resume --run-dir sweeps/s1
    nnps sweep --show sweeps/s1
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nnps.cli.errors import handle_errors
from nnps.cli.formatting import print_json
from nnps.cli.options import PASS_ON, RayAddress, command_of
from nnps.cluster import sweep_spec
from nnps.core import space
from nnps.core.errors import ConfigError

# Train flags a trial does not take: the sweep has its own (or they make no sense per trial).
NOT_IN_A_SWEEP = ("--run-dir", "--resume", "--json", "--log-progress", "--steps", "--address")


def split_flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Train flags as (varied: field -> text, fixed: argv for `nnps train`'s own parser)."""
    varied: dict[str, str] = {}
    fixed: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: train flags come as --flag value")
        name, _, inline = arg[2:].partition("=")
        field = name.replace("-", "_")
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--") or bool(inline)
        text = inline or (args[i + 1] if takes_value and not inline else "")
        if text and (field in space.VARIABLE and space.varies(text, field) or field not in space.VARIABLE and "," in text):
            varied[field] = text
        else:
            fixed += [f"--{name}", text] if takes_value else [arg]
        i += 2 if takes_value and not inline else 1
    return varied, fixed


def base_config(fixed: list[str], validation_fraction: float) -> dict[str, Any]:
    """The TrainConfig every trial starts from, parsed by `nnps train`'s own options."""
    import click

    from nnps.cli.train import config_from_options, train

    try:
        params = command_of(train).make_context("nnps sweep", list(fixed), resilient_parsing=False).params
    except click.ClickException as e:
        raise ConfigError(e.format_message())
    given = [a for a in fixed if a.split("=")[0] in NOT_IN_A_SWEEP]
    if given:
        raise ConfigError(f"{given[0].split('=')[0]} is not a trial flag: a sweep has its own, or takes none")
    if params.get("partitioned"):
        raise ConfigError("--partitioned: nnps sweep reads the table once on the driver, shares it with every trial "
                          "and picks by a validation split it holds; train one network at a time on data larger "
                          "than a machine")  # fmt: skip
    workers = params["workers"]  # the trials' workers: auto (the cost model) or N, kept in the base
    params.update(workers="0", address=None, validation_fraction=params["validation_fraction"] or validation_fraction)
    base = config_from_options(params).replace(workers=0).to_dict()
    if base["task"] == "regress":
        raise ConfigError("--task regress: nnps sweep picks trials by validation accuracy, so it sweeps classifiers only")
    if workers != "auto" and not (workers.isdigit()):
        raise ConfigError(f"--workers must be a count or auto, got {workers!r}")
    return {**base, "workers": workers if workers == "auto" else int(workers)}


@handle_errors
def sweep(
    ctx: typer.Context,
    epochs: Annotated[int, typer.Option(help="Epochs per trial (ASHA stops some earlier)")] = 10,
    samples: Annotated[Optional[int], typer.Option(help="Trials to sample (seeded by --seed); absent with lists only: a grid")] = None,
    scheduler: Annotated[str, typer.Option(help="asha: stop weak trials early on validation accuracy; fifo: every trial to the end")] = "asha",
    grace_period: Annotated[int, typer.Option(help="ASHA: epochs before a trial can be stopped")] = 1,
    reduction_factor: Annotated[float, typer.Option(help="ASHA: keep 1 in this many at each rung (Tune's default, 4)")] = 4.0,
    validation_fraction: Annotated[float, typer.Option(help="Part of the training set held out to judge trials")] = 0.1,
    concurrency: Annotated[str, typer.Option(help="Trials at once: auto (the cost model shares the CPUs between trials and their workers; --workers N fixes those) or N")] = "auto",
    address: RayAddress = None,
    run_dir: Annotated[Optional[str], typer.Option(help="The sweep's directory (local path)")] = None,
    resume: Annotated[bool, typer.Option(help="Go on with the sweep in --run-dir")] = False,
    show: Annotated[Optional[str], typer.Option(help="Print a sweep's table and plot its curves", metavar="SWEEP_DIR")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    log_progress: Annotated[bool, typer.Option(help="Print NNPS_PROGRESS lines (for jobs: nnps status reads them)")] = False,
) -> None:  # fmt: skip
    """Search hyperparameters on Ray Tune: train flags as lists (a,b) or ranges (lo:hi[:log]) vary."""
    if show:
        return shown(Path(show), json_out)
    if not run_dir:
        raise ConfigError("--run-dir is required: the sweep's directory")
    sweep_dir = Path(run_dir)
    if resume:
        spec = sweep_spec.SweepSpec.load(sweep_dir)
    else:
        if (sweep_dir / "sweep.json").exists():
            raise ConfigError(f"{sweep_dir} already holds a sweep: --resume it, or give another --run-dir")
        spec = spec_of(list(ctx.args), epochs, samples, scheduler, grace_period, reduction_factor,
                       validation_fraction, concurrency)  # fmt: skip
    result = run(spec, sweep_dir, resume, address, log_progress)
    report(result, json_out)


def spec_of(args: list[str], epochs: int, samples: int | None, scheduler: str, grace_period: int,
            reduction_factor: float, validation_fraction: float, concurrency: str) -> Any:  # fmt: skip
    """The SweepSpec that the command line describes, checked."""
    varied, fixed = split_flags(args)
    cap = None if concurrency == "auto" else parse_count(concurrency)
    spec = sweep_spec.SweepSpec(base_config(fixed, validation_fraction), varied, epochs, samples, scheduler,
                                grace_period, reduction_factor, cap)  # fmt: skip
    spec.check()
    return spec


def validate_args(args: list[str]) -> None:
    """`nnps submit ... sweep ARGS`: check ARGS with this command's own parser, before submitting."""
    ctx = command_of(sweep, **PASS_ON).make_context("nnps sweep", list(args))
    for own in ("run_dir", "resume", "show"):
        if ctx.params.get(own) not in (None, False):
            raise ConfigError(f"--{own.replace('_', '-')} is nnps submit's own option or not for a job")
    p = ctx.params
    spec_of(list(ctx.args), p["epochs"], p["samples"], p["scheduler"], p["grace_period"], p["reduction_factor"],
            p["validation_fraction"], p["concurrency"])  # fmt: skip


def parse_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--concurrency must be auto or a count >= 1, got {text!r}")
    return int(text)


def run(spec: Any, sweep_dir: Path, resume: bool, address: str | None, log_progress: bool = False) -> dict[str, Any]:
    import ray

    from nnps.cluster import sweep_runner as runner
    from nnps.cluster.connect import ray_connection

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # its notes on loggers nnps turned off
    if address is None and not ray.is_initialized():  # before starting Ray (a caller's own Ray: its CPUs, below)
        sweep_spec.check_fits(spec, os.cpu_count() or 1, "this machine")
    data = sweep_spec.sweep_data(spec)  # a bad --data fails here, before Ray starts or anything is written
    with ray_connection(address):
        cpus = int(ray.cluster_resources().get("CPU", 1))
        c, k, why = sweep_spec.shape(spec, data, cpus)
        if not resume:
            spec.save(sweep_dir)
        each = "each in-process" if k == 0 else f"each with {k} Ray worker{'s' if k > 1 else ''}"
        say(f"sweep: {spec.trials()} trials of {spec.epochs} epochs, {c} at a time, {each} ({why}), "
            f"{spec.scheduler}; {', '.join(a.describe() for a in spec.parsed())}")  # fmt: skip
        lines = runner.progress_callback(say, spec.epochs, spec.trials() if log_progress else None)
        with runner.shared_data(data) as holder:
            runner.tuner(spec, holder, sweep_dir, c, k, resume, [lines]).fit()
    return runner.finish(sweep_dir, spec, lines)


def table(result: dict[str, Any]) -> Table:
    from nnps.cluster.sweep_runner import describe

    t = Table(title="trials (validation accuracy at the last epoch trained)")
    for col in ("trial", "config", "epochs", "validation", "state"):
        t.add_column(col, justify="right" if col in ("epochs", "validation") else "left")
    best = (result.get("best") or {}).get("trial")
    for r in result["trials"]:
        acc = "" if r["val_accuracy"] is None else f"{r['val_accuracy']:.2%}"
        t.add_row(r["trial"] + (" *" if r["trial"] == best else ""), describe(r["params"]), str(r["epochs"]), acc,
                  r["state"])  # fmt: skip
    return t


def report(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        return print_json(result, sort_keys=True)
    console = Console()
    console.print(table(result))
    b = result["best"]
    if b:
        from nnps.cluster.sweep_runner import describe

        console.print(f"best: {b['trial']} ({describe(b['params'])}): validation {b['val_accuracy']:.2%}, "
                      f"test {b['test_accuracy']:.2%}; {result['epochs_trained']} of {result['epochs_fifo']} "
                      f"epochs trained", soft_wrap=True)  # fmt: skip


def shown(sweep_dir: Path, json_out: bool) -> None:
    """A sweep's table (finished or not) and curves.png of every trial's validation accuracy."""
    from nnps.cluster import sweep_runner as runner

    spec = sweep_spec.SweepSpec.load(sweep_dir)
    done = sweep_dir / "result.json"
    result = json.loads(done.read_text()) if done.exists() else {
        "trials": runner.outcomes(sweep_dir, spec), "best": None, "epochs_trained": 0, "epochs_fifo": 0}
    report(result, json_out)
    if not json_out:
        print(plot_curves(result, sweep_dir / "curves.png", spec.epochs))


def plot_curves(result: dict[str, Any], out: Path, epochs: int) -> Path:
    from nnps.cli.pictures import pyplot

    plt = pyplot("the plot")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in result["trials"]:
        xs = list(range(1, len(r["curve"]) + 1))
        line = ax.plot(xs, [100 * a for a in r["curve"]], label=r["trial"], alpha=0.8)[0]
        if r["state"] == "stopped" and xs:  # where ASHA stopped it
            ax.plot(xs[-1], 100 * r["curve"][-1], "x", color=line.get_color(), markersize=8)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", xlim=(0.8, epochs + 0.2),
           title="every trial's validation accuracy (x: stopped by ASHA)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
