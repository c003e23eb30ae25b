"""Where a step's time goes with 2 workers on one node, from the floor up, in one run.

784-30-10 (sigmoid, float32, random data of 60,000 images) at --batch (default 1000, and
10 and 100 for the floor), 2 workers, the `unix` channel. Side by side:

    1 process         the in-process step (Server + ShardWorker) at its best BLAS thread count
    floor             the unix channel's exchange between plain processes (multiprocessing:
                      UnixEnd's loop with no backprop; bench/lockstep.py does it with backprop)
    +backprop         the same with each process computing its shard (bench/lockstep.py's lockstep)
    driver loop       GradientWorker actors serving the unix channel, the server's loop run in
                      the driver's process: sampler + split, channel.step, Server.apply timed apart
    server actor      RayExecutor as `nnps train` runs it (ParameterServer.run per chunk, chunks
                      of ~CHUNK_SECONDS as training makes them)
    nnps train        whole epochs of `nnps train --workers 2 --no-warm-start` (epochs after the
                      first: evaluation and metrics included), as examples/s against --workers 0

Run: .venv/bin/python bench/step_profile.py [--batch 1000] [--epochs 3]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np
import ray
from threadpoolctl import threadpool_limits

from nnps.cluster.calibrate import best_single_process, per_step
from nnps.cluster.ray_executor import RayExecutor, ray_session
from nnps.core.config import TrainConfig
from nnps.core.datasets import Dataset
from nnps.core.sampler import Sampler, split_batch
from nnps.core.server import Server
from nnps.core.steps import ShardWorker
from nnps.core.plan import plan_run
from nnps.core.training import train
from nnps.worker import training_data
from nnps.worker.channels.step_file import Mapped, NodeBuffers
from nnps.worker.channels.unix import ServerSockets, UnixChannel, serve
from nnps.worker.gradient_worker import GradientWorker



def exchange(server: ServerSockets, shards: list) -> None:
    """One step's messages as the unix channel sends them: every shard, then every answer."""
    for i, shard in enumerate(shards):
        server.send_one(i, shard)
    for i in range(len(shards)):
        server.answer(i)

def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


BATCH, EPOCHS, K = int(arg("--batch", "1000")), int(arg("--epochs", "3")), 2
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (60000, 784), dtype=np.uint8)
Y = rng.integers(0, 10, 60000).astype(np.uint8)
DATA = Dataset("random", X, Y, X[:10000], Y[:10000])
CFG = TrainConfig(data="random", hidden=(30,), batch_size=BATCH, lr=0.1, epochs=EPOCHS, workers=K, transport="unix",
                  warm_start=False, seed=1)  # fmt: skip


def serve_plain(spec: NodeBuffers, i: int, backprop: bool) -> None:
    threadpool_limits(1, user_api="blas")
    mapped, plan = Mapped(spec), plan_run(CFG, DATA, None, False)
    worker = ShardWorker(plan.network, X, Y, X[:1], Y[:1])
    if backprop:
        serve(spec, i, lambda idx: worker.gradient_sums(mapped.params, idx, out=mapped.replies[i])).join()
    else:
        serve(spec, i, lambda idx: None).join()


def plain_processes(batch: int, backprop: bool, steps: int) -> float:
    """ms per step of the unix exchange between plain processes."""
    plan = plan_run(CFG, DATA, None, False)
    spec = NodeBuffers.create(plan.network.layout.size, K, "float32")
    Mapped(spec).params[...] = plan.start.params
    server = ServerSockets(spec)
    procs = [mp.Process(target=serve_plain, args=(spec, i, backprop)) for i in range(K)]
    sampler = Sampler(len(Y), batch, 1)
    try:
        for p in procs:
            p.start()
        server.accept(60)
        for s in range(20):
            exchange(server, split_batch(sampler.batch(s), K))
        t0 = time.perf_counter()
        for s in range(steps):
            exchange(server, split_batch(sampler.batch(s), K))
        return (time.perf_counter() - t0) / steps
    finally:
        server.close()
        for p in procs:
            p.join()
        spec.unlink()


def driver_loop(batch: int, steps: int) -> dict[str, float]:
    """The server's loop in this process over GradientWorker actors: seconds per step in each part."""
    cfg = CFG.replace(batch_size=batch)
    plan = plan_run(cfg, DATA, None, False)
    name, holder = training_data.share((X, Y, X[:10000], Y[:10000]))
    workers = [GradientWorker.remote(plan.network, name) for _ in range(K)]
    ray.get([w.ready.remote() for w in workers])
    nodes = [n for _, n in ray.get([w.where.remote() for w in workers])]
    channel = UnixChannel(workers, nodes, nodes[0])
    sampler = Sampler(len(Y), batch, 1)
    server = Server(cfg, plan.network, plan.start, sampler.steps_per_epoch)
    server.params = channel.open(server.params)
    parts = {"sample+split": 0.0, "channel.step": 0.0, "apply": 0.0}
    try:
        for step in range(steps + 20):
            if step == 20:
                parts = dict.fromkeys(parts, 0.0)
            t0 = time.perf_counter()
            shards = split_batch(sampler.batch(step), K)
            t1 = time.perf_counter()
            replies = channel.step(server.params, shards)
            t2 = time.perf_counter()
            server.apply(*replies)
            t3 = time.perf_counter()
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[key] += dt
    finally:
        channel.close()
        for actor in [*workers, holder]:
            ray.kill(actor)
    return {key: v / steps for key, v in parts.items()}


def main() -> None:
    print(f"784-30-10 sigmoid float32, {K} workers on {mp.cpu_count()} cores; ms per step")
    ray.init(address="local", num_cpus=max(2, mp.cpu_count()), include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    print(f"{'batch':>6} {'1 process':>9} {'floor':>7} {'+backprop':>9} {'driver loop (split / step / apply)':>36} "
          f"{'server actor':>12}")  # fmt: skip
    for batch in sorted({10, 100, BATCH}):
        steps = max(50, min(2000, 100_000 // batch))
        plan = plan_run(CFG.replace(batch_size=batch), DATA, None, False)
        one = best_single_process(plan, DATA, batch, steps).seconds
        floor = plain_processes(batch, False, steps)
        lock = plain_processes(batch, True, steps)
        loop = driver_loop(batch, steps)
        ex = RayExecutor(plan, DATA, K)
        try:
            actor = per_step(ex, steps)
        finally:
            ex.close()
        parts = " / ".join(f"{v * 1e3:.3f}" for v in loop.values())
        print(f"{batch:>6} {one * 1e3:>9.3f} {floor * 1e3:>7.3f} {lock * 1e3:>9.3f} "
              f"{sum(loop.values()) * 1e3:>8.3f} ({parts}) {actor * 1e3:>12.3f}")  # fmt: skip
    ray.shutdown()
    rates = {}
    for workers in (0, K):
        cfg = CFG.replace(workers=workers)
        if workers:
            with ray_session(cfg) as factory:
                summary = train(cfg, DATA, make_executor=factory)
        else:
            summary = train(cfg, DATA)
        rates[workers] = summary["metrics"]["examples_per_s"]  # the last epoch's
    print(f"nnps train, batch {BATCH}, epoch {EPOCHS}: {rates[0]:,.0f} ex/s in-process, {rates[K]:,.0f} with {K} "
          f"workers ({rates[K] / rates[0]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
