"""sync, bounded (TAU 1, 2, 4) and async side by side: time to a target accuracy, examples/s,
final accuracy; then the same with one worker a straggler. One run, one local Ray.

For each network (784-30-10 sigmoid/quadratic, the seed's; 784-100-10 relu/softmax/cross-
entropy), batch (10, 100, 1,000) and worker count (2, 3), each mode trains the same budget:
--epochs epochs of the 10,000 MNIST training images the tests carry (every mode applies the
same number of updates of --batch-size examples: a sync step is one batch split over the
workers, a bounded or async update one worker's batch), evaluated on the 10,000 test images
at each epoch's end. "to target" is the time of the first epoch end at which the test
accuracy reached --target (0.98) of sync's final accuracy in the same setting; "-" if
never. Times are training seconds (metrics.jsonl's `seconds`, evaluation included).

The straggler: worker 0's process in a cgroup with a third of one CPU (cgroup v1 cpu
quota; needs root), so that it computes about 3x slower than the others, who share
this machine's 2 cores.

Run (as root): .venv/bin/python bench/consistency.py [--epochs 5] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ray

from nnps.cluster.ray_executor import RayExecutor
from nnps.core.config import TrainConfig
from nnps.core.datasets import load_path
from nnps.core.training import train

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup/cpu/nnps-straggler")
NETS = {"784-30-10": dict(hidden=(30,), lr=3.0),
        "784-100-10 relu": dict(hidden=(100,), activation="relu", output="softmax", cost="cross-entropy",
                                weight_init="scaled", lr=0.1)}  # fmt: skip
MODES = [("sync", None), ("bounded", 1), ("bounded", 2), ("bounded", 4), ("async", None)]


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def straggle(pid: int) -> None:
    """Put process `pid` in a cgroup of a third of one CPU."""
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cpu.cfs_period_us").write_text("100000")
    (CGROUP / "cpu.cfs_quota_us").write_text("33333")
    (CGROUP / "cgroup.procs").write_text(str(pid))


def release(remove: bool = False) -> None:
    """Every process back in the root cgroup (and the cgroup removed, at the end)."""
    if not CGROUP.exists():
        return
    for _ in range(50):
        pids = (CGROUP / "cgroup.procs").read_text().split()
        for pid in pids:
            try:
                Path("/sys/fs/cgroup/cpu/cgroup.procs").write_text(pid)
            except OSError:  # exited meanwhile
                pass
        if not pids:
            break
        time.sleep(0.1)
    if remove:
        try:
            CGROUP.rmdir()
        except OSError:  # a process still leaving it: an empty cgroup left behind, harmless
            pass


class Rows:
    """A Reporter keeping each epoch's metrics row."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run_start(self, *a) -> None: ...  # type: ignore[no-untyped-def]
    def epoch_start(self, *a) -> None: ...  # type: ignore[no-untyped-def]
    def advance(self, *a) -> None: ...  # type: ignore[no-untyped-def]

    def epoch_end(self, row: dict) -> None:
        self.rows.append(row)


def one(cfg: TrainConfig, data, slow: bool) -> tuple[dict, list[dict]]:  # type: ignore[no-untyped-def]
    """The run's summary and its epochs' rows."""

    def make(plan, ds):  # type: ignore[no-untyped-def]
        ex = RayExecutor(plan, ds, int(cfg.workers))
        if slow:
            straggle(ex.placement()[0][0])
        return ex

    rows = Rows()
    try:
        summary = train(cfg, data, make_executor=make, reporter=rows)
    finally:
        release()
    return summary, rows.rows


def main() -> None:
    epochs, target = int(arg("--epochs", "5")), float(arg("--target", "0.98"))
    batches = [100] if "--quick" in sys.argv else [10, 100, 1000]
    data = load_path(REPO / "tests" / "data" / "mnist-10k")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"MNIST 10k, {epochs} epochs each, target {target:.0%} of sync's final test accuracy; "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'network':>16} {'batch':>5} {'k':>2} {'straggler':>9} {'mode':>10} {'to target s':>11} {'total s':>8} "
          f"{'ex/s':>9} {'final acc':>9} {'max stale':>9}")  # fmt: skip
    for net, options in NETS.items():
        for batch in batches:
            for k in (2, 3):
                for slow in (False, True):
                    finals: dict[str, tuple[dict, list[dict]]] = {}
                    for mode, tau in MODES:
                        cfg = TrainConfig(data=str(REPO / "tests/data/mnist-10k"), batch_size=batch, epochs=epochs,
                                          workers=k, consistency=mode, staleness=tau, seed=1, warm_start=False,
                                          **options)  # fmt: skip
                        finals[f"{mode}{tau if tau is not None else ''}"] = one(cfg, data, slow)
                    goal = target * finals["sync"][0]["metrics"]["test_accuracy"]
                    for name, (s, rows) in finals.items():
                        hit = next((r["seconds"] for r in rows if r["test_accuracy"] >= goal), None)
                        m = s["metrics"]
                        stale = s.get("staleness", {}).get("max", 0)
                        print(f"{net:>16} {batch:>5} {k:>2} {'yes' if slow else 'no':>9} {name:>10} "
                              f"{hit if hit is not None else float('nan'):>11.2f} {m['seconds']:>8.2f} "
                              f"{epochs * len(data.y_train) / s['train_seconds']:>9,.0f} {m['test_accuracy']:>9.2%} "
                              f"{stale:>9}", flush=True)  # fmt: skip
    ray.shutdown()
    release(remove=True)


if __name__ == "__main__":
    main()
