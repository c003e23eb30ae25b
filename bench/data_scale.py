"""Peak memory of each process of `nnps train --partitioned` against the table's size.

Generates float32 Parquet tables of FEATURES features (and an int label) of four sizes,
doubling (default 0.5, 1, 2, 4 GB of float32 rows; row groups of 2^18 rows), and for each
trains `nnps train --partitioned --workers K` for STEPS steps, as a user would, sampling
every 0.2 s each process's peak resident set (/proc/PID/status VmHWM): the driver (the
`nnps train` process), the parameter server and each worker (found by their Ray process
titles under the driver). It prints, per size, the peaks, each worker's peak less its share
of the float32 rows, the ratio of driver and server peaks to the smallest size's, and the
time from launch to the first step (the first NNPS_PROGRESS line). With --copy it also runs
the same training without --partitioned on the two smallest sizes: the driver then reads
every row and puts them in the object store.

Run: .venv/bin/python bench/data_scale.py [--sizes-gb 0.5,1,2,4] [--workers 2] [--copy] [--dir /tmp/nnps-scale]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

FEATURES, GROUP, STEPS = 100, 1 << 18, 30


def generate(path: Path, rows: int) -> Path:
    """A directory with one Parquet file of `rows` rows (uncompressed: the disk holds what memory will)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (path / "_done").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES).astype(np.float32)
    schema = pa.schema([*(pa.field(f"f{j}", pa.float32()) for j in range(FEATURES)), pa.field("label", pa.int32())])
    with pq.ParquetWriter(path / "part-0.parquet", schema, compression="none") as out:
        for lo in range(0, rows, GROUP):
            x = rng.standard_normal((min(GROUP, rows - lo), FEATURES), dtype=np.float32)
            y = (x @ w > 0).astype(np.int32)
            out.write_table(pa.table([*(x[:, j] for j in range(FEATURES)), y], schema=schema))
    (path / "_done").touch()
    return path


def titles() -> dict[int, tuple[str, int]]:
    """pid -> (cmdline, parent pid) of every process."""
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                out[int(proc.name)] = (cmd, int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]))
            except (OSError, IndexError, ValueError):
                continue
    return out


def hwm_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


class Peaks(threading.Thread):
    """Samples the peak RSS of the driver and of its Ray actors until stopped."""

    def __init__(self, driver: int) -> None:
        super().__init__(daemon=True)
        self.driver, self.peaks, self.stop = driver, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            procs = titles()

            def under(pid: int) -> bool:
                while pid > 1:
                    if pid == self.driver:
                        return True
                    pid = procs.get(pid, ("", 0))[1]
                return False

            for pid, (cmd, _) in procs.items():
                role = "driver" if pid == self.driver else next(
                    (r for r in ("GradientWorker", "ParameterServer") if cmd.startswith(f"ray::{r}")), None)
                if role and (pid == self.driver or under(pid)):
                    self.peaks[(role, pid)] = max(self.peaks.get((role, pid), 0.0), hwm_mb(pid))
            time.sleep(0.2)


def train(data: Path, workers: int, partitioned: bool) -> dict:
    run_dir = Path(f"/tmp/nnps-scale-run-{os.getpid()}-{time.monotonic_ns()}")
    args = [sys.executable, "-m", "nnps.cli.main", "train", "--data", str(data), "--hidden", "32", "--batch-size", "1000",
            "--steps", str(STEPS), "--lr", "0.1", "--workers", str(workers), "--log-progress", "--run-dir", str(run_dir)]
    if partitioned:
        args.append("--partitioned")
    else:
        args.append("--no-warm-start")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = Peaks(proc.pid)
    peaks.start()
    first, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is None and line.startswith("NNPS_PROGRESS"):
            first = time.perf_counter() - t0
    proc.wait()
    peaks.stop.set()
    peaks.join()
    if proc.returncode:
        raise SystemExit(f"nnps train failed:\n{''.join(lines[-20:])}")
    subprocess.run(["rm", "-rf", str(run_dir)])
    by_role: dict[str, list[float]] = {}
    for (role, _), mb in sorted(peaks.peaks.items()):
        by_role.setdefault(role, []).append(mb)
    return {"first_step_s": first, **by_role}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-gb", default="0.5,1,2,4")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copy", action="store_true", help="also train without --partitioned on the two smallest sizes")
    ap.add_argument("--dir", default="/tmp/nnps-scale")
    a = ap.parse_args()
    sizes = [float(s) for s in a.sizes_gb.split(",")]
    import subprocess as sp

    commit = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# bench/data_scale.py, {time.strftime('%Y-%m-%d')}, commit {commit}, {os.cpu_count()} cores, "
          f"--workers {a.workers}, {STEPS} steps of batch 1000, {FEATURES} float32 features")
    print(f"{'mode':<12} {'GB':>5} {'rows':>11} {'driver MB':>9} {'server MB':>9} {'workers MB':>17} "
          f"{'worker - share':>15} {'drv ratio':>9} {'srv ratio':>9} {'1st step s':>10}")
    base: dict[str, float] = {}
    runs = [(True, gb) for gb in sizes] + ([(False, gb) for gb in sorted(sizes)[:2]] if a.copy else [])
    for partitioned, gb in runs:
        rows = int(gb * 2**30 / (FEATURES * 4))
        data = generate(Path(a.dir) / f"{gb:g}gb", rows)
        r = train(data, a.workers, partitioned)
        mode = "partitioned" if partitioned else "copy"
        drv, srv = r.get("driver", [0])[0], max(r.get("ParameterServer", [0]))
        wk = r.get("GradientWorker", [])
        share = rows * FEATURES * 4 / 2**20 / a.workers
        base.setdefault(mode, 0.0)
        if not base[mode]:
            base[mode], base[mode + "s"] = drv, srv
        print(f"{mode:<12} {gb:>5g} {rows:>11,} {drv:>9.0f} {srv:>9.0f} {' '.join(f'{w:.0f}' for w in wk):>17} "
              f"{' '.join(f'{w - share:+.0f}' for w in wk):>15} {drv / base[mode]:>9.2f} {srv / base[mode + 's']:>9.2f} "
              f"{r['first_step_s']:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
