"""`nnps plot RUN_DIR...`: learning curves (cost and accuracy per epoch) as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nnps.cli.errors import handle_errors
from nnps.cli.pictures import pyplot
from nnps.core.errors import NnpsError
from nnps.core.rundir import RunDir


@handle_errors
def plot(
    run_dirs: Annotated[list[str], typer.Argument(metavar="RUN_DIR...", help="Run directories (paths or URIs); overlaid")],
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("curves.png"),
) -> None:
    """Write a learning-curve PNG: train/test cost and test accuracy per epoch, runs overlaid."""
    plt = pyplot("nnps plot")
    runs = []
    for uri in run_dirs:
        rows = RunDir(uri).read_metrics()
        if not rows:
            raise NnpsError(f"{uri}: no metrics.jsonl (not a run directory, or no epoch finished yet)")
        runs.append((Path(uri.rstrip("/")).name, rows))
    fig, (ax_cost, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs:
        epochs = [r["epoch"] for r in rows]
        line = ax_cost.plot(epochs, [r["train_cost"] for r in rows], label=f"{name} train")[0]
        ax_cost.plot(epochs, [r["test_cost"] for r in rows], "--", color=line.get_color(), label=f"{name} test")
        score = [100 * r["test_accuracy"] if "test_accuracy" in r else r.get("test_r2") for r in rows]
        ax_acc.plot(epochs, score, color=line.get_color(), label=name)
    regression = all("test_r2" in rows[-1] for _, rows in runs)  # R^2 in place of accuracy
    ax_cost.set(xlabel="epoch", ylabel="mean cost", title="cost", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test R^2" if regression else "test accuracy (%)",
               title="test R^2" if regression else "test accuracy")  # fmt: skip
    for ax in (ax_cost, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(out)
