"""`--early-stopping PATIENCE`: the run ends when its validation cost has not improved for
PATIENCE epochs, and final.npz is the best epoch's weights. The oracle: the same config
trained without early stopping to the best epoch, in one call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnps.core import checkpoint, validation
from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError
from nnps.core.rundir import RunDir
from nnps.core.training import train

CONFIG = TrainConfig(data="tests", hidden=(30,), lr=3.0, batch_size=10, epochs=40, workers=0,
                     validation_fraction=0.1, early_stopping=2)  # fmt: skip


def test_it_stops_after_patience_and_keeps_the_best_epoch(mnist10k, tmp_path: Path) -> None:
    data = validation.for_config(CONFIG, mnist10k)
    summary = train(CONFIG, data, RunDir(str(tmp_path / "run")))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    costs = [r["test_cost"] for r in rows]
    best = int(np.argmin(costs)) + 1
    assert summary["stopped_early"] and len(rows) < 40
    assert summary["best_epoch"] == best and len(rows) == best + 2  # two epochs without a better cost, then stop
    assert all(c >= costs[best - 1] for c in costs[best:])
    expected = train(CONFIG.replace(early_stopping=None, epochs=best), data)["params"]
    final = checkpoint.load(str(tmp_path / "run" / "final.npz"))
    assert final.step == best * 900 and np.array_equal(final.params, expected)
    assert np.array_equal(summary["params"], expected) and summary["metrics"]["epoch"] == best


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(mnist10k, tmp_path: Path) -> None:
    data = validation.for_config(CONFIG, mnist10k)
    whole = train(CONFIG, data, RunDir(str(tmp_path / "whole")))
    cut = RunDir(str(tmp_path / "cut"))
    train(CONFIG.replace(epochs=whole["best_epoch"]), data, cut)  # stopped by --epochs just at the best epoch
    resumed = train(CONFIG, data, cut, resume=True)
    assert (resumed["epochs"], resumed["best_epoch"]) == (whole["epochs"], whole["best_epoch"])
    assert np.array_equal(resumed["params"], whole["params"])


def test_it_needs_a_validation_split_and_a_patience() -> None:
    with pytest.raises(ConfigError, match=r"--early-stopping 2: needs PATIENCE >= 1 epochs and a validation split"):
        TrainConfig(early_stopping=2)
    with pytest.raises(ConfigError, match=r"--early-stopping 0"):
        TrainConfig(early_stopping=0, validation_fraction=0.1)
