"""`nnps evaluate` and `nnps predict`: use a checkpoint."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from nnps.cli.errors import handle_errors
from nnps.cli.options import JsonOut
from nnps.core import catalog, checkpoint, table_rows, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.images import box_for, read_image
from nnps.core.errors import ConfigError, DataError
from nnps.core.metrics import Evaluation, describe, unpack
from nnps.core.shard import ShardWorker


@handle_errors
def evaluate(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint); local path or URI")],
    data: Annotated[Optional[str], typer.Option(help="Dataset name or path (default: the one the checkpoint was trained on)")] = None,
    split: Annotated[str, typer.Option(help="test, train, or validation (a run that held one out)")] = "test",
    json_out: JsonOut = False,
) -> None:
    """Accuracy, mean cost and confusion matrix of a checkpoint on a dataset (a regression's: MSE, MAE, R^2)."""
    if split not in ("test", "train", "validation"):
        raise DataError(f"--split must be test, train or validation, got {split!r}")
    ckpt = checkpoint.resolve(ckpt)
    ck = checkpoint.load(ckpt)
    trained = trained_with(ck)
    data = data or (trained.data if trained else "mnist")
    ds, asked = _dataset(ck, trained, data, split), split
    if split == "validation":  # the examples the run held out, carved again as it carved them
        if trained is None or not trained.validation_fraction:
            raise DataError(f"{ckpt}: its run held out no validation split (--validation-fraction)")
        ds, split = validation.for_config(trained, ds), "test"
    if ds.num_inputs != ck.network.sizes[0]:
        raise DataError(f"{data}: {ds.num_inputs} inputs a row, the checkpoint's network takes {ck.network.sizes[0]}")
    worker = ShardWorker(ck.network, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    n = ck.network.sizes[-1]
    e = unpack(worker.evaluate(ck.params, split), ck.network, ck.table.target_std if ck.table else None)
    names = list(ck.table.targets or ck.table.classes) if ck.table else catalog.class_names(data, n)
    result = {"checkpoint": ckpt, "data": data, "split": asked, **describe(e),
              ("targets" if ck.network.regression else "classes"): names}  # fmt: skip
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    _show(ds.name, asked, e, names)


def _show(name: str, split: str, e: Evaluation, names: list[str]) -> None:
    console = Console()
    if e.confusion is None:
        console.print(f"{name} {split}: {e.examples} examples, MSE {e.mse:.6g}, MAE {e.mae:.6g}, R^2 {e.r2:.4f} "
                      f"({', '.join(names)}), mean cost {e.cost:.4f}")  # fmt: skip
        return
    console.print(f"{name} {split}: {e.examples} examples, accuracy {e.accuracy:.2%}, mean cost {e.cost:.4f}")
    n, confusion = len(e.confusion), e.confusion
    table = Table(title="confusion (rows: true label, columns: predicted)")
    table.add_column("")
    for j in range(n):
        table.add_column(str(j), justify="right")
    for i in range(n):
        table.add_row(str(i) if names[i] == str(i) else f"{i} {names[i]}", *(str(v) for v in confusion[i]))
    console.print(table)


def _dataset(ck: checkpoint.Checkpoint, trained: TrainConfig | None, data: str, split: str) -> Dataset:
    """The rows to evaluate on: images by name or path; for a network trained on a table, its
    run's table read as it was trained, or every row of another table with the same columns."""
    if ck.table is None:
        return catalog.load(data)
    label = trained.label if trained else "label"
    if trained is not None and data == trained.data:
        return table_rows.load(trained, info=ck.table)
    if split != "test":
        raise DataError(f"--split {split}: {data} is not the table the network was trained on; all its rows are tested")
    x, y = table_rows.rows(ck.table, data, label)
    if y is None:
        raise DataError(f"{data}: no label column {label!r} to evaluate against (nnps predict needs none)")
    return Dataset(data.rstrip("/").rsplit("/", 1)[-1], x[:0], y[:0], x, y, table=ck.table)


def trained_with(ck: checkpoint.Checkpoint) -> TrainConfig | None:
    """The config a checkpoint's run had (None for one whose meta holds no config this nnps reads)."""
    try:
        return TrainConfig.from_dict(ck.meta["config"])
    except (KeyError, TypeError, ConfigError):
        return None


@handle_errors
def predict(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint)")],
    images: Annotated[list[str], typer.Argument(metavar="INPUT...", help="PNG/PGM/... files, or IDXFILE:INDEX; for a network trained on a table: CSV or Parquet files of rows")],
    json_out: JsonOut = False,
) -> None:
    """Print the predicted class and the output activations for each image, or each row of a table."""
    ck = checkpoint.load(checkpoint.resolve(ckpt))
    results = _predict_rows(ck, images) if ck.table else _predict_images(ck, images)
    if json_out:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for r in results:
        if "values" in r:  # a regression's row
            print(f"{r['input']}: " + "  ".join(f"{k} {v:.6g}" for k, v in r["values"].items()))
            continue
        acts = " ".join(f"{v:.3f}" for v in r["activations"])
        named = "" if r["label"] == str(r["prediction"]) else f" {r['label']}"
        print(f"{r.get('image') or r['input']}: {r['prediction']}{named}   [{acts}]" + (f"  ({r['note']})" if r.get("note") else ""))


def _predict_rows(ck: checkpoint.Checkpoint, paths: list[str]) -> list[dict]:
    """Each row of each table: its predicted class index and name, and the output activations;
    a regression's: its targets' predicted values, in their units."""
    assert ck.table is not None
    results = []
    for path in paths:
        x, _ = table_rows.rows(ck.table, path, None)
        a = ck.network.last_layer(ck.params, x.astype(ck.network.np_dtype, copy=False))[1]  # (m, n_L)
        if ck.table.targets:
            values = ck.table.unscale_targets(a)
            results += [{"input": f"{path} row {r + 1}", "values": dict(zip(ck.table.targets, map(float, v)))}
                        for r, v in enumerate(values)]  # fmt: skip
            continue
        for r, (j, acts) in enumerate(zip(a.argmax(axis=1), a)):
            results.append({"input": f"{path} row {r + 1}", "prediction": int(j), "label": ck.table.classes[int(j)],
                            "activations": [float(v) for v in acts]})  # fmt: skip
    return results


def _predict_images(ck: checkpoint.Checkpoint, images: list[str]) -> list[dict]:
    side = int(round(np.sqrt(ck.network.sizes[0])))
    names = catalog.class_names(str(ck.meta.get("config", {}).get("data", "")), ck.network.sizes[-1])
    results = []
    for spec in images:
        pixels, note = read_image(spec, (side, side), box_for(names, side))
        if pixels.size != ck.network.sizes[0]:
            raise DataError(f"{spec}: {pixels.size} pixels, the network takes {ck.network.sizes[0]}")
        x = pixels[None, :] * ck.network.np_dtype.type(1 / 255)
        a = ck.network.last_layer(ck.params, x)[1][0]
        results.append({"image": spec, "prediction": int(a.argmax()), "label": names[int(a.argmax())],
                        "activations": [float(v) for v in a], "note": note})  # fmt: skip
    return results
