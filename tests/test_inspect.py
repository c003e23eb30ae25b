"""`nnps inspect` and core/inspect.py: the inside of a network, checked against independent
oracles (finite differences in float64, the shards' sum against the whole batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from nnps.cli.main import app
from nnps.core.costs import cost_sum
from nnps.core.inspect import look_inside, mistakes, shard_sums
from nnps.core.network import Network, initial_params
from tests.conftest import MNIST_10K

runner = CliRunner()


def cost_of(net: Network, params: np.ndarray, pixels: np.ndarray, label: int) -> float:
    """C_x by a forward pass alone: the oracle the backward pass is checked against."""
    z, a = net.last_layer(params, pixels[None, :] / 255.0)
    return cost_sum(net.cost, net.output, z, a, np.eye(net.sizes[-1])[[label]])


def test_every_layer_for_one_input_against_finite_differences(mnist10k) -> None:
    net = Network((784, 16, 16, 10), "sigmoid", "sigmoid", "quadratic", "float64")  # the notes' own network
    params = initial_params(net, "normal", 1)
    pixels, label = mnist10k.x_test[0], int(mnist10k.y_test[0])
    inside = look_inside(net, params, pixels, label)
    assert [len(z) for z in inside.zs] == [16, 16, 10] and len(inside.activations) == 4
    assert inside.cost == cost_of(net, params, pixels, label)
    np.testing.assert_allclose(inside.target, np.eye(10)[label])
    ws, bs = net.layout.views(params)
    rng = np.random.default_rng(0)
    for l in range(3):
        np.testing.assert_array_equal(inside.nabla_b[l], inside.deltas[l])  # BP3
        np.testing.assert_allclose(inside.nabla_w[l], np.outer(inside.deltas[l], inside.activations[l]))  # BP4
        for _ in range(4):  # dC/dW^l_jk and dC/db^l_j by central differences
            j, k = rng.integers(ws[l].shape[0]), rng.integers(ws[l].shape[1])
            for array, index, grad in ((ws[l], (j, k), inside.nabla_w[l][j, k]), (bs[l], (j,), inside.nabla_b[l][j])):
                old, h = array[index], 1e-6
                array[index] = old + h
                up = cost_of(net, params, pixels, label)
                array[index] = old - h
                down = cost_of(net, params, pixels, label)
                array[index] = old
                assert abs((up - down) / (2 * h) - grad) < 1e-6 + 1e-5 * abs(grad)


def test_shards_add_up_to_the_batch_and_mistakes_are_ranked(mnist10k) -> None:
    net = Network((784, 30, 10), dtype="float64")
    params = initial_params(net, "normal", 2)
    s = shard_sums(net, params, mnist10k.x_train, mnist10k.y_train, 100, 3, seed=4, step=7)
    assert [len(x) for x in s.shards] == [34, 33, 33] and s.max_difference < 1e-10
    assert np.abs(s.whole).max() > 1  # not trivially zero
    m = mistakes(net, params, mnist10k.x_test[:500], mnist10k.y_test[:500], chunk=128)
    assert m.confusion.sum() == 500 and len(m.worst) == 500 - np.trace(m.confusion)
    assert np.all(np.diff(m.confidence[m.worst]) <= 0) and np.all(m.predicted[m.worst] != mnist10k.y_test[m.worst])


def test_cli_inspect_writes_each_view(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(MNIST_10K), "--hidden", "16,16", "--batch-size", "50",
                              "--epochs", "2", "--workers", "0", "--snapshot-weights", "--run-dir", str(run)])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "pictures"
    res = runner.invoke(app, ["inspect", str(run), "3", "--out", str(out), "--shards", "2"])
    assert res.exit_code == 0, res.output
    names = ["weights-1.png", "weights-2.png", "weights-3.png", "input-layers.png", "input-bp4-w1.png",
             "input-bp4-w2.png", "input-bp4-w3.png", "confusion.png", "mistakes.png", "shards.png", "weights-1.gif"]
    assert res.stdout.split() == [str(out / n) for n in names]
    from PIL import Image

    for n in names:
        with Image.open(out / n) as im:
            assert im.size[0] > 200 and im.size[1] > 100
            if n.endswith(".png"):  # nothing drawn touches the image's edge: no title or label is cut off
                rgb = np.asarray(im.convert("RGB")).astype(int)
                edges = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
                assert (edges == 255).all(), n
    with Image.open(out / "weights-1.gif") as gif:
        assert gif.n_frames == 3  # epochs 0, 1, 2
    numbers = json.loads(runner.invoke(app, ["inspect", str(run / "final.npz"), "3", "--json"]).stdout)
    assert numbers["sizes"] == [784, 16, 16, 10] and numbers["label"] == 0  # test image 3 is a 0
    assert [len(layer["delta"]) for layer in numbers["layers"]] == [16, 16, 10]
    sums = np.array(numbers["shards"]["sums"])
    assert np.abs(sums.sum(axis=0) - np.array(numbers["shards"]["whole"])).max() < 1e-4  # float32
    assert np.array(numbers["test"]["confusion"]).sum() == 10000
    for flag, value in (("--batch-size", "-5"), ("--shards", "0")):  # sizes below 1: one line each
        res = runner.invoke(app, ["inspect", str(run), "--out", str(out), flag, value])
        assert res.exit_code == 1 and res.stderr == f"error: {flag} must be >= 1, got {value}\n", res.stderr
    bad = runner.invoke(app, ["inspect", str(run), str(tmp_path / "none.png")])
    assert bad.exit_code == 1 and bad.stderr == f"error: {tmp_path / 'none.png'}: no such file\n"
