"""The /dev/shm step file (worker/channels/step_file.py), without Ray: layout, sharing between
processes, a full /dev/shm refused at creation, stale files swept."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnps.worker.channels.step_file import PREFIX, SHM_DIR, Mapped, NodeBuffers, sweep_stale


@pytest.fixture
def spec():
    s = NodeBuffers.create(size=5, workers=2, dtype="float64")
    yield s
    s.unlink()


def test_layout_and_views(spec: NodeBuffers) -> None:
    m = Mapped(spec)
    assert Path(spec.path).stat().st_size == (5 + 2 * 8) * 8 == spec.nbytes
    assert m.params.shape == (5,) and [r.shape for r in m.replies] == [(8,), (8,)]
    assert type(m.params) is np.ndarray and m.params.flags.writeable  # plain arrays: Ray pickles them as such
    m.params[:] = 1.0
    m.replies[0][:] = 2.0
    m.replies[1][:] = 3.0
    # the views tile the file in order, without overlap
    flat = np.fromfile(spec.path, dtype=np.float64)
    assert flat.tolist() == [1.0] * 5 + [2.0] * 8 + [3.0] * 8


def test_writes_are_seen_by_another_process(spec: NodeBuffers) -> None:
    m = Mapped(spec)
    m.params[:] = np.arange(5.0)
    code = (
        "import sys; from nnps.worker.channels.step_file import Mapped, NodeBuffers; "
        f"m = Mapped(NodeBuffers({spec.path!r}, 5, 2, 'float64')); "
        "m.replies[1][:] = m.params.sum(); print(m.params.tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0.0, 1.0, 2.0, 3.0, 4.0]"
    assert m.replies[1].tolist() == [10.0] * 8  # written there, read here, no copy in between


def test_full_dev_shm_is_refused_at_creation() -> None:
    before = set(SHM_DIR.glob(f"{PREFIX}*"))
    with pytest.raises(OSError) as e:
        NodeBuffers.create(size=1 << 40, workers=1, dtype="float64")  # 16 TiB: beyond any /dev/shm
    assert e.value.errno == errno.ENOSPC
    assert set(SHM_DIR.glob(f"{PREFIX}*")) == before  # nothing half-made left behind


def test_sweep_removes_files_of_dead_processes_only(spec: NodeBuffers) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = SHM_DIR / f"{PREFIX}{int(gone.stdout)}-deadbeef"
    stale.write_bytes(b"x")
    assert sweep_stale() == [stale.name]
    assert not stale.exists() and Path(spec.path).exists()  # ours: this process is alive
