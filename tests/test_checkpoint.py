"""Checkpoints: numpy-readable, atomic, and refused with a clear message when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnps.core import checkpoint
from nnps.core.errors import CheckpointError
from nnps.core.network import Network, initial_params
from nnps.core.rundir import RunDir

META = {"step": 7, "epoch": 1, "seed": 3}


def make(dtype: str = "float32") -> checkpoint.Checkpoint:
    net = Network((6, 5, 4), "relu", "softmax", "cross-entropy", dtype)
    p = initial_params(net, "scaled", seed=3)
    return checkpoint.Checkpoint(net, p, {"velocity": np.full_like(p, 0.5)}, dict(META))


def save(tmp_path: Path, ck: checkpoint.Checkpoint, name: str = "c.npz") -> Path:
    RunDir(str(tmp_path)).write_atomic(name, checkpoint.to_bytes(ck))
    return tmp_path / name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_and_plain_numpy_readable(tmp_path: Path, dtype: str) -> None:
    ck = make(dtype)
    path = save(tmp_path, ck)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["b1", "b2", "meta", "opt_velocity", "w1", "w2"]
        assert z["w1"].shape == (5, 6) and z["w2"].dtype == np.dtype(dtype)
        meta = json.loads(str(z["meta"]))
    assert {k: meta[k] for k in ("format", "sizes", "activation", "output", "cost", "dtype", "step", "epoch", "seed")} == {
        "format": 1, "sizes": [6, 5, 4], "activation": "relu", "output": "softmax", "cost": "cross-entropy",
        "dtype": dtype, "step": 7, "epoch": 1, "seed": 3}  # fmt: skip
    back = checkpoint.load(str(path))
    np.testing.assert_array_equal(back.params, ck.params)
    np.testing.assert_array_equal(back.opt_state["velocity"], ck.opt_state["velocity"])
    assert back.network == ck.network


def rewrite(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def test_shape_that_does_not_fit_meta(tmp_path: Path) -> None:
    path = save(tmp_path, make())
    rewrite(path, w2=np.zeros((4, 6), np.float32))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(str(path))
    assert str(e.value) == f"{path}: w2 has shape (4, 6), meta's sizes need (4, 5)"


def test_missing_array_and_extra_layer(tmp_path: Path) -> None:
    path = save(tmp_path, make())
    rewrite(path, b1=None)
    with pytest.raises(CheckpointError, match=r"array b1 missing for sizes \[6, 5, 4\]"):
        checkpoint.load(str(path))
    path = save(tmp_path, make())
    rewrite(path, w3=np.zeros((2, 4), np.float32))
    with pytest.raises(CheckpointError, match=r"unexpected arrays \['w3'\]"):
        checkpoint.load(str(path))


def test_meta_problems(tmp_path: Path) -> None:
    path = save(tmp_path, make())
    rewrite(path, meta=np.array("{not json"))
    with pytest.raises(CheckpointError, match=r"meta is not valid JSON"):
        checkpoint.load(str(path))
    rewrite(path, meta=np.array(json.dumps({"format": 1})))
    with pytest.raises(CheckpointError, match=r"meta lacks sizes, activation, output, cost, dtype, step, epoch, seed"):
        checkpoint.load(str(path))


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    path = save(tmp_path, make())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c.npz: not a readable checkpoint \(BadZipFile"):
        checkpoint.load(str(path))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(str(tmp_path / "nope.npz"))
    assert str(e.value) == f"{tmp_path / 'nope.npz'}: no such file"


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path: Path, monkeypatch) -> None:
    rd = RunDir(str(tmp_path))
    rd.write_atomic("final.npz", b"old")

    class Boom(Exception):
        pass

    def fail(*a, **kw):
        raise Boom()

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(Boom):
        rd.write_atomic("final.npz", b"new")
    assert (tmp_path / "final.npz").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["final.npz"]  # the temporary is cleaned up


def test_keeps_last_three_step_checkpoints(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    for step in (10, 20, 30, 40):
        rd.save_checkpoint(step, b"x")
    assert rd.checkpoints() == [(20, "ckpt-000000020.npz"), (30, "ckpt-000000030.npz"), (40, "ckpt-000000040.npz")]
