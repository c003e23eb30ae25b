"""`nnps inspect` of a network trained on a table: W^1 over the features' names, one row
through every layer and BP1-BP4, the test rows' confusion (a classifier) or predicted against
true values (a regression), and a mini-batch's shard sums. The same numbers as for images
(core/inspect.py), drawn for columns instead of pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import nnps
from nnps.cli import pictures
from nnps.cli.formatting import print_json
from nnps.core import table_rows
from nnps.core.errors import DataError
from nnps.core.inspect import Inside, look_inside, mistakes, outputs, shard_sums
from nnps.core.metrics import unpack
from nnps.core.steps import ShardWorker

MAX_NEURONS = 100  # first-layer neurons drawn (the rest are in --json)


def inspect_table(model: nnps.Model, row: str | None, out: Path, shards: int, batch_size: int | None,
                  json_out: bool) -> None:  # fmt: skip
    """Write (or print as JSON) what is inside `model` for `row`: a test-row index, or FILE[:N]."""
    ck, info = model.checkpoint, model.checkpoint.table
    assert info is not None
    ds = nnps.model.dataset_for(model, None, "test")  # the run's own rows, as it read them
    x, y, what = _row(model, ds, row)
    inside = look_inside(ck.network, ck.params, x, y)
    config = model.config
    b = batch_size or (config.batch_size if config else 10)
    s = shard_sums(ck.network, ck.params, ds.x_train, ds.y_train, min(b, len(ds.y_train)), shards,
                   config.seed if config else 0)  # fmt: skip
    test = _test(model, ds)
    if json_out:
        return print_json(_numbers(inside, test, s, model, what))
    for f in _pictures(out, model, inside, test, ds, s, what):
        print(f)


def _row(model: nnps.Model, ds: Any, row: str | None) -> tuple[np.ndarray, Any, str]:
    """(standardized row, its label: class index or scaled targets, a description)."""
    if row is None or row.isdigit():
        i = int(row or 0)
        if i >= len(ds.y_test):
            raise DataError(f"test row {i} out of range: {ds.name} has {len(ds.y_test)} test rows")
        return ds.x_test[i], ds.y_test[i], f"test row {i}"
    path, _, n = row.rpartition(":") if row.rpartition(":")[2].isdigit() else (row, "", "1")
    x, y = table_rows.rows(model.checkpoint.table, path, model.config.label if model.config else "label")
    if y is None:
        raise DataError(f"{path}: no label column to compute the deltas against (give rows with their label)")
    if not 1 <= int(n) <= len(x):
        raise DataError(f"{path}: row {n} out of range: it has {len(x)} rows (numbered from 1)")
    return x[int(n) - 1], y[int(n) - 1], f"{path} row {n}"


def _test(model: nnps.Model, ds: Any) -> dict[str, Any]:
    """The test rows' scores: the confusion matrix and worst mistakes, or MSE, MAE, R^2 and the outputs."""
    ck = model.checkpoint
    if not ck.network.regression:
        wrong = mistakes(ck.network, ck.params, ds.x_test, ds.y_test)
        return {"confusion": wrong.confusion, "mistakes": wrong}
    worker = ShardWorker(ck.network, ds.x_train[:0], ds.y_train[:0], ds.x_test, ds.y_test)
    e = unpack(worker.evaluate(ck.params, "test"), ck.network, ck.table.target_std)
    return {"mse": e.mse, "mae": e.mae, "r2": e.r2, "outputs": outputs(ck.network, ck.params, ds.x_test)}


def _pictures(out: Path, model: nnps.Model, inside: Inside, test: dict[str, Any], ds: Any, s: Any,
              what: str) -> list[Path]:  # fmt: skip
    ck, info = model.checkpoint, model.checkpoint.table
    net, ws = ck.network, ck.network.layout.views(ck.params)[0]
    features, names, shape = list(info.features), model.classes, "-".join(map(str, net.sizes))
    files = [pictures.save(pictures.heat(ws[0][:MAX_NEURONS], f"{shape}: W^1, each hidden neuron's weights over "
                                         f"the standardized features (blue < 0 < red)", "feature", "neuron of layer 1",
                                         features), out / "weights-1.png")]  # fmt: skip
    for l in range(1, len(ws)):
        files.append(pictures.save(pictures.heat(ws[l], f"W^{l + 1}: each neuron's weights over layer {l}",
                                                 f"neuron of layer {l}", f"neuron of layer {l + 1}"),
                                   out / f"weights-{l + 1}.png"))  # fmt: skip
    files.append(pictures.save(pictures.forward_and_backward(inside, (1, net.sizes[0]), names, features),
                               out / "input-layers.png"))  # fmt: skip
    files.append(pictures.save(pictures.heat(inside.nabla_w[0], f"BP4: dC/dW^1 = delta^1 (a^0)^T for {what}",
                                             "feature", "neuron of layer 1", features), out / "input-bp4-w1.png"))
    if "confusion" in test:
        c = test["confusion"]
        title = f"{ds.name} test rows: {np.trace(c) / max(c.sum(), 1):.2%} of {int(c.sum())}"
        files.append(pictures.save(pictures.confusion_matrix(c, names, title), out / "confusion.png"))
    else:
        true, predicted = info.unscale_targets(ds.y_test), info.unscale_targets(test["outputs"])  # in the targets' units
        files.append(pictures.save(predicted_against_true(true, predicted, names, test["r2"]),
                                   out / "predicted-true.png"))  # fmt: skip
    P0, P1 = net.layout.offsets[-1][1:]
    layer = [(f"layer {len(ws)} biases", s.whole[P0:P1], s.total[P0:P1], [p[P0:P1] for p in s.sums])]
    files.append(pictures.save(pictures.shards(s, layer), out / "shards.png"))
    return files


def predicted_against_true(true: np.ndarray, predicted: np.ndarray, names: list[str], r2: float) -> Any:
    """Each target's test values against the network's, in its units, beside the diagonal."""
    plt = pictures.pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for t, (ax, name) in enumerate(zip(axes[0], names)):
        ax.scatter(true[:, t], predicted[:, t], s=8, alpha=0.6)
        lo, hi = float(min(true[:, t].min(), predicted[:, t].min())), float(max(true[:, t].max(), predicted[:, t].max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="predicted = true")
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}")
        ax.legend(fontsize=7)
    fig.suptitle(f"the test rows: predicted against true (R^2 {r2:.4f}, averaged over targets)", fontsize=10)
    fig.tight_layout()
    return fig


def _numbers(inside: Inside, test: dict[str, Any], s: Any, model: nnps.Model, what: str) -> dict[str, Any]:
    def floats(a: np.ndarray) -> list:
        return np.asarray(a, dtype=float).tolist()

    scores = ({"confusion": test["confusion"].tolist()} if "confusion" in test
              else {k: test[k] for k in ("mse", "mae", "r2")})  # fmt: skip
    return {
        "sizes": list(model.checkpoint.network.sizes), "input": what, "features": list(model.checkpoint.table.features),
        "classes": model.classes, "cost": inside.cost, "output": floats(inside.output), "target": floats(inside.target),
        "layers": [{"l": l + 1, "z": floats(inside.zs[l]), "a": floats(inside.activations[l + 1]),
                    "delta": floats(inside.deltas[l]), "dC_db": floats(inside.nabla_b[l]),
                    "dC_dW": floats(inside.nabla_w[l])} for l in range(len(inside.zs))],
        "test": scores,
        "shards": {"step": s.step, "sizes": [len(x) for x in s.shards], "max_difference": s.max_difference},
    }  # fmt: skip
