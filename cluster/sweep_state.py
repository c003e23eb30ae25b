"""Tune's experiment state, kept whole for `nnps sweep --resume` after a killed driver.

Tune writes its experiment state (the trials and their statuses) and its searcher's state
(how many trials it has drawn) to a staging folder, then copies both to SWEEP_DIR/tune/ in
the background. A driver killed during that copy leaves a truncated file there, or a pair
from two different moments, and Tune then resumes to a different sweep: trials never drawn,
or drawn twice. `Keeper`, a Tune callback, takes the pair from the staging folder right after
Tune has written it, into one file replaced atomically (SWEEP_DIR/tune-state.pkl);
`put_back` writes that pair into SWEEP_DIR/tune/ before Tune restores from it.
"""

from __future__ import annotations

import glob
import os
import pickle
from pathlib import Path
from typing import Any

from ray import tune

from nnps.core.rundir import write_atomically

KEPT = "tune-state.pkl"
PATTERNS = ("experiment_state-*.json", "basic-variant-state-*.json")  # Tune's own file names


class Keeper(tune.Callback):
    """Keeps the newest consistent pair of Tune's state files in SWEEP_DIR/tune-state.pkl."""

    def __init__(self, sweep_dir: str) -> None:
        self.path = os.path.join(sweep_dir, KEPT)
        self.staging: str | None = None
        self.last: dict[str, bytes] | None = None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.staging = trial.storage.experiment_driver_staging_path

    def get_state(self) -> None:
        """Tune calls this as the last part of saving its state, once the experiment's and the
        searcher's files are written in the staging folder: the moment to copy them both."""
        if self.staging is not None:
            self.keep(self.staging)
        return None  # nothing of this callback's own for Tune to save

    def keep(self, staging: str) -> None:
        pair: dict[str, bytes] = {}
        for pattern in PATTERNS:
            found = sorted(glob.glob(os.path.join(staging, pattern)))  # names end in the session's time
            if not found:
                return
            pair[os.path.basename(found[-1])] = Path(found[-1]).read_bytes()
        if pair != self.last:
            write_atomically(self.path, pickle.dumps(pair))
            self.last = pair


def put_back(sweep_dir: Path) -> bool:
    """Replace Tune's state files in SWEEP_DIR/tune/ by the pair kept last; False if none was
    kept (the driver died before Tune first saved its state), and then nothing is changed."""
    try:
        pair = pickle.loads((sweep_dir / KEPT).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return False
    tune_dir = sweep_dir / "tune"
    for pattern in PATTERNS:
        for old in tune_dir.glob(pattern):
            if old.name not in pair:
                old.unlink()
    for name, data in pair.items():
        write_atomically(str(tune_dir / name), data)
    return True
