"""What a serving replica holds and does, apart from HTTP: the weights it answers with,
how it follows a run's newer checkpoints, and how a request's rows become the network's
input. No Ray Serve here (cluster/serve_app.py wires this into a deployment), so the
math of a response is tested without a server.

Inputs are in the data's own units, as `nnps predict` reads them: pixels 0-255, which the
network sees divided by 255, or a table's feature values, which it sees standardized with
the training rows' statistics (the checkpoint's); a regression's outputs are given back in
its targets' units. A response names the step of the weights that answered, so a client
can tell which checkpoint it got.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnps.core import catalog, checkpoint
from nnps.core.errors import DataError, NnpsError
from nnps.core.images import box_for, decode, side_of
from nnps.core.network import Network
from nnps.core.rundir import RunDir
from nnps.core.tables import TableInfo

MAX_ROWS = 1024  # rows in one request; a larger one is refused with 413
MAX_BODY = 8 * 1024 * 1024  # bytes of one request body
FOLLOW_EVERY_S = 0.5  # how often a replica lists a followed run directory
DTYPES = {"FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}


class BadRequest(NnpsError):
    """A request the client must fix: answered with a 4xx and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Weights:
    """One checkpoint's network as a replica answers with it; replaced whole, never edited."""

    network: Network
    params: np.ndarray
    step: int
    source: str  # the checkpoint's name or path
    classes: tuple[str, ...]  # output unit j's name: a class, or a regression's target
    table: TableInfo | None = None  # a table network's features and scaling; None: images

    @classmethod
    def of(cls, ck: checkpoint.Checkpoint, source: str) -> "Weights":
        if ck.table is not None:
            names = ck.table.targets or ck.table.classes
        else:
            names = tuple(catalog.class_names(str(ck.meta.get("config", {}).get("data", "")), ck.network.sizes[-1]))
        return cls(ck.network, ck.params, ck.step, source, tuple(names), ck.table)

    @property
    def inputs(self) -> int:
        return self.network.sizes[0]

    def forward(self, rows: np.ndarray) -> np.ndarray:
        """Output activations (m, n_L) for rows (m, n_0) in the data's units, as `nnps predict`
        computes them; a regression's in its targets' units."""
        x = rows.astype(self.network.np_dtype)  # (m, n_0), a copy to scale
        if self.table is None:
            x *= self.network.np_dtype.type(1 / 255)
            return self.network.last_layer(self.params, x)[1]  # (m, n_L)
        a = self.network.last_layer(self.params, self.table.scale(x))[1]
        return self.table.unscale_targets(a) if self.table.targets else a


def load_weights(target: str) -> Weights:
    """A checkpoint file's weights, or a run directory's newest checkpoint's."""
    uri = checkpoint.resolve(target)
    return Weights.of(checkpoint.load(uri), target if target.endswith(".npz") else uri.rsplit("/", 1)[-1])


class Follower:
    """Swaps a replica's weights to each newer checkpoint of a run directory as training
    writes it. The swap is one reference assignment: a batch reads `current` once, so no
    response is computed from a mix of two checkpoints."""

    def __init__(self, target: str, first: Weights, every_s: float = FOLLOW_EVERY_S) -> None:
        self.current = first
        self.swaps = 0
        self._run = RunDir(target)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nnps-follow", daemon=True)
        self._thread.start()

    def _newer(self) -> Weights | None:
        kept = self._run.checkpoints()
        if kept and kept[-1][0] > self.current.step:
            name = kept[-1][1]
        elif self._run.exists("final.npz") and self.current.source != "final.npz":
            name = "final.npz"
        else:
            return None
        w = Weights.of(checkpoint.load(self._run.uri_of(name)), name)
        return w if w.step >= self.current.step else None

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                newer = self._newer()
            except NnpsError:  # deleted between listing and reading (only 3 are kept), or half-visible: next time
                continue
            if newer is not None and newer.network.sizes == self.current.network.sizes:
                self.current = newer
                self.swaps += 1

    def close(self) -> None:
        self._stop.set()


def tensor_of(body: Any, model: str, inputs: int, pixels: bool = True) -> np.ndarray:
    """The rows of an Open Inference Protocol v2 request: one input tensor (m, inputs)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise BadRequest(f'model {model} takes one input tensor: {{"inputs": [{{"name", "shape", "datatype", "data"}}]}}')
    t = body["inputs"][0]
    if not isinstance(t, dict) or not all(k in t for k in ("shape", "datatype", "data")):
        raise BadRequest("an input tensor needs shape, datatype and data")
    if t["datatype"] not in DTYPES:
        raise BadRequest(f"datatype {t['datatype']!r} is not one of {', '.join(DTYPES)}")
    shape = t["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise BadRequest(f"shape {shape!r} is not [rows, {inputs}]")
    data = t["data"]
    try:
        a = np.asarray(data, dtype=DTYPES[t["datatype"]])
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"data is not a list of {t['datatype']} numbers")
    return checked(a.reshape(-1) if a.ndim else a, inputs, shape, pixels)


def rows_of(body: Any, inputs: int, features: tuple[str, ...] | None = None) -> np.ndarray:
    """The rows of a plain /predict JSON request: {"rows": [[...], ...]} (or "instances");
    for a table network (`features`), a row may also be an object of values by column name."""
    rows = body.get("rows", body.get("instances")) if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows:
        what = f"{inputs} values of {', '.join(features[:5])}{' ...' if len(features) > 5 else ''}" if features \
            else f"{inputs} pixel values 0-255"  # fmt: skip
        raise BadRequest(f'expected {{"rows": [[{what}], ...]}}')
    named = bool(features) and all(isinstance(r, dict) for r in rows)
    if named:
        rows = [by_name(r, features) for r in rows]  # type: ignore[arg-type]
    try:
        a = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest("a row's values must be numbers" if named else f"rows must be lists of {inputs} numbers each")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise BadRequest(f"rows must be lists of {inputs} numbers each")
    return checked(a.reshape(-1), inputs, list(a.shape), features is None)


def by_name(row: dict[str, Any], features: tuple[str, ...]) -> list[Any]:
    """A row given as {column: value} in the network's feature order."""
    missing = [f for f in features if f not in row]
    if missing:
        raise BadRequest(f"a row lacks column {missing[0]!r}; the network takes {', '.join(features[:20])}")
    return [row[f] for f in features]


def checked(flat: np.ndarray, inputs: int, shape: list[int], pixels: bool = True) -> np.ndarray:
    """`flat` as (rows, inputs) if `shape` says so and the values are pixels (or, for a table,
    finite numbers)."""
    rows = shape[0]
    if len(shape) != 2 or shape[1] != inputs:
        raise BadRequest(f"shape {shape} does not fit the network: it takes [rows, {inputs}]")
    if rows > MAX_ROWS:
        raise BadRequest(f"{rows} rows in one request; at most {MAX_ROWS}", status=413)
    if flat.size != rows * inputs:
        raise BadRequest(f"data holds {flat.size} values, shape {shape} needs {rows * inputs}")
    if not np.all(np.isfinite(flat)):
        raise BadRequest("values must be finite numbers")
    if pixels and (flat.min() < 0 or flat.max() > 255):
        raise BadRequest("pixel values must be finite and within 0-255")
    return flat.reshape(rows, inputs)


def answers(w: Weights, out: np.ndarray) -> list[dict[str, Any]]:
    """/predict's per-row answer: class, its name, the output activations (probabilities for
    softmax); a regression's: each target's value."""
    if w.network.regression:
        return [{"values": dict(zip(w.classes, map(float, a)))} for a in out]
    rows = []
    for a in out:
        c = int(a.argmax())
        row: dict[str, Any] = {"class": c, "label": w.classes[c], "activations": [float(v) for v in a]}
        if w.network.output == "softmax":
            row["probabilities"] = row["activations"]
        rows.append(row)
    return rows


def image_rows(data: bytes, name: str, inputs: int, classes: list[str]) -> np.ndarray:
    """An uploaded image file as one row of pixels, read as `nnps predict` reads a file."""
    try:
        shape = side_of(inputs)
        pixels, _ = decode(data, name, shape, box_for(classes, shape[0]))
    except DataError as e:
        raise BadRequest(str(e), status=415 if "not an image" in str(e) else 400)
    return pixels[None, :]
