"""Speed of the core training step against the machine's matmul roof and PyTorch (CPU).

Every number is measured in this run, side by side, each in a fresh child process whose
BLAS is pinned to the given thread count (OPENBLAS_NUM_THREADS and torch.set_num_threads
are set before the first matmul). Prints a table of ratios.

    examples/s  the serial path's step: ShardWorker.gradient_sums + Server.apply (SGD),
                on random uint8 images with real shapes, batches given in advance
    roof        examples/s the network's FLOPs would allow at the matmul rate measured
                for its largest layer's product at that batch (np.matmul, float32)
    torch       the same network, cost and SGD step in PyTorch on the CPU, float32

Run: .venv/bin/python bench/core_speed.py   (PyTorch: pip install -e ".[bench]")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

CASES = [  # (sizes, activation, output, cost, batch)
    ((784, 30, 10), "sigmoid", "sigmoid", "quadratic", 10),
    ((784, 30, 10), "sigmoid", "sigmoid", "quadratic", 100),
    ((784, 30, 10), "sigmoid", "sigmoid", "quadratic", 1000),
    ((784, 1024, 1024, 10), "relu", "softmax", "cross-entropy", 256),
]
MIN_SECONDS = 1.5


def timed(fn, min_seconds: float = MIN_SECONDS) -> float:
    """Seconds per call: warm up, then repeat until min_seconds have passed."""
    fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds:
        fn()
        n += 1
    return elapsed / n


def flops_per_example(sizes) -> float:
    """Multiply-adds x 2: forward a W^T for each layer, backward delta W (BP2, not for the
    input layer) and delta^T a (BP4) for each layer."""
    fwd = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    bp2 = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    return 2.0 * (2 * fwd + bp2)


def child(case_index: int) -> dict:
    import numpy as np

    from nnps.core.config import TrainConfig
    from nnps.core.network import Network, initial_params
    from nnps.core.server import Server, Snapshot
    from nnps.core.steps import ShardWorker
    from nnps.core.threads import blas_threads, threads_for

    sizes, act, out, cost, batch = CASES[case_index]
    rng = np.random.default_rng(0)
    n = max(20 * batch, 10000)
    x = rng.integers(0, 256, (n, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    net = Network(sizes, act, out, cost, "float32")
    worker = ShardWorker(net, x, y, x[:10], y[:10])
    cfg = TrainConfig(hidden=sizes[1:-1], activation=act, output=out, cost=cost, lr=0.01)
    server = Server(cfg, net, Snapshot(initial_params(net, "scaled", 0)), steps_per_epoch=n // batch)
    batches = [rng.permutation(n)[:batch] for _ in range(64)]
    state = {"i": 0}

    def step() -> None:
        idx = batches[state["i"] % 64]
        state["i"] += 1
        server.apply(worker.gradient_sums(server.params, idx))

    # As the in-process path runs it: with the BLAS threads it picks (core/threads.py),
    # capped by this child's thread count.
    threads = min(threads_for(net, batch), int(os.environ["OPENBLAS_NUM_THREADS"]))
    with blas_threads(threads):
        result = {"nnps": batch / timed(step), "nnps_threads": threads}
    # The roof: the matmul rate of the biggest layer's forward product at this batch.
    k = max(range(len(sizes) - 1), key=lambda l: sizes[l] * sizes[l + 1])
    a = rng.random((batch, sizes[k]), dtype=np.float32)
    w = rng.random((sizes[k + 1], sizes[k]), dtype=np.float32)
    per = timed(lambda: a @ w.T)
    rate = 2.0 * batch * sizes[k] * sizes[k + 1] / per
    result["gflops"] = rate / 1e9
    result["roof"] = rate / flops_per_example(sizes)
    try:
        import torch
    except ImportError:
        return result
    torch.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
    layers = []
    for i, (a_, b_) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a_, b_))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Sigmoid() if act == "sigmoid" else torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tx = torch.from_numpy(x)
    ty = torch.from_numpy(y.astype(np.int64))
    eye = torch.eye(10)
    tb = [torch.from_numpy(b) for b in batches]

    def torch_step() -> None:
        idx = tb[state["i"] % 64]
        state["i"] += 1
        xb = tx[idx].float() / 255.0
        z = model(xb)
        if out == "sigmoid":
            loss = 0.5 * ((torch.sigmoid(z) - eye[ty[idx]]) ** 2).sum() / batch
        else:
            loss = torch.nn.functional.cross_entropy(z, ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    result["torch"] = batch / timed(torch_step)
    return result


def run_child(case_index: int, threads: int) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--child", str(case_index)], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    threads = [1, 2] if (os.cpu_count() or 1) >= 2 else [1]
    print(f"{'network':<20} {'batch':>6} {'thr':>3} {'nnps ex/s':>11} {'roof ex/s':>11} {'of roof':>8} "
          f"{'GFLOP/s':>8} {'torch ex/s':>11} {'nnps/torch':>10}")  # fmt: skip
    for i, (sizes, act, *_rest, batch) in enumerate(CASES):
        for t in threads:
            r = run_child(i, t)
            torch_cols = (f"{r['torch']:>11,.0f} {r['nnps'] / r['torch']:>9.2f}x" if "torch" in r
                          else f"{'(no torch)':>11} {'':>10}")  # fmt: skip
            print(f"{'-'.join(map(str, sizes)) + ' ' + act:<20} {batch:>6} {t:>3} {r['nnps']:>11,.0f} "
                  f"{r['roof']:>11,.0f} {r['nnps'] / r['roof']:>7.0%} {r['gflops']:>8.1f} {torch_cols}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
    else:
        main()
