"""The training driver: load the data, choose the executor, run the loop.

Kept free of Ray imports at module level so `nnps train --workers 0` starts fast and
works where Ray is not wanted.
"""

from __future__ import annotations

from typing import Any

from nnps.core import catalog
from nnps.core.config import TrainConfig
from nnps.core.rundir import RunDir
from nnps.core.training import Reporter, make_in_process, train


def run(config: TrainConfig, run_dir: RunDir | None, *, resume: bool = False, reporter: Reporter | None = None,
        progress: catalog.Progress | None = None) -> dict[str, Any]:  # fmt: skip
    if config.workers == 0:
        dataset = catalog.load(config.data, progress=progress)
        return train(config, dataset, run_dir, resume=resume, make_executor=make_in_process, reporter=reporter)
    from nnps.cluster.ray_executor import ray_session

    with ray_session(config) as factory:  # first: a bad --address fails before any data is read
        dataset = catalog.load(config.data, progress=progress)
        return train(config, dataset, run_dir, resume=resume, make_executor=factory, reporter=reporter)
