"""Reading a table holds its float32 rows plus one batch: the peak memory of reading a
generated Parquet file many row groups long grows with the rows' float32 size, not more.

Each size is read in a fresh process (its peak, VmHWM, measured from after the imports), and
the test compares two sizes, so that what any process holds (libraries, pyarrow's pools,
one batch) cancels: the extra peak of four times the rows is at most 1.5 times the extra
float32 rows. A reader that kept the file's float64 table beside the rows would show 3x.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = 25
MEASURE = """
import json, sys
import pyarrow.compute, pyarrow.dataset
from nnps.core import table_rows
from nnps.core.config import TrainConfig

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

base = status("VmRSS")
ds = table_rows.load(TrainConfig(data=sys.argv[1], workers=0))
print(json.dumps({"peak": status("VmHWM") - base, "rows": ds.x_train.nbytes + ds.x_test.nbytes,
                  "n": len(ds.y_train) + len(ds.y_test)}))
"""


def write(path: Path, n: int) -> None:
    """n rows of float64 features and an integer label, in row groups of 20,000 rows."""
    rng = np.random.default_rng(n)
    schema = pa.schema([*(pa.field(f"f{j}", pa.float64()) for j in range(FEATURES)), pa.field("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for lo in range(0, n, 100_000):
            x = rng.standard_normal((min(100_000, n - lo), FEATURES))
            columns = {f"f{j}": x[:, j] for j in range(FEATURES)}
            w.write_table(pa.table({**columns, "label": rng.integers(0, 3, len(x))}), row_group_size=20_000)


def peak(path: Path) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_reading_a_table_costs_its_float32_rows_and_a_batch(tmp_path: Path) -> None:
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    write(small, 400_000)
    write(large, 1_600_000)
    a, b = peak(small), peak(large)
    assert (a["n"], b["n"]) == (400_000, 1_600_000)
    assert b["rows"] == 1_600_000 * FEATURES * 4  # float32, nothing else in the Dataset's rows
    extra_peak, extra_rows = b["peak"] - a["peak"], b["rows"] - a["rows"]
    assert extra_peak < 1.5 * extra_rows, (a, b, f"{extra_peak / extra_rows:.2f}x the extra rows")
