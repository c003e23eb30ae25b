"""Checkpoints: one `.npz` that `numpy.load(path, allow_pickle=False)` opens.

Its arrays and `meta` keys: docs/architecture.md, "Files". wl has shape (n_l, n_{l-1}), as in the
seed; meta's `progress` holds the running sums of the epoch in progress, so a resumed epoch
reports the same cost. `load` checks every array against `meta` and refuses, naming the file and
the fault, what does not fit. Writing is the run directory's job (`rundir.RunDir.write_atomic`:
a temporary name, then a rename, so a reader never sees half a checkpoint).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnps.core.errors import CheckpointError, DataError
from nnps.core.network import Network
from nnps.core.tables import TableInfo

FORMAT = 1
META_KEYS = ("format", "sizes", "activation", "output", "cost", "dtype", "step", "epoch", "seed")


@dataclass
class Checkpoint:
    network: Network
    params: np.ndarray  # flat, network.layout
    opt_state: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    table: TableInfo | None = None  # a table's features, classes and standardization (meta's "table"); None: images

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def to_bytes(ck: Checkpoint) -> bytes:
    net = ck.network
    meta = dict(ck.meta)
    meta.update(format=FORMAT, sizes=list(net.sizes), activation=net.activation, output=net.output,
                cost=net.cost, dtype=net.dtype)  # fmt: skip
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    ws, bs = net.layout.views(ck.params)
    for l, (w, b) in enumerate(zip(ws, bs), start=1):
        arrays[f"w{l}"], arrays[f"b{l}"] = w, b
    for name, state in ck.opt_state.items():
        arrays[f"opt_{name}"] = state
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def from_bytes(data: bytes, where: str) -> Checkpoint:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile's, zlib's and numpy's header parser's (SyntaxError, tokenize...) errors
        raise CheckpointError(f"{where}: not a readable checkpoint ({type(e).__name__}: {e})")
    if "meta" not in arrays:
        raise CheckpointError(f"{where}: no 'meta' array; not an nnps checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: meta is not valid JSON ({e})")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: meta lacks {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{where}: checkpoint format {meta['format']!r}, this nnps reads format {FORMAT}")
    try:
        net = Network(tuple(meta["sizes"]), meta["activation"], meta["output"], meta["cost"], meta["dtype"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: meta describes no valid network ({e})")
    params = np.empty(net.layout.size, dtype=net.np_dtype)
    ws, bs = net.layout.views(params)
    for l, (w, b) in enumerate(zip(ws, bs), start=1):
        for name, view in ((f"w{l}", w), (f"b{l}", b)):
            if name not in arrays:
                raise CheckpointError(f"{where}: array {name} missing for sizes {meta['sizes']}")
            a = arrays.pop(name)
            if a.shape != view.shape:
                raise CheckpointError(f"{where}: {name} has shape {a.shape}, meta's sizes need {view.shape}")
            if a.dtype != net.np_dtype:
                raise CheckpointError(f"{where}: {name} is {a.dtype}, meta says {net.dtype}")
            view[...] = a
    opt_state = {}
    for name in list(arrays):
        if name.startswith("opt_"):
            a = arrays.pop(name)
            if a.shape != params.shape:
                raise CheckpointError(f"{where}: optimizer state {name} has shape {a.shape}, expected {params.shape}")
            opt_state[name[4:]] = a
    if arrays:
        raise CheckpointError(f"{where}: unexpected arrays {sorted(arrays)} (more layers than meta's sizes?)")
    if not np.all(np.isfinite(params)):
        raise CheckpointError(f"{where}: parameters contain NaN or inf")
    return Checkpoint(net, params, opt_state, meta, _table(meta, net, where))


def images_only(ck: Checkpoint, where: str, what: str) -> None:
    """DataError where `what` (a picture of images, an image to classify) meets a network
    trained on a table's rows."""
    if ck.table is not None:
        raise DataError(f"{where}: its network reads rows of a table ({len(ck.table.features)} features); "
                        f"{what} works on networks trained on images")  # fmt: skip


def _table(meta: dict[str, Any], net: Network, where: str) -> TableInfo | None:
    if "table" not in meta:
        return None
    try:
        table = TableInfo.from_meta(meta["table"], where)
    except DataError as e:
        raise CheckpointError(str(e))
    if (len(table.features), table.outputs) != (net.sizes[0], net.sizes[-1]):
        outputs = f"{len(table.targets)} targets" if table.targets else f"{len(table.classes)} classes"
        raise CheckpointError(f"{where}: its table has {len(table.features)} features and {outputs}, "
                              f"its network {net.sizes[0]} inputs and {net.sizes[-1]} outputs")  # fmt: skip
    if bool(table.targets) != net.regression:
        raise CheckpointError(f"{where}: its table's {'targets' if table.targets else 'classes'} do not go with "
                              f"its {net.output} output layer")  # fmt: skip
    return table


def load(path: str) -> Checkpoint:
    """Read a checkpoint from a local path or a URI pyarrow can open (s3://, gs://, ...)."""
    from nnps.core.rundir import read_bytes

    return from_bytes(read_bytes(path), path)


def resolve(target: str) -> str:
    """A checkpoint's path or URI: `target` itself if it names a .npz, else the run
    directory's newest checkpoint (final.npz once the run is done)."""
    from nnps.core.rundir import RunDir

    if target.endswith(".npz"):
        return target
    run = RunDir(target)
    name = run.latest_checkpoint()
    if name is None:
        raise CheckpointError(f"{target}: no checkpoint yet (neither final.npz nor ckpt-*.npz)")
    return run.uri_of(name)
