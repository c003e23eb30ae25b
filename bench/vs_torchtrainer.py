"""nnps against the peer a Ray user would pick: Ray Train's TorchTrainer (DDP), side by side.

Same network (784-30-10, sigmoid, quadratic cost, plain SGD), same global batch split
over the same number of workers (2 by default, one CPU each), same random data shape, in
one run on one local Ray:

    TorchTrainer  examples/s of the DDP loop (gloo on the CPU, one torch thread per worker,
                  timed inside rank 0 after warm-up steps, best of 3 blocks like nnps's rows;
                  each worker holds its own copy of the data, as a Ray Train user's loop
                  would); fit() -> first step, s
    nnps          examples/s of `nnps train --workers k` steps (RayExecutor as training
                  runs it: the `unix` channel on one node, cluster/transport.py) and in-process

And the start-up: seconds from launching `nnps train --workers k` (a fresh process: Python
imports, ray.init, data, actors) to its first step, read off its first progress line; with
the warm start (the default) also to the workers' first step, its handover line.

Needs torch and ray[train] (not nnps dependencies). Run:
    .venv/bin/python bench/vs_torchtrainer.py [--workers 2] [--batches 10,100,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from nnps.cluster.calibrate import measure

HIDDEN = (30,)
LR = 3.0


def torch_loop(config: dict) -> None:
    """Ray Train's per-worker loop: DDP over the shard of each global batch."""
    import numpy as np
    import torch

    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    local = config["batch"] // world
    rng = np.random.default_rng(rank)
    x = torch.from_numpy(rng.random((20000, 784), dtype=np.float32))
    y = torch.nn.functional.one_hot(torch.from_numpy(rng.integers(0, 10, 20000)), 10).float()
    model = ray.train.torch.prepare_model(
        torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 10), torch.nn.Sigmoid())
    )
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step(i: int) -> None:
        lo = (i * local) % (20000 - local)
        a = model(x[lo : lo + local])
        loss = 0.5 * ((a - y[lo : lo + local]) ** 2).sum(dim=1).mean()  # the quadratic cost, C = 1/2 |y - a|^2
        opt.zero_grad()
        loss.backward()  # DDP all-reduces (averages) the gradients here
        opt.step()

    step(0)
    first = time.time()
    for i in range(1, 6):
        step(i)
    block = max(1, config["steps"] // 3)  # best of 3 blocks, as nnps's rows are (calibrate.per_step)
    seconds = float("inf")
    for b in range(3):
        t0 = time.perf_counter()
        for i in range(b * block, (b + 1) * block):
            step(i)
        seconds = min(seconds, (time.perf_counter() - t0) / block)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps({"first_step": first, "seconds": seconds}))


def torchtrainer(batch: int, workers: int, steps: int) -> dict:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result.json")
        trainer = TorchTrainer(torch_loop, train_loop_config={"batch": batch, "steps": steps, "out": out},
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=False))  # fmt: skip
        t0 = time.time()
        trainer.fit()
        r = json.loads(Path(out).read_text())
    return {"ex_s": batch / r["seconds"], "to_first_step": r["first_step"] - t0}


def nnps_first_step(workers: int, warm: bool) -> tuple[float, float]:
    """Seconds from launching `nnps train --workers k` to its first applied step, and to
    its workers' first (later with a warm start: its first steps run in-process)."""
    import numpy as np

    from nnps.cluster.calibrate import random_dataset

    with tempfile.TemporaryDirectory() as d:
        ds = random_dataset()
        data = os.path.join(d, "random.npz")
        np.savez(data, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
        # Long enough that the workers take over; stopped once they have.
        cmd = [sys.executable, "-m", "nnps.cli.main", "train", "--data", data, "--workers", str(workers),
               "--batch-size", "100", "--steps", "10000000", "--epochs", "100000", "--log-progress",
               "--warm-start" if warm else "--no-warm-start", "--run-dir", os.path.join(d, "run")]  # fmt: skip
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = None
        try:
            for line in p.stdout:  # type: ignore[union-attr]
                if line.startswith("NNPS_PROGRESS ") and first is None:
                    first = float(json.loads(line.split(" ", 1)[1])["time"]) - t0
                    if not warm:
                        return first, first
                if line.startswith("warm start: ") and "go on from step" in line:
                    return first if first is not None else time.time() - t0, time.time() - t0
            raise RuntimeError(f"`{' '.join(cmd)}` printed no progress line")
        finally:
            # SIGTERM: nnps shuts its Ray down. A SIGKILL left Ray's agents running for a
            # minute or two, holding their port: the next ray.init waited 3.4 s for it.
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", default="10,100,1000")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    k = args.workers

    # Before this process starts its own Ray: cold starts.
    first, workers_first = nnps_first_step(k, warm=True)
    cold, _ = nnps_first_step(k, warm=False)
    t0 = time.time()
    ray.init(address="local", num_cpus=k, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_s = time.time() - t0
    rows: dict[int, dict] = {}
    for r in measure(HIDDEN, batches, [k]):
        if r.workers in (0, k):
            rows.setdefault(r.batch, {})["serial" if r.workers == 0 else "nnps"] = (r.examples_per_s, r.mode)
    torch_rows = {b: torchtrainer(b, k, max(20, min(300, 30000 // b))) for b in batches}
    ray.shutdown()

    print(f"784-30-10 sigmoid/quadratic/SGD, {k} workers, one local Ray on {os.cpu_count()} CPUs\n")
    print(f"{'batch':>6} {'TorchTrainer ex/s':>18} {'nnps ex/s':>10} {'path':>6} {'nnps/TT':>8} {'in-process ex/s':>16}")
    for b in batches:
        tt, (nn, mode), (ser, _) = torch_rows[b]["ex_s"], rows[b]["nnps"], rows[b]["serial"]
        print(f"{b:>6} {tt:>18,.0f} {nn:>10,.0f} {mode:>10} {nn / tt:>7.2f}x {ser:>16,.0f}")
    tt_first = min(r["to_first_step"] for r in torch_rows.values())
    print(f"\nfirst step: TorchTrainer fit() -> first step {tt_first:.1f} s (best of {len(batches)}; ray.init before "
          f"fit(): {init_s:.1f} s)\n`nnps train --workers {k}` launch -> first step {first:.1f} s "
          f"({first / tt_first:.2f}x of TorchTrainer's; in-process while Ray starts), its workers' first step "
          f"{workers_first:.1f} s ({workers_first / tt_first:.2f}x); with --no-warm-start, first step {cold:.1f} s "
          f"({cold / tt_first:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
