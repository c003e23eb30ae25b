"""The data memory of a sweep: 1 trial at a time against 8 at once, side by side in one run.

A sweep puts its data in Ray's object store once (cluster/sweep_runner.shared_data) and every
trial maps those pages read-only; a trial that copied them would hold the data again in its
own anonymous memory. This runs the same 8-trial sweep (1 epoch each) twice on one Ray with 8
logical CPUs (oversubscribed where the machine has fewer: memory, not speed, is measured),
`--concurrency 1` then `--concurrency 8`, and samples every 0.2 s:

    store    Ray's object store bytes in use (its own count, memory_summary)
    private  the trial processes' anonymous memory (RssAnon) above what the same processes
             held when first seen, summed: each trial's working memory (its network, a
             batch, the validation pass's chunk of 5000 rows in floats), and a data copy if
             one were made

Data memory = store + (trials that hold a copy, as they report it) x the data's size; the
private growth is printed beside it, as what 8 trials cost beyond the data. Goal: 8 at once
hold <= 1.1x the data memory of one. Run:

    .venv/bin/python bench/sweep_memory.py [--data fashion-mnist]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import ray

TRIALS = "ray::ImplicitFunc"  # Tune's function trainables' processes


def store_bytes() -> float:
    from ray._private.internal_api import memory_summary

    m = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(stats_only=True))
    return float(m.group(1)) * 2**20 if m else 0.0


def trial_anon() -> dict[int, float]:
    """pid -> RssAnon bytes of each trial process."""
    out = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(TRIALS.encode()):
                kb = re.search(r"RssAnon:\s+(\d+) kB", (proc / "status").read_text())
                out[int(proc.name)] = float(kb.group(1)) * 1024 if kb else 0.0
        except OSError:
            pass
    return out


def measure(data: str, concurrency: int, where: Path) -> dict[str, float]:
    from nnps.cli.sweep import run, spec_of

    spec = spec_of(["--data", data, "--hidden", "30", "--lr", "0.5,1,2,3,4,5,6,7", "--workers", "0"], 1, None,
                   "fifo", 1, 4.0, 0.1, str(concurrency))  # fmt: skip
    peak = {"store": 0.0, "private": 0.0}
    first: dict[int, float] = {}  # each trial process's RssAnon when first seen (before its data is read)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            anon = trial_anon()
            for pid, b in anon.items():
                first.setdefault(pid, b)
            peak["store"] = max(peak["store"], store_bytes())
            peak["private"] = max(peak["private"], sum(max(0.0, b - first[pid]) for pid, b in anon.items()))
            time.sleep(0.2)

    t = threading.Thread(target=sample)
    t.start()
    try:
        result = run(spec, where / f"c{concurrency}", False, None)
    finally:
        done.set()
        t.join()
    peak["copies"] = float(len(result.get("data", {}).get("trials_with_a_copy", [])))
    from nnps.cluster.sweep_spec import sweep_data

    d = sweep_data(spec)
    peak["data"] = peak["store"] + peak["copies"] * sum(a.nbytes for a in (d.x_train, d.y_train, d.x_test, d.y_test))
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    args = ap.parse_args()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as d:
            one, eight = (measure(args.data, c, Path(d)) for c in (1, 8))
    finally:
        ray.shutdown()
    mib = 2**20
    print(f"data {args.data}; 8 trials of 1 epoch; peaks sampled every 0.2 s")
    print("| trials at once | object store MiB | trials with a copy | data memory MiB | trials' working memory MiB |")
    print("| --- | --- | --- | --- | --- |")
    for n, m in (("1", one), ("8", eight)):
        print(f"| {n} | {m['store'] / mib:.1f} | {m['copies']:.0f} | {m['data'] / mib:.1f} | {m['private'] / mib:.0f} |")
    print(f"data memory, 8 at once / 1 at a time: {eight['data'] / max(one['data'], 1.0):.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
