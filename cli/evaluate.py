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
from nnps.core import catalog, checkpoint, validation
from nnps.core.config import TrainConfig
from nnps.core.images import box_for, read_image
from nnps.core.errors import ConfigError, DataError
from nnps.core.shard import ShardWorker, unpack_evaluation


@handle_errors
def evaluate(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint); local path or URI")],
    data: Annotated[Optional[str], typer.Option(help="Dataset name or path (default: the one the checkpoint was trained on)")] = None,
    split: Annotated[str, typer.Option(help="test, train, or validation (a run that held one out)")] = "test",
    json_out: JsonOut = False,
) -> None:
    """Accuracy, mean cost and confusion matrix of a checkpoint on a dataset."""
    if split not in ("test", "train", "validation"):
        raise DataError(f"--split must be test, train or validation, got {split!r}")
    ckpt = checkpoint.resolve(ckpt)
    ck = checkpoint.load(ckpt)
    trained = trained_with(ck)
    data = data or (trained.data if trained else "mnist")
    ds, asked = catalog.load(data), split
    if split == "validation":  # the examples the run held out, carved again as it carved them
        if trained is None or not trained.validation_fraction:
            raise DataError(f"{ckpt}: its run held out no validation split (--validation-fraction)")
        ds, split = validation.for_config(trained, ds), "test"
    if ds.num_inputs != ck.network.sizes[0]:
        raise DataError(f"{data}: images have {ds.num_inputs} pixels, the checkpoint's network takes {ck.network.sizes[0]}")
    worker = ShardWorker(ck.network, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    n = ck.network.sizes[-1]
    cost, confusion = unpack_evaluation(worker.evaluate(ck.params, split), n)
    count = int(confusion.sum())
    names = catalog.class_names(data, n)
    result = {"checkpoint": ckpt, "data": data, "split": asked, "examples": count,
              "accuracy": float(np.trace(confusion)) / count, "cost": cost / count,
              "confusion": confusion.tolist(), "classes": names}  # fmt: skip
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = Console()
    console.print(f"{ds.name} {asked}: {count} examples, accuracy {result['accuracy']:.2%}, mean cost {result['cost']:.4f}")
    table = Table(title="confusion (rows: true label, columns: predicted)")
    table.add_column("")
    for j in range(n):
        table.add_column(str(j), justify="right")
    for i in range(n):
        table.add_row(str(i) if names[i] == str(i) else f"{i} {names[i]}", *(str(v) for v in confusion[i]))
    console.print(table)


def trained_with(ck: checkpoint.Checkpoint) -> TrainConfig | None:
    """The config a checkpoint's run had (None for one whose meta holds no config this nnps reads)."""
    try:
        return TrainConfig.from_dict(ck.meta["config"])
    except (KeyError, TypeError, ConfigError):
        return None


@handle_errors
def predict(
    ckpt: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A checkpoint .npz or a run directory (its newest checkpoint)")],
    images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="PNG/PGM/... files, or IDXFILE:INDEX")],
    json_out: JsonOut = False,
) -> None:
    """Print the predicted class and the output activations for each image."""
    ck = checkpoint.load(checkpoint.resolve(ckpt))
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
    if json_out:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for r in results:
        acts = " ".join(f"{v:.3f}" for v in r["activations"])
        named = "" if r["label"] == str(r["prediction"]) else f" {r['label']}"
        print(f"{r['image']}: {r['prediction']}{named}   [{acts}]" + (f"  ({r['note']})" if r["note"] else ""))
