"""A trained network from Python: `train`, `load`, and a `Model` to predict and evaluate with.

The same code as the CLI's: `train` builds the TrainConfig that `nnps train` would and runs
it through the same driver (in-process or on Ray workers, written to a run directory);
`Model.evaluate` and `Model.predict` are what `nnps evaluate` and `nnps predict` print.
Data may be a path or URI (what `--data` takes), an Arrow table, or numpy arrays; rows held
in memory for training are first written to the run directory as Parquet, so that the run,
like every nnps run, can be resumed and repeated from its directory alone.

Errors are nnps's own exceptions (ConfigError, DataError, CheckpointError, ...: nnps.core.errors),
whose messages are the CLI's one-line messages.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from nnps.core import catalog, checkpoint, table_rows, validation
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.errors import ConfigError, DataError
from nnps.core.metrics import Evaluation, unpack
from nnps.core.rundir import RunDir, default_run_dir
from nnps.core.steps import ShardWorker

Rows = Union[str, Path, np.ndarray, Any]  # a path or URI, an (n, features) array, or a pyarrow.Table


@dataclass
class Model:
    """A checkpoint and the config of the run that wrote it (None if it has none nnps reads)."""

    checkpoint: checkpoint.Checkpoint
    path: str
    config: TrainConfig | None
    summary: dict[str, Any] = field(default_factory=dict)  # what `train` returned: steps, metrics, ...

    @property
    def classes(self) -> list[str]:
        """Output unit j's name: a class (a regression: its target column)."""
        ck = self.checkpoint
        if ck.table is not None:
            return list(ck.table.targets or ck.table.classes)
        return catalog.class_names(self.config.data if self.config else "", ck.network.sizes[-1])

    def outputs(self, rows: Rows) -> np.ndarray:
        """The output layer's activations a^L for each row, (n, n_L); a regression's in its targets' units."""
        ck = self.checkpoint
        x = self._inputs(rows)
        a = ck.network.last_layer(ck.params, x.astype(ck.network.np_dtype, copy=False))[1]
        return ck.table.unscale_targets(a) if ck.table is not None and ck.table.targets else a

    def predict(self, rows: Rows) -> np.ndarray:
        """Each row's class name (a classifier), or its target values (a regression: (n,) for one
        target, (n, T) for several)."""
        a = self.outputs(rows)
        if self.checkpoint.network.regression:
            return a[:, 0] if a.shape[1] == 1 else a
        return np.asarray(self.classes, dtype=object)[a.argmax(axis=1)]

    def evaluate(self, data: Rows | None = None, label: Any = None, split: str = "test") -> Evaluation:
        """Scores on the run's own `split` (test, train, validation), or on other rows with their
        labels: a table with the label column(s), or an array with `label` the labels."""
        ck = self.checkpoint
        if data is None or isinstance(data, (str, Path)):
            ds = dataset_for(self, str(data) if data is not None else None, split)
            which = "train" if split == "train" else "test"
        else:
            ds, which = self._labelled(data, label), "test"
        if ds.num_inputs != ck.network.sizes[0]:
            raise DataError(f"{ds.name}: {ds.num_inputs} inputs a row, the network takes {ck.network.sizes[0]}")
        worker = ShardWorker(ck.network, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
        return unpack(worker.evaluate(ck.params, which), ck.network, ck.table.target_std if ck.table else None)

    def _labelled(self, data: Any, label: Any) -> Dataset:
        """Rows in memory with their labels, as a Dataset of test rows: a table's (an Arrow table
        with the label column, or an array and `label`), or images (pixels 0-255 and `label`)."""
        ck = self.checkpoint
        if ck.table is None:
            x, y = np.asarray(data), np.asarray(label) if label is not None else None
            if x.ndim != 2 or x.shape[1] != ck.network.sizes[0] or y is None or y.shape != (len(x),):
                raise DataError(f"images: an array (n, {ck.network.sizes[0]}) of pixels 0-255 and label= their n "
                                f"classes; got shapes {x.shape} and {None if y is None else y.shape}")  # fmt: skip
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            return Dataset("rows", x[:0], y[:0], x, y.astype(np.int64))
        x, y = table_rows.rows(ck.table, _as_table(self, data, label), self._label(), where="the rows given")
        if y is None:
            raise DataError(f"the rows given have no label column {self._label()!r} to evaluate against")
        return Dataset("rows", x[:0], y[:0], x, y, table=ck.table)

    def _label(self) -> str:
        return self.config.label if self.config else "label"

    def _inputs(self, rows: Rows) -> np.ndarray:
        """Rows as the network's inputs: a table's standardized, images scaled to [0, 1]."""
        ck = self.checkpoint
        if ck.table is None:
            x = np.asarray(rows)
            if x.ndim != 2 or x.shape[1] != ck.network.sizes[0]:
                raise DataError(f"images: an array (n, {ck.network.sizes[0]}) of pixels 0-255, got shape {x.shape}")
            return x.astype(ck.network.np_dtype) / 255
        if isinstance(rows, (str, Path)):
            return table_rows.rows(ck.table, str(rows), None)[0]
        return table_rows.rows(ck.table, _as_table(self, rows, None), None, where="the rows given")[0]


def _as_table(model: Model, rows: Any, label: Any) -> Any:
    """An Arrow table of rows: one already, or an array (n, features) named by the model's features."""
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return rows
    info = model.checkpoint.table
    assert info is not None
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(info.features):
        raise DataError(f"the rows given: an array (n, {len(info.features)}) of features, got shape {x.shape}")
    columns: dict[str, Any] = {name: x[:, j] for j, name in enumerate(info.features)}
    if label is not None:
        names = list(info.targets) if info.targets else [model._label()]
        y = np.asarray(label)
        if len(y) != len(x) or (info.targets and y.size != len(x) * len(names)):
            raise DataError(f"the rows given: label= holds {y.shape} for {len(x)} rows of "
                            f"{len(names)} {'targets' if info.targets else 'class'} each")  # fmt: skip
        y = y.reshape(len(x), -1) if info.targets else y
        columns.update({n: y[:, t] for t, n in enumerate(names)} if info.targets else {names[0]: y})
    return pa.table(columns)


def dataset_for(model: Model, data: str | None, split: str) -> Dataset:
    """The rows `nnps evaluate` scores: the run's own data as it was read (its validation
    split carved again), or every row of another dataset or table with the same columns."""
    ck, trained = model.checkpoint, model.config
    data = data or (trained.data if trained else "mnist")
    if split not in ("test", "train", "validation"):
        raise DataError(f"--split must be test, train or validation, got {split!r}")
    if ck.table is None:
        ds = catalog.load(data)
    elif trained is not None and data == trained.data:
        ds = validation.table_of(trained, info=ck.table)
    elif split != "test":
        raise DataError(f"--split {split}: {data} is not the table the network was trained on; all its rows are tested")
    else:
        x, y = table_rows.rows(ck.table, data, model._label())
        if y is None:
            raise DataError(f"{data}: no label column {model._label()!r} to evaluate against (nnps predict needs none)")
        ds = Dataset(data.rstrip("/").rsplit("/", 1)[-1], x[:0], y[:0], x, y, table=ck.table)
    if split == "validation":  # the examples the run held out, carved again as it carved them
        if trained is None or not trained.validation_fraction:
            raise DataError(f"{model.path}: its run held out no validation split (--validation-fraction)")
        ds = validation.for_config(trained, ds)
    return ds


def load(path: str | Path) -> Model:
    """A checkpoint (.npz) or a run directory's newest checkpoint, local or a URI."""
    resolved = checkpoint.resolve(str(path))
    ck = checkpoint.load(resolved)
    return Model(ck, resolved, trained_with(ck))


def trained_with(ck: checkpoint.Checkpoint) -> TrainConfig | None:
    """The config a checkpoint's run had (None for one whose meta holds no config this nnps reads)."""
    try:
        return TrainConfig.from_dict(ck.meta["config"])
    except (KeyError, TypeError, ConfigError):
        return None


def train(data: Rows, label: Any = "label", *, run_dir: str | Path | None = None, resume: bool = False,
          test_data: Rows | None = None, hidden: Sequence[int] = (30,), quiet: bool = False,
          **options: Any) -> Model:  # fmt: skip
    """Train as `nnps train` does and return the trained Model. `data`: what `--data` takes, an
    Arrow table, or an array (n, features) with `label` its labels (classes, or targets with
    task="regress"). `options`: TrainConfig's fields (`nnps train`'s flags, with underscores)."""
    from nnps.cluster import driver

    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__) - {"data", "label", "hidden", "extra"})
    if unknown:
        raise ConfigError(f"train: no option {unknown[0]!r}; the options are nnps train's flags with underscores "
                          f"(batch_size, epochs, lr, workers, ...)")  # fmt: skip
    rd = RunDir(str(run_dir) if run_dir is not None else default_run_dir())
    task = options.get("task", "classify")
    data, label = _rows(data, label, task)
    written = {"data.parquet": data} if not isinstance(data, str) else {}
    if test_data is not None:
        test_data, _ = _rows(test_data, label if isinstance(label, str) else None, task)
        written.update({"test.parquet": test_data} if not isinstance(test_data, str) else {})
        options["test_data"] = rd.uri_of("test.parquet") if "test.parquet" in written else test_data
    config = TrainConfig(data=rd.uri_of("data.parquet") if "data.parquet" in written else data, label=label,
                         hidden=tuple(hidden), **options)  # checked before anything is written
    for name, table in written.items():
        _write(rd, name, table)
    say = (lambda _: None) if quiet else (lambda line: print(line, file=sys.stderr))
    summary = driver.run(config, rd, resume=resume, say=say)
    summary.pop("params", None)
    return Model(checkpoint.load(summary["final"]), summary["final"], config, summary)


def _rows(data: Any, label: Any, task: str) -> tuple[Any, str]:
    """(a path or an Arrow table, --label) for `data`: a path as it is, a table as it is, or
    arrays as a table (features x1..xd; labels `label`, or targets y or y1..yT)."""
    import pyarrow as pa

    if isinstance(data, (str, Path)):
        return str(data), label
    if isinstance(data, tuple) and len(data) == 2:  # (X, y)
        data, label = data
    if isinstance(data, pa.Table):
        return data, label
    x = np.asarray(data)
    if x.ndim != 2 or not isinstance(label, (np.ndarray, list, tuple)) or len(label) != len(x):
        raise ConfigError(f"train: an array of rows (n, features) needs its labels as label=, n of them; got "
                          f"shape {x.shape} and label={type(label).__name__}")  # fmt: skip
    y = np.asarray(label)
    if y.ndim == 2 and task != "regress":
        raise ConfigError(f"train: labels of shape {y.shape} are several numeric targets: give task='regress'")
    columns: dict[str, Any] = {f"x{j + 1}": x[:, j] for j in range(x.shape[1])}
    if task == "regress" and y.ndim == 2:
        targets = {f"y{t + 1}": y[:, t] for t in range(y.shape[1])}
    else:
        targets = {"y" if task == "regress" else "label": y}
    return pa.table({**columns, **targets}), ",".join(targets)


def _write(rd: RunDir, name: str, table: Any) -> None:
    """Rows held in memory, into the run directory as Parquet: what the run's --data names. A
    run directory holding other rows under that name keeps them: refused, not overwritten."""
    import io

    import pyarrow.parquet as pq

    if rd.exists(name):
        try:
            same = pq.read_table(io.BytesIO(rd.read(name)), use_threads=False).equals(table)
        except Exception:  # ArrowInvalid: not a Parquet file at all
            same = False
        if not same:
            raise ConfigError(f"{rd.uri_of(name)} holds other rows than these: train them in a new run directory "
                              f"(resuming a run needs its own rows)")  # fmt: skip
        return
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    rd.create()
    rd.write_atomic(name, buffer.getvalue())
