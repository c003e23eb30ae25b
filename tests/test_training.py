"""The serial training loop: against an independent reference, resume, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnps.core import checkpoint
from nnps.core.config import TrainConfig
from nnps.core.errors import ConfigError, DivergenceError
from nnps.core.network import Network, initial_params
from nnps.core.rundir import RunDir
from nnps.core.sampler import Sampler
from nnps.core.training import train
from tests.test_gradients import per_example_reference

TINY = TrainConfig(data="tiny", hidden=(8,), batch_size=7, epochs=3, lr=2.0, dtype="float64", seed=5)


def test_serial_sgd_equals_reference_loop(tiny) -> None:
    """Nielsen's update, w <- w - eta/m sum_x grad C_x, with per-example backprop written
    independently in the test, over the same batches: equal to 1e-10."""
    result = train(TINY, tiny)
    net = Network((36, 8, 10), "sigmoid", "sigmoid", "quadratic", "float64")
    params = initial_params(net, "normal", TINY.seed)
    sampler = Sampler(240, 7, TINY.seed)
    for step in range(3 * sampler.steps_per_epoch):
        idx = sampler.batch(step)
        g = per_example_reference(net, params, tiny.x_train[idx] / 255.0, tiny.y_train[idx])
        params = params - TINY.lr / len(idx) * g
    np.testing.assert_allclose(result["params"], params, rtol=1e-10, atol=1e-10)


def test_run_dir_contents(tiny, tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path / "run"))
    summary = train(TINY, tiny, rd)
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == TINY.to_dict()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["step"] for r in rows] == [35, 70, 105]
    assert set(rows[0]) >= {"epoch", "step", "train_cost", "test_cost", "test_accuracy", "examples_per_s", "seconds"}
    final = checkpoint.load(summary["final"])
    np.testing.assert_array_equal(final.params, summary["params"])
    assert final.meta["step"] == 105 and final.meta["epoch"] == 3 and final.meta["config"] == TINY.to_dict()
    assert rd.checkpoints() == [(35, "ckpt-000000035.npz"), (70, "ckpt-000000070.npz"), (105, "ckpt-000000105.npz")]


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_stop_and_resume_equals_uninterrupted(tiny, tmp_path: Path, optimizer: str) -> None:
    cfg = TINY.replace(optimizer=optimizer, lr=0.05, checkpoint_every=10, dtype="float32", schedule="cosine")
    whole = train(cfg, tiny, RunDir(str(tmp_path / "a")))
    rd = RunDir(str(tmp_path / "b"))
    train(cfg.replace(steps=43), tiny, rd)  # stops mid-epoch 2, last checkpoint at step 40
    (tmp_path / "b" / "final.npz").unlink()
    resumed = train(cfg, tiny, rd, resume=True)
    np.testing.assert_array_equal(resumed["params"], whole["params"])  # bit for bit
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")} for r in rows]  # noqa: E731
    assert strip(b) == strip(a)  # the partial epoch-2 row of the stopped run is replaced


def test_resume_refuses_a_changed_config(tiny, tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path / "r"))
    train(TINY.replace(steps=20, checkpoint_every=10), tiny, rd)
    with pytest.raises(ConfigError) as e:
        train(TINY.replace(lr=0.5), tiny, rd, resume=True)
    assert str(e.value) == f"--resume: lr=0.5 (run has 2.0) would change the run in {rd}"


def test_steps_zero_writes_initial_weights(tiny, tmp_path: Path) -> None:
    summary = train(TINY.replace(steps=0), tiny, RunDir(str(tmp_path)))
    ck = checkpoint.load(summary["final"])
    net = Network((36, 8, 10), dtype="float64")
    np.testing.assert_array_equal(ck.params, initial_params(net, "normal", TINY.seed))
    assert ck.step == 0


def test_init_from_checkpoint(tiny, tmp_path: Path) -> None:
    first = train(TINY.replace(steps=12), tiny, RunDir(str(tmp_path / "a")))
    second = train(TINY.replace(steps=0, init=first["final"]), tiny, RunDir(str(tmp_path / "b")))
    np.testing.assert_array_equal(second["params"], first["params"])
    with pytest.raises(ConfigError, match=r"checkpoint has sizes \[36, 8, 10\], this run needs \[36, 9, 10\]"):
        train(TINY.replace(hidden=(9,), init=first["final"]), tiny)


def test_divergence_stops_and_keeps_last_good_checkpoint(tiny, tmp_path: Path) -> None:
    cfg = TINY.replace(activation="relu", output="softmax", cost="cross-entropy", lr=1e30, checkpoint_every=1,
                       weight_init="scaled", dtype="float32")  # fmt: skip
    rd = RunDir(str(tmp_path))
    with pytest.raises(DivergenceError) as e:
        train(cfg, tiny, rd)
    step, name = rd.checkpoints()[-1]
    assert str(e.value).startswith("training diverged: cost became ")
    assert str(e.value).endswith(f" at step {step} (epoch 1); the last good checkpoint is {rd.uri_of(name)}")
    ck = checkpoint.load(rd.uri_of(name))  # loads: all parameters finite
    assert ck.step == step and not (tmp_path / "final.npz").exists()
