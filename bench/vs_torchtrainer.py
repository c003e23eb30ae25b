"""nnps with 2 workers against Ray Train's TorchTrainer (DDP) with 2 workers, same net.

Both train 784-30-10 (sigmoid, quadratic cost, SGD) on random MNIST-shaped data for a
fixed number of steps at global batch sizes 10, 100 and 1,000, on one local Ray, in one
run. Reported: examples/s over the timed steps, and the seconds from the start of the
call (`trainer.fit()`, `nnps.cluster.driver.run`) to the first step completed.

Needs Ray Train and PyTorch: pip install -e ".[bench]" "ray[train]==2.60.0"
Run: .venv/bin/python bench/vs_torchtrainer.py
"""

from __future__ import annotations

import time

import numpy as np
import ray

BATCHES = [10, 100, 1000]
STEPS = {10: 300, 100: 200, 1000: 60}


def torch_loop(config: dict) -> None:
    import torch
    from ray import train
    from ray.train.torch import prepare_model

    t_start = config["t_start"]
    per_worker = config["batch"] // 2
    torch.set_num_threads(1)
    model = prepare_model(torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(train.get_context().get_world_rank())
    x = torch.randint(0, 256, (20000, 784), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (20000,), generator=g)
    eye = torch.eye(10)
    first = None
    for step in range(config["steps"] + 1):
        if step == 1:
            first, t0 = time.time() - t_start, time.perf_counter()
        idx = torch.randint(0, 20000, (per_worker,), generator=g)
        out = torch.sigmoid(model(x[idx].float() / 255.0))
        loss = 0.5 * ((out - eye[y[idx]]) ** 2).sum() / per_worker
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    train.report({"examples_per_s": config["steps"] * config["batch"] / elapsed, "first_step_s": first})


def torch_trainer(batch: int) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(torch_loop, train_loop_config={"batch": batch, "steps": STEPS[batch], "t_start": time.time()},
                           scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                           run_config=RunConfig(storage_path="/tmp/nnps-bench-ray-train"))  # fmt: skip
    return trainer.fit().metrics


def nnps(batch: int) -> dict:
    from nnps.cluster.driver import run
    from nnps.core.config import TrainConfig
    from nnps.core.progress import LineReporter

    class First(LineReporter):
        def __init__(self) -> None:
            super().__init__(out=open("/dev/null", "w"))
            self.first = None

        def advance(self, steps: int, *a) -> None:  # type: ignore[override]
            if self.first is None:
                self.first = time.time() - t_start
            super().advance(steps, *a)

    rng = np.random.default_rng(0)
    path = "/tmp/nnps-bench-random.npz"
    x = rng.integers(0, 256, (20000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 20000).astype(np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x[:1000], y_test=y[:1000])
    cfg = TrainConfig(data=path, hidden=(30,), batch_size=batch, lr=0.1, workers=2, epochs=1000, steps=STEPS[batch])
    reporter = First()
    t_start = time.time()
    run(cfg.replace(steps=1), None, reporter=reporter)  # the first step alone: its latency from the call
    first = reporter.first
    summary = run(cfg, None)
    return {"examples_per_s": STEPS[batch] * batch / summary["train_seconds"], "first_step_s": first}


def main() -> None:
    print(f"{'batch':>6} {'nnps ex/s':>10} {'TorchTrainer ex/s':>17} {'ratio':>6} {'nnps first step s':>17} "
          f"{'TorchTrainer first step s':>25}")  # fmt: skip
    for batch in BATCHES:
        n = nnps(batch)  # starts and stops its own embedded Ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        t = torch_trainer(batch)
        ray.shutdown()
        print(f"{batch:>6} {n['examples_per_s']:>10,.0f} {t['examples_per_s']:>17,.0f} "
              f"{n['examples_per_s'] / t['examples_per_s']:>5.2f}x {n['first_step_s']:>17.1f} {t['first_step_s']:>25.1f}")


if __name__ == "__main__":
    main()
