"""Memory per worker against dataset size: the data is shared, not copied.

For training sets of 10k and 60k MNIST-shaped images (7.8 MB and 47 MB of uint8), it
starts 2 GradientWorkers as `nnps train --workers 2` does (the driver `ray.put`s the
data once), runs some gradient steps, then reads each worker process's
/proc/PID/smaps_rollup: unique memory (USS: private pages) and the object-store pages it
maps shared. If the workers copied the data, their USS would grow by ~39 MB from the
first row to the second.

Run: .venv/bin/python bench/worker_memory.py
"""

from __future__ import annotations

from pathlib import Path

import ray

from nnps.cluster.calibrate import random_dataset
from nnps.cluster.ray_executor import RayExecutor
from nnps.core.config import TrainConfig
from nnps.core.plan import plan_run


def rollup(pid: int) -> dict[str, int]:
    """kB fields of /proc/PID/smaps_rollup."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def main() -> None:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"{'train images':>12} {'data MB':>8} {'worker':>6} {'USS MB':>7} {'shared MB':>9} {'RSS MB':>7}")
    for n in (10_000, 60_000):
        ds = random_dataset(n=n)
        x = ds.x_train
        plan = plan_run(TrainConfig(data="random", hidden=(30,), batch_size=1000, lr=0.1), ds, None, False)
        ex = RayExecutor(plan, ds, 2)
        ex.run(0, 3 * plan.steps_per_epoch)  # three epochs: every row of the data is touched
        ex.snapshot()
        for i, (pid, _) in enumerate(ex.placement()):
            r = rollup(pid)
            uss = (r["Private_Clean"] + r["Private_Dirty"]) / 1024
            shared = (r["Shared_Clean"] + r["Shared_Dirty"]) / 1024
            print(f"{n:>12,} {x.nbytes / 1e6:>8.1f} {i:>6} {uss:>7.1f} {shared:>9.1f} {r['Rss'] / 1024:>7.1f}")
        ex.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
