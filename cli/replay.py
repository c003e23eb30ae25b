"""`nnps replay RUN_DIR`: a bounded or async run recomputed from its record, as a check."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from nnps.cli.errors import handle_errors
from nnps.cli.formatting import print_json
from nnps.cli.options import JsonOut
from nnps.core.rundir import RunDir


@handle_errors
def replay(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A bounded or async run's directory (local or s3://...)")],
    json_out: JsonOut = False,
) -> None:  # fmt: skip
    """Recompute a bounded or async run from its record (updates.npy) in one process; compare with its final.npz."""
    from nnps.cluster.driver import replay as replay_run  # imported here: `nnps --help` stays fast

    out = replay_run(RunDir(run_dir))
    if json_out:
        return print_json(out, sort_keys=True)
    Console(stderr=True).print(f"replayed {out['updates']} updates of {run_dir} in one process: max |w - final.npz| = "
                               f"{out['max_abs_diff']:.3g}; weights in {out['final']}", soft_wrap=True)  # fmt: skip
