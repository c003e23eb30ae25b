"""`nnps sweep` against the ways a user would otherwise search, side by side in one run.

The same 16 configurations of the seed's network (784-H-10 sigmoid, quadratic cost, plain
SGD; lr x hidden x batch size), the same epochs, the same validation split:

    (a) nnps sweep --scheduler fifo        every trial to the end, one in-process trial per CPU
    (b) 16 nnps train runs, one after another (each a fresh process, as a shell loop runs them)
    (c) Ray Tune with Ray Train's TorchTrainer in each trial (the pattern Ray's docs give),
        the same network in torch, one TorchTrainer worker per trial
    (d) nnps sweep --scheduler asha        epochs trained and the best configuration against (a)

Wall seconds of each, from launch to the end, and the ratios the goals name. Needs torch
and ray[train] for (c) (`pip install -e '.[bench]'`); --skip-torch leaves it out. Run:

    .venv/bin/python bench/sweep.py [--epochs 3] [--data fashion-mnist]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NNPS = str(Path(sys.executable).parent / "nnps")
LRS, HIDDEN, BATCHES = (0.5, 1.0, 2.0, 4.0), (30, 100), (10, 50)


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def grid_flags() -> list[str]:
    return ["--lr", ",".join(map(str, LRS)), "--hidden", ",".join(map(str, HIDDEN)),
            "--batch-size", ",".join(map(str, BATCHES))]  # fmt: skip


def nnps_sweep(data: str, epochs: int, scheduler: str, where: Path) -> tuple[float, dict]:
    s = where / f"sweep-{scheduler}"
    wall = timed([NNPS, "sweep", "--data", data, *grid_flags(), "--epochs", str(epochs), "--scheduler", scheduler,
                  "--run-dir", str(s)])  # fmt: skip
    return wall, json.loads((s / "result.json").read_text())


def trains_in_a_row(data: str, epochs: int, where: Path) -> float:
    t0 = time.perf_counter()
    for i, (lr, h, b) in enumerate(itertools.product(LRS, HIDDEN, BATCHES)):
        subprocess.run([NNPS, "train", "--data", data, "--lr", str(lr), "--hidden", str(h), "--batch-size", str(b),
                        "--epochs", str(epochs), "--workers", "0", "--validation-fraction", "0.1",
                        "--run-dir", str(where / f"train-{i}")], check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def torch_loop(cfg: dict) -> None:
    """One TorchTrainer worker: the seed network in torch, SGD on the mean quadratic cost."""
    import numpy as np
    import torch
    from ray import train

    torch.set_num_threads(1)
    z = np.load(cfg["data"])
    x, y, xv, yv = (torch.from_numpy(z[k]) for k in ("x", "y", "xv", "yv"))
    model = train.torch.prepare_model(torch.nn.Sequential(
        torch.nn.Linear(784, cfg["hidden"]), torch.nn.Sigmoid(), torch.nn.Linear(cfg["hidden"], 10), torch.nn.Sigmoid()))
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    g = torch.Generator().manual_seed(0)
    for epoch in range(cfg["epochs"]):
        for idx in torch.randperm(len(y), generator=g).split(cfg["batch_size"]):
            out = model(x[idx])
            loss = 0.5 * ((out - torch.nn.functional.one_hot(y[idx].long(), 10)) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        train.report({"epoch": epoch + 1, "val_accuracy": acc})


def tune_torchtrainer(data: str, epochs: int, where: Path) -> float:
    """(c): a Tune function trial per configuration that fits a TorchTrainer, 2 at a time."""
    import numpy as np
    import ray
    from ray import train, tune
    from ray.train.torch import TorchTrainer

    from nnps.core import catalog, validation

    ds = validation.carve(catalog.load(data), 0.1, 0)
    arrays = where / "data.npz"
    np.savez(arrays, x=ds.x_train / np.float32(255), y=ds.y_train, xv=ds.x_test / np.float32(255), yv=ds.y_test)

    def trial(cfg: dict) -> None:
        trainer = TorchTrainer(torch_loop, train_loop_config={**cfg, "data": str(arrays), "epochs": epochs},
                               scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.99}),
                               run_config=train.RunConfig(storage_path=str(where / "torch")))  # fmt: skip
        result = trainer.fit()
        tune.report({"val_accuracy": (result.metrics or {}).get("val_accuracy", 0.0)})

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    space = {"lr": tune.grid_search(list(LRS)), "hidden": tune.grid_search(list(HIDDEN)),
             "batch_size": tune.grid_search(list(BATCHES))}  # fmt: skip
    tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 0.01}), param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(where / "tune"), verbose=0))  # fmt: skip
    tuner.fit()
    ray.shutdown()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")  # 60k examples: `make data` installs it
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        a, fifo = nnps_sweep(args.data, args.epochs, "fifo", where)
        print(f"(a) {a:.1f} s", file=sys.stderr, flush=True)
        b = trains_in_a_row(args.data, args.epochs, where)
        print(f"(b) {b:.1f} s", file=sys.stderr, flush=True)
        d, asha = nnps_sweep(args.data, args.epochs, "asha", where)
        print(f"(d) {d:.1f} s", file=sys.stderr, flush=True)
        c = None if args.skip_torch else tune_torchtrainer(args.data, args.epochs, where)
    print(f"# bench/sweep.py, {time.strftime('%Y-%m-%d')}, commit {commit}, {args.data}, 16 configurations x "
          f"{args.epochs} epochs\n")  # fmt: skip
    print("| run | wall s | epochs trained | best (validation) |\n| --- | ---: | ---: | --- |")
    for name, wall, res in (("(a) nnps sweep fifo", a, fifo), ("(b) 16 nnps train in a row", b, None),
                            ("(c) Tune + TorchTrainer", c, None), ("(d) nnps sweep asha", d, asha)):  # fmt: skip
        if wall is None:
            continue
        best = f"{res['best']['params']} {res['best']['val_accuracy']:.2%}" if res else ""
        epochs = res["epochs_trained"] if res else 16 * args.epochs
        print(f"| {name} | {wall:.1f} | {epochs} | {best} |")
    print(f"\n(a)/(b) wall: {a / b:.2f}x (goal <= 0.6x)")
    if c is not None:
        print(f"(c)/(a) wall: {c / a:.2f}x (goal >= 3x)")
    gap = fifo["best"]["val_accuracy"] - asha["best"]["val_accuracy"]
    print(f"asha/fifo epochs: {asha['epochs_trained'] / fifo['epochs_trained']:.2f}x (goal <= 0.5x); "
          f"same best: {asha['best']['params'] == fifo['best']['params']}, validation gap {100 * gap:.2f} points "
          f"(goal: same, or within 0.5)")  # fmt: skip


if __name__ == "__main__":
    main()
