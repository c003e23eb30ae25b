"""`nnps evaluate` and `nnps predict`: use a checkpoint."""

from __future__ import annotations

from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import nnps
from nnps.cli.errors import handle_errors
from nnps.cli.formatting import print_json
from nnps.cli.options import JsonOut
from nnps.core import catalog, checkpoint
from nnps.core.errors import DataError
from nnps.core.images import box_for, read_image
from nnps.core.metrics import Evaluation, describe


@handle_errors
def evaluate(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint); local path or URI")],
    data: Annotated[Optional[str], typer.Option(help="Dataset name or path (default: the one the checkpoint was trained on)")] = None,
    split: Annotated[str, typer.Option(help="test, train, or validation (a run that held one out)")] = "test",
    json_out: JsonOut = False,
) -> None:
    """Accuracy, mean cost and confusion matrix of a checkpoint on a dataset (a regression's: MSE, MAE, R^2)."""
    model = nnps.load(ckpt)
    e = model.evaluate(data, split=split)
    data = data or (model.config.data if model.config else "mnist")
    result = {"checkpoint": model.path, "data": data, "split": split, **describe(e),
              ("targets" if model.checkpoint.network.regression else "classes"): model.classes}  # fmt: skip
    if json_out:
        return print_json(result)
    _show(data.rstrip("/").rsplit("/", 1)[-1], split, e, model.classes)


def _show(name: str, split: str, e: Evaluation, names: list[str]) -> None:
    console = Console()
    if e.confusion is None:
        console.print(f"{name} {split}: {e.examples} examples, MSE {e.mse:.6g}, MAE {e.mae:.6g}, R^2 {e.r2:.4f} "
                      f"({', '.join(names)}), mean cost {e.cost:.4f}", soft_wrap=True)  # fmt: skip
        return
    console.print(f"{name} {split}: {e.examples} examples, accuracy {e.accuracy:.2%}, mean cost {e.cost:.4f}",
                  soft_wrap=True)  # fmt: skip
    n, confusion = len(e.confusion), e.confusion
    table = Table(title="confusion (rows: true label, columns: predicted)")
    table.add_column("")
    for j in range(n):
        table.add_column(str(j), justify="right")
    for i in range(n):
        table.add_row(str(i) if names[i] == str(i) else f"{i} {names[i]}", *(str(v) for v in confusion[i]))
    console.print(table)


@handle_errors
def predict(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint)")],
    images: Annotated[list[str], typer.Argument(metavar="INPUT...", help="PNG/PGM/... files, or IDXFILE:INDEX; for a network trained on a table: CSV or Parquet files of rows")],
    json_out: JsonOut = False,
) -> None:
    """Print the predicted class and the output activations for each image, or each row of a table."""
    model = nnps.load(ckpt)
    results = _predict_rows(model, images) if model.checkpoint.table else _predict_images(model.checkpoint, images)
    if json_out:
        return print_json(results)
    for r in results:
        if "values" in r:  # a regression's row
            print(f"{r['input']}: " + "  ".join(f"{k} {v:.6g}" for k, v in r["values"].items()))
            continue
        acts = " ".join(f"{v:.3f}" for v in r["activations"])
        named = "" if r["label"] == str(r["prediction"]) else f" {r['label']}"
        print(f"{r.get('image') or r['input']}: {r['prediction']}{named}   [{acts}]" + (f"  ({r['note']})" if r.get("note") else ""))


def _predict_rows(model: nnps.Model, paths: list[str]) -> list[dict]:
    """Each row of each table: its predicted class index and name, and the output activations;
    a regression's: its targets' predicted values, in their units."""
    results = []
    for path in paths:
        a = model.outputs(path)  # (m, n_L)
        if model.checkpoint.network.regression:
            results += [{"input": f"{path} row {r + 1}", "values": dict(zip(model.classes, map(float, v)))}
                        for r, v in enumerate(a)]  # fmt: skip
            continue
        for r, (j, acts) in enumerate(zip(a.argmax(axis=1), a)):
            results.append({"input": f"{path} row {r + 1}", "prediction": int(j), "label": model.classes[int(j)],
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
