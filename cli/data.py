"""`nnps data ...`: download, inspect and convert datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console

from nnps.cli.errors import handle_errors
from nnps.cli.options import JsonOut
from nnps.cli.formatting import download_progress, print_json
from nnps.core import catalog
from nnps.core.datasets import write_parquet_dir

app = typer.Typer(help="Download, inspect and convert datasets.", no_args_is_help=True)


@app.command()
@handle_errors
def download(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(catalog.CATALOG)}")],
    mirror: Annotated[Optional[list[str]], typer.Option(help="Base URL to fetch from instead of the catalog's mirrors (repeatable)")] = None,
    dest: Annotated[Optional[Path], typer.Option(help="Directory to write to (default: the nnps data cache)")] = None,
) -> None:  # fmt: skip
    """Download a catalog dataset, verifying every file's SHA-256."""
    e = catalog.entry(name)
    where = catalog.download(e, dest or catalog.cache_dir() / name, tuple(mirror) if mirror else None,
                             progress=download_progress(Console(stderr=True)))  # fmt: skip
    print(f"{name}: verified in {where}")


@app.command()
@handle_errors
def info(
    source: Annotated[str, typer.Argument(help="Catalog name or path")],
    json_out: JsonOut = False,
) -> None:
    """Counts, image shape and class balance of a dataset."""
    ds = catalog.load(source)
    out = {"name": ds.name, "source": source, "image_shape": list(ds.image_shape), "fingerprint": ds.fingerprint,
           "train": len(ds.y_train), "test": len(ds.y_test),
           "train_classes": np.bincount(ds.y_train, minlength=10).tolist(),
           "test_classes": np.bincount(ds.y_test, minlength=10).tolist()}  # fmt: skip
    if json_out:
        return print_json(out)
    print(f"{out['name']}: {out['train']} train, {out['test']} test, images {ds.image_shape[0]}x{ds.image_shape[1]} uint8")
    print(f"fingerprint {out['fingerprint']}")
    print("class   " + " ".join(f"{c:>6}" for c in range(10)))
    print("train   " + " ".join(f"{c:>6}" for c in out["train_classes"]))
    print("test    " + " ".join(f"{c:>6}" for c in out["test_classes"]))


@app.command()
@handle_errors
def prepare(
    source: Annotated[str, typer.Argument(help="Catalog name or path")],
    out: Annotated[Path, typer.Option(help="Directory for train.parquet and test.parquet")],
) -> None:
    """Convert a dataset to Parquet (image: raw bytes, label: uint8)."""
    ds = catalog.load(source)
    for path in write_parquet_dir(ds, out):
        print(path)
