"""A run directory: `config.json`, `metrics.jsonl`, checkpoints and `final.npz`.

The directory is a local path or any URI that pyarrow's filesystems open (`s3://`,
`gs://`, `hdfs://`, ...), so a cluster run can write to shared storage, as Ray Train's
`storage_path` does. Every write is atomic: the bytes go to a temporary name, then a move,
so a crash never leaves a half-written checkpoint or metrics file that looks complete.
(`metrics.jsonl` is small and rewritten whole, because object stores cannot append.)
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from nnps.core.errors import CheckpointError, NnpsError

CHECKPOINT_RE = re.compile(r"^ckpt-(\d{9})\.npz$")
KEEP_CHECKPOINTS = 3  # older step checkpoints are deleted; final.npz always stays
SNAPSHOT_NAME = "w1-epoch-{epoch:04d}.npy"  # W^1 after each epoch, with --snapshot-weights (epoch 0: the start)
SNAPSHOT_RE = re.compile(r"^w1-epoch-(\d{4})\.npy$")


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid, ArrowNotImplementedError, OSError
        raise NnpsError(f"{uri}: cannot open this location ({e})")


def read_bytes(uri: str) -> bytes:
    fs, path = _filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{uri}: no such file")
    except OSError as e:
        raise CheckpointError(f"{uri}: cannot read ({e})")


def write_atomically(path: str | Path, data: bytes) -> None:
    """A local file whole or not at all: written to a temporary name, synced, then renamed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def default_run_dir() -> str:
    """runs/<local time>, or runs/<local time>-N where that is taken: where a run goes when no --run-dir is given."""
    import time

    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return str(path)


class RunDir:
    def __init__(self, uri: str, confined: bool = False) -> None:
        """`confined`: read only files that are inside the directory (a symbolic link in a
        local run directory that leads out of it is refused): for `nnps ui`, which serves
        what it reads to whoever reaches its port."""
        self.uri, self.confined = uri, confined
        self.fs, self.path = _filesystem(uri)
        self._lines: dict[int, tuple[dict[str, Any], str]] = {}  # id(row) -> (row, its line): write_metrics

    def __str__(self) -> str:
        return self.uri

    def join(self, name: str) -> str:
        return f"{self.path}/{name}"

    def uri_of(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    def _fault(self, what: str, e: OSError, name: str | None = None) -> NnpsError:
        """A filesystem's error (access denied, no such bucket, unreachable) as one line."""
        where = self.uri_of(name) if name else self.uri
        return NnpsError(f"{where}: cannot {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")

    def exists(self, name: str) -> bool:
        try:
            return self.fs.get_file_info(self.join(name)).type == pafs.FileType.File
        except OSError as e:
            raise self._fault("look up", e, name)

    def create(self) -> bool:
        """Make the directory; whether it was not there before."""
        try:
            made = self.fs.get_file_info(self.path).type == pafs.FileType.NotFound
            self.fs.create_dir(self.path, recursive=True)
        except OSError as e:
            raise self._fault("create run directory", e)
        return made

    def remove_if_empty(self) -> None:
        try:
            if not self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)):
                self.fs.delete_dir(self.path)
        except OSError:  # best effort: the error being raised says what went wrong
            pass

    def write_atomic(self, name: str, data: bytes) -> None:
        tmp = self.join(f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            if isinstance(self.fs, pafs.LocalFileSystem):
                os.replace(tmp, self.join(name))  # atomic on POSIX, also over an existing file
            else:
                self.fs.move(tmp, self.join(name))
        except OSError as e:
            raise self._fault("write", e, name)
        finally:
            try:
                if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self.fs.delete_file(tmp)
            except OSError:  # the write's own error, above, says what went wrong
                pass

    def read(self, name: str) -> bytes:
        if "://" in self.uri:
            return read_bytes(self.uri_of(name))
        path = Path(self.join(name))
        if self.confined and not path.resolve().is_relative_to(Path(self.path).resolve()):
            raise NnpsError(f"{self.uri_of(name)}: a link out of the run directory; not read")
        return path.read_bytes()

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self.join(name))
        except OSError as e:
            raise self._fault("delete", e, name)

    # config and metrics

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.exists("metrics.jsonl"):
            return []
        try:
            rows = [json.loads(line) for line in self.read("metrics.jsonl").decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise NnpsError(f"{self.uri_of('metrics.jsonl')}: not valid JSON lines ({e})")
        if not all(isinstance(r, dict) for r in rows):
            raise NnpsError(f"{self.uri_of('metrics.jsonl')}: a line that is not a JSON object")
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """metrics.jsonl, the whole file each time (written atomically, as an object store
        needs); a row written before, the same object, is not encoded again, so a run of
        many short epochs costs a line per epoch, not the file per epoch."""
        known = self._lines
        lines = {id(r): known[id(r)] if id(r) in known and known[id(r)][0] is r else
                 (r, json.dumps(r, sort_keys=True) + "\n") for r in rows}  # fmt: skip
        self._lines = lines
        self.write_atomic("metrics.jsonl", "".join(lines[id(r)][1] for r in rows).encode())

    # checkpoints

    def numbered(self, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
        """(number, name) of the files whose name `pattern` matches (its group 1 a number), in order."""
        try:
            listed = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except OSError as e:
            raise self._fault("list", e)
        return sorted((int(m.group(1)), info.base_name) for info in listed if (m := pattern.match(info.base_name)))

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, name) of the step checkpoints present, oldest first."""
        return self.numbered(CHECKPOINT_RE)

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint's name: final.npz once the run is done, else the last step's."""
        if self.exists("final.npz"):
            return "final.npz"
        kept = self.checkpoints()
        return kept[-1][1] if kept else None

    def weight_snapshots(self) -> list[tuple[int, str]]:
        """(epoch, name) of the first layer's weights kept after each epoch (--snapshot-weights)."""
        return self.numbered(SNAPSHOT_RE)

    def save_weight_snapshot(self, epoch: int, w1: Any) -> None:
        """W^1 after `epoch` as a float16 .npy (pictures need no more precision; half the bytes)."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(w1, dtype=np.float16), allow_pickle=False)
        self.write_atomic(SNAPSHOT_NAME.format(epoch=epoch), buf.getvalue())

    def save_checkpoint(self, step: int, data: bytes) -> str:
        name = f"ckpt-{step:09d}.npz"
        self.write_atomic(name, data)
        for _, old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            self.delete(old)
        return self.uri_of(name)
