"""The runs a `nnps ui` page shows, and what it asks of each: nothing but reads.

A run is a run directory (local or any pyarrow URI) the user named, or one of the nnps
jobs of the Ray dashboard the user named (its run directory from the job's metadata, its
state from Ray). Everything is read from the run directory: config.json, metrics.jsonl,
the latest checkpoint, the W^1 snapshots. Checkpoints and the test set are cached by
name, so a page that polls does not reload them.
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnps.core import catalog, checkpoint, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import NnpsError
from nnps.core.images import box_for, centred
from nnps.core.inspect import Mistakes, forward_one, mistakes, outputs, side_of
from nnps.core.rundir import RunDir
from nnps.core.tables import TableInfo


class NotFound(NnpsError):
    """An unknown run, epoch or file: the page gets a 404 with this message."""


@dataclass
class Run:
    name: str
    uri: str
    job: dict[str, Any] | None = None  # Ray's view of it, for a job
    _cache: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dir(self) -> RunDir:
        return RunDir(self.uri, confined=True)  # nothing outside the run directory is served

    def config(self) -> dict[str, Any]:
        rd = self.dir
        if not rd.exists("config.json"):
            return {}
        try:
            return json.loads(rd.read("config.json"))
        except ValueError as e:
            raise NnpsError(f"{rd.uri_of('config.json')}: not JSON ({e})")

    def metrics(self) -> list[dict[str, Any]]:
        return self.dir.read_metrics()

    def summary(self) -> dict[str, Any]:
        config, rows = self.config(), self.metrics()
        last = rows[-1] if rows else {}
        return {"name": self.name, "uri": self.uri, "job": self.job, "config": config,
                "workers": config.get("workers"), "address": config.get("address"),
                "transport": (last.get("channels") or {}).get("steps"), "epochs": config.get("epochs"), "epochs_done": last.get("epoch", 0),
                "examples_per_s": last.get("examples_per_s"), "test_accuracy": last.get("test_accuracy"),
                "test_r2": last.get("test_r2"), "table": None if (info := self.table()) is None else
                {"features": list(info.features), "classes": list(info.classes), "targets": list(info.targets)},
                "snapshots": [e for e, _ in self.dir.weight_snapshots()], "checkpoint": self.dir.latest_checkpoint()}  # fmt: skip

    def table(self) -> TableInfo | None:
        """The newest checkpoint's table: its features, classes or targets, scaling (None: images, or no checkpoint)."""
        try:
            return self.latest()[1].table
        except NotFound:
            return None

    def latest(self) -> tuple[str, checkpoint.Checkpoint]:
        """The newest checkpoint, loaded once per name."""
        rd = self.dir
        name = rd.latest_checkpoint()
        if name is None:
            raise NotFound(f"{self.uri}: no checkpoint yet (the first is written at the end of epoch 1)")
        with self._lock:
            if self._cache.get("ckpt_name") != name:
                self._cache.update(ckpt_name=name, ckpt=checkpoint.from_bytes(rd.read(name), rd.uri_of(name)))
            return name, self._cache["ckpt"]

    def dataset(self) -> Dataset:
        """The run's test set: images, or a table's own test rows as the run read them."""
        config, info = self.config(), self.table()
        with self._lock:
            if "data" not in self._cache:
                if info is not None:
                    self._cache["data"] = validation.table_of(TrainConfig.from_dict(config), info=info)
                else:
                    self._cache["data"] = catalog.load(config.get("data") or "mnist")
            return self._cache["data"]

    def classes(self, n: int) -> list[str]:
        """Output unit j's name: a class (a table's, from its checkpoint), or a regression's target."""
        if (info := self.table()) is not None:
            return list(info.targets or info.classes)
        return catalog.class_names(str(self.config().get("data", "")), n)

    def test_row(self, k: int) -> dict[str, Any]:
        """Test row k of a table run, in its columns' own units: its features and its label."""
        ds, info = self.dataset(), self.latest()[1].table
        if info is None:
            raise NotFound(f"{self.uri}: not trained on a table; its test set is images")
        if not 0 <= k < len(ds.y_test):
            raise NotFound(f"no test row {k}: this run has {len(ds.y_test)} (0..{len(ds.y_test) - 1})")
        x = ds.x_test[k].astype(np.float64)
        if info.mean is not None and info.std is not None:
            x = x * np.asarray(info.std) + np.asarray(info.mean)
        label: Any = (info.unscale_targets(ds.y_test[k : k + 1])[0].tolist() if info.targets
                      else info.classes[int(ds.y_test[k])])  # fmt: skip
        return {"row": k, "values": x.tolist(), "label": label}

    def predict_row(self, values: np.ndarray) -> dict[str, Any]:
        """The network's answer for one row of a table, in its columns' units (scaled as training did)."""
        name, ck = self.latest()
        if ck.table is None:
            raise ValueError("this run's network takes images: send pixels")
        if values.size != len(ck.table.features):
            raise ValueError(f"{values.size} values: the network takes {len(ck.table.features)} "
                             f"({', '.join(ck.table.features[:10])}{' ...' if len(ck.table.features) > 10 else ''})")  # fmt: skip
        x = ck.table.scale(values.astype(ck.network.np_dtype).reshape(1, -1))[0]
        activations = forward_one(ck.network, ck.params, x)
        out = activations[-1]
        names = self.classes(len(out))
        answer: dict[str, Any] = {"checkpoint": name, "outputs": out.astype(float).tolist(),
                                  "activations": [a.astype(float).tolist() for a in activations[1:]]}  # fmt: skip
        if ck.table.targets:
            return {**answer, "values": dict(zip(names, ck.table.unscale_targets(out[None, :])[0].tolist()))}
        return {**answer, "prediction": int(out.argmax()), "label": names[int(out.argmax())]}

    def scatter(self, most: int = 5000) -> dict[str, Any]:
        """A regression's test rows (`most` of them, evenly spaced, where it has more): true and
        predicted values of each target, in their units."""
        name, ck = self.latest()
        ds = self.dataset()
        assert ck.table is not None
        shown = np.unique(np.linspace(0, len(ds.y_test) - 1, min(most, len(ds.y_test))).astype(int))
        predicted = ck.table.unscale_targets(outputs(ck.network, ck.params, ds.x_test[shown]))
        true = ck.table.unscale_targets(ds.y_test[shown])
        return {"checkpoint": name, "targets": list(ck.table.targets), "true": true.T.tolist(),
                "predicted": predicted.T.tolist(), "rows": len(ds.y_test)}  # fmt: skip

    def predict(self, drawn: np.ndarray) -> dict[str, Any]:
        """The network's answer for a square image drawn on the pad (any size: it is fitted
        and centred as `nnps predict` does an image file)."""
        name, ck = self.latest()
        checkpoint.images_only(ck, self.uri, "the drawing pad")
        side, inputs = int(round(drawn.size**0.5)), ck.network.sizes[0]
        if side * side != drawn.size:
            raise ValueError(f"{drawn.size} pixels: not a square image")
        shape = side_of(inputs)
        if shape[0] * shape[1] != inputs:
            raise ValueError(f"the network takes {inputs} inputs, which is no square image")
        pixels = centred(drawn.reshape(side, side), shape, box_for(self.classes(ck.network.sizes[-1]), shape[0]))
        activations = forward_one(ck.network, ck.params, pixels)
        out = activations[-1]
        return {"checkpoint": name, "prediction": int(out.argmax()), "label": self.classes(len(out))[int(out.argmax())],
                "outputs": out.astype(float).tolist(), "pixels": pixels.tolist(),
                "activations": [a.astype(float).tolist() for a in activations[1:]]}  # fmt: skip

    def test_mistakes(self) -> tuple[str, Mistakes]:
        name, ck = self.latest()
        with self._lock:
            cached = self._cache.get("mistakes")
        if cached is None or cached[0] != name:
            ds = self.dataset()
            cached = (name, mistakes(ck.network, ck.params, ds.x_test, ds.y_test))
            with self._lock:
                self._cache["mistakes"] = cached
        return cached

    def weights(self, epoch: int) -> np.ndarray:
        """W^1 after `epoch`, from the snapshots (--snapshot-weights)."""
        for e, name in self.dir.weight_snapshots():
            if e == epoch:
                return np.load(io.BytesIO(self.dir.read(name)), allow_pickle=False).astype(np.float32)
        raise NotFound(f"{self.uri}: no W^1 snapshot for epoch {epoch} (train with --snapshot-weights)")


TRIAL_RE = re.compile(r"^trial-(\d+)$")


def local_runs(uris: list[str]) -> list[Run]:
    """A Run per run directory; a sweep's directory (`nnps sweep`) gives a Run per trial."""
    runs = []
    for uri in uris:
        name = uri.rstrip("/").rsplit("/", 1)[-1] or uri
        trials = RunDir(f"{uri.rstrip('/')}/trials").numbered(TRIAL_RE) if RunDir(uri).exists("sweep.json") else []
        runs += [Run(f"{name}/{t}", f"{uri.rstrip('/')}/trials/{t}") for _, t in trials] or [Run(name, uri)]
    return runs


def job_runs(address: str) -> list[Run]:
    """The dashboard's nnps jobs, newest last, each with its Ray state."""
    from nnps.cluster.jobs import Jobs

    jobs = Jobs(address)
    out = []
    for j in jobs.list():
        run_dir = (j.metadata or {}).get("run_dir")
        if run_dir:
            state = str(getattr(j.status, "value", j.status))
            out.append(Run(j.submission_id, run_dir, {"id": j.submission_id, "status": state, "address": jobs.address}))
    return out
