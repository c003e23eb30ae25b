"""`nnps inspect`: what a trained network learned and how BP1-BP4 move, as PNGs (and JSON)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

import nnps
from nnps.cli import pictures
from nnps.cli.formatting import print_json
from nnps.cli.inspect_table import inspect_table
from nnps.cli.errors import handle_errors
from nnps.core.images import box_for, read_image
from nnps.core import catalog, checkpoint
from nnps.core.errors import ConfigError, DataError
from nnps.core.inspect import look_inside, mistakes, shard_sums, side_of
from nnps.core.rundir import RunDir

MAX_NEURONS = 100  # first-layer neurons drawn in a grid (the rest are in --json)


def _open(target: str) -> tuple[checkpoint.Checkpoint, RunDir | None]:
    """A checkpoint file, or a run directory's final.npz (else its last checkpoint)."""
    if target.endswith(".npz"):
        return checkpoint.load(target), None
    rd = RunDir(target)
    name = rd.latest_checkpoint()
    if name is None:
        raise DataError(f"{target}: neither a checkpoint (.npz) nor a run directory with one")
    return checkpoint.from_bytes(rd.read(name), rd.uri_of(name)), rd


@handle_errors
def inspect(
    target: Annotated[str, typer.Argument(metavar="CHECKPOINT|RUN_DIR", help="A checkpoint .npz, or a run directory (its final.npz)")],
    image: Annotated[Optional[str], typer.Argument(metavar="[IMAGE|ROW]", help="A test-set index, an image file, or IDXFILE:INDEX (default: test image 0); for a network trained on a table: a test-row index, or a CSV/Parquet FILE[:N] with the label column (its row N, from 1)")] = None,
    out: Annotated[Path, typer.Option(help="Directory for the PNGs")] = Path("inspect"),
    data: Annotated[Optional[str], typer.Option(help="Dataset (default: the one the checkpoint was trained on)")] = None,
    label: Annotated[Optional[int], typer.Option(help="True label of an IMAGE file (deltas are computed against it)")] = None,
    shards: Annotated[int, typer.Option(help="Split a mini-batch over this many shards, as the workers would")] = 3,
    batch_size: Annotated[Optional[int], typer.Option(help="The mini-batch to split (default: the run's)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON instead of the file list")] = False,
) -> None:  # fmt: skip
    """Pictures of the inside: W^1 as images (a table's: over its features), every layer and BP1-BP4
    for one input, the test set's confusion and worst mistakes (a regression's: predicted against
    true), and a mini-batch's shard sums against the whole batch."""
    if shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {shards}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    ck, rd = _open(target)
    if ck.table is not None:
        if data is not None or label is not None:
            raise ConfigError("--data and --label are for image networks: a table network's row is a test-row number "
                              "or FILE:N of a table with its label column")  # fmt: skip
        model = nnps.Model(ck, target, nnps.model.trained_with(ck))
        return inspect_table(model, image, out, shards, batch_size, json_out)
    net, params = ck.network, ck.params
    config = ck.meta.get("config", {})
    ds = catalog.load(data or config.get("data") or "mnist")
    if ds.num_inputs != net.sizes[0]:
        raise DataError(f"{ds.name}: images have {ds.num_inputs} pixels, the checkpoint's network takes {net.sizes[0]}")
    names = catalog.class_names(data or config.get("data", ""), net.sizes[-1])
    side = side_of(net.sizes[0])
    pixels, truth, what = _image(image, ds, label, side, box_for(names, side[0]))
    inside = look_inside(net, params, pixels, truth)
    wrong = mistakes(net, params, ds.x_test, ds.y_test)
    b = batch_size or int(config.get("batch_size", 10))
    s = shard_sums(net, params, ds.x_train, ds.y_train, min(b, len(ds.y_train)), shards, int(config.get("seed", 0)))
    if json_out:
        return print_json(_numbers(inside, wrong, s, net, what, names))
    for f in _pictures(out, ck, rd, ds, inside, wrong, s, names, what):
        print(f)


def _pictures(out: Path, ck: Any, rd: Any, ds: Any, inside: Any, wrong: Any, s: Any, names: list[str],
              what: str) -> list[Path]:  # fmt: skip
    """Write every picture into `out`; their paths."""
    net, ws = ck.network, ck.network.layout.views(ck.params)[0]
    side = side_of(net.sizes[0])
    shape = "-".join(map(str, net.sizes))
    files = [pictures.save(pictures.neuron_grid(ws[0][:MAX_NEURONS], side, f"{shape}: W^1, each hidden neuron's "
                                                f"weights over the {side[0]}x{side[1]} pixels (blue < 0 < red)"),
                           out / "weights-1.png")]  # fmt: skip
    for l in range(1, len(ws)):
        files.append(pictures.save(pictures.heat(ws[l], f"W^{l + 1}: each neuron's weights over layer {l}",
                                                 f"neuron of layer {l}", f"neuron of layer {l + 1}"),
                                   out / f"weights-{l + 1}.png"))  # fmt: skip
    files.append(pictures.save(pictures.forward_and_backward(inside, side, names), out / "input-layers.png"))
    grads = inside.nabla_w
    files.append(pictures.save(pictures.neuron_grid(grads[0][:MAX_NEURONS], side, "BP4: dC/dW^1 = delta^1 (a^0)^T, "
                                                    f"per hidden neuron, for {what}"), out / "input-bp4-w1.png"))  # fmt: skip
    for l in range(1, len(grads)):
        files.append(pictures.save(pictures.heat(grads[l], f"BP4: dC/dW^{l + 1} = delta^{l + 1} (a^{l})^T for {what}",
                                                 f"neuron of layer {l}", f"neuron of layer {l + 1}"),
                                   out / f"input-bp4-w{l + 1}.png"))  # fmt: skip
    n_test = int(wrong.confusion.sum())
    acc = float(np.trace(wrong.confusion)) / max(n_test, 1)
    files.append(pictures.save(pictures.confusion_matrix(wrong.confusion, names, f"{ds.name} test set: {acc:.2%} "
                                                         f"of {n_test}"), out / "confusion.png"))  # fmt: skip
    files.append(pictures.save(pictures.worst_mistakes(ds.x_test, wrong, ds.y_test, names, side), out / "mistakes.png"))
    layers = []
    for l in (len(ws) - 1, 0):
        P0 = net.layout.offsets[l][1]
        P1 = net.layout.offsets[l][2]
        layers.append((f"layer {l + 1} biases", s.whole[P0:P1], s.total[P0:P1], [p[P0:P1] for p in s.sums]))
    files.append(pictures.save(pictures.shards(s, layers[: 1 if len(ws) == 1 else 2]), out / "shards.png"))
    if rd is not None and (kept := rd.weight_snapshots()):
        frames = [pictures.png_bytes(pictures.neuron_grid(
            np.load(io.BytesIO(rd.read(name)))[:MAX_NEURONS].astype(np.float32), side,
            f"{shape}: W^1 after epoch {epoch}")) for epoch, name in kept]  # fmt: skip
        files.append(pictures.animation(frames, out / "weights-1.gif"))
    return files


def _image(image: str | None, ds: Any, label: int | None, side: tuple[int, int],
           box: int) -> tuple[np.ndarray, int, str]:  # fmt: skip
    """(pixels uint8, true label, a description) of the IMAGE argument."""
    if image is None or image.isdigit():
        i = int(image or 0)
        if i >= len(ds.y_test):
            raise DataError(f"test image {i} out of range: {ds.name} has {len(ds.y_test)}")
        return ds.x_test[i], int(ds.y_test[i]) if label is None else label, f"test image {i}"
    pixels, _ = read_image(image, side, box)
    if label is None:
        raise ConfigError(f"{image}: give its true label with --label (the deltas are computed against it)")
    return pixels, label, image


def _numbers(inside: Any, wrong: Any, s: Any, net: Any, what: str, names: list[str]) -> dict[str, Any]:
    def floats(a: np.ndarray) -> list:
        return np.asarray(a, dtype=float).tolist()

    return {
        "sizes": list(net.sizes), "input": what, "label": inside.label, "prediction": inside.prediction,
        "classes": names, "cost": inside.cost, "output": floats(inside.output), "target": floats(inside.target),
        "layers": [{"l": l + 1, "z": floats(inside.zs[l]), "a": floats(inside.activations[l + 1]),
                    "delta": floats(inside.deltas[l]), "dC_db": floats(inside.nabla_b[l]),
                    "dC_dW": floats(inside.nabla_w[l])} for l in range(len(inside.zs))],
        "test": {"confusion": wrong.confusion.tolist(), "most_confident_mistakes": [
            {"index": int(i), "predicted": int(wrong.predicted[i]), "confidence": float(wrong.confidence[i])}
            for i in wrong.worst[:36]]},
        "shards": {"step": s.step, "sizes": [len(x) for x in s.shards], "max_difference": s.max_difference,
                   "sums": [floats(x) for x in s.sums], "total": floats(s.total), "whole": floats(s.whole)},
    }  # fmt: skip
