"""The transport's policy (cluster/transport.py) without Ray: the chain for each setting
and placement, held to docs/architecture.md's table, and a fallback at the very step a
channel breaks, ending equal to serial SGD."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nnps.cluster.transport import REOPEN_AFTER, Transport, chain
from nnps.core.config import TRANSPORTS, TrainConfig
from nnps.core.sampler import Sampler, split_batch
from nnps.core.server import Server
from nnps.core.steps import ShardWorker
from nnps.core.plan import plan_run
from nnps.core.training import train
from nnps.core.steps import StepChannel
from nnps.core.steps import ChannelBroken
from tests.conftest import REPO

CFG = TrainConfig(data="mnist-10k", hidden=(20,), batch_size=50, epochs=1, steps=60, lr=3.0, dtype="float64",
                  seed=2, optimizer="momentum")  # fmt: skip


def architecture_table() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """docs/architecture.md's table: setting -> (chain on one node, chain across nodes)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\w, ]+) \| ([\w, ]+) \|", text, re.M)
    return {s: (tuple(one.strip().split(", ")), tuple(many.strip().split(", "))) for s, one, many in rows}


def test_the_documented_chains_are_the_policy() -> None:
    table = architecture_table()
    assert sorted(table) == sorted(TRANSPORTS)
    for setting, (one, many) in table.items():
        assert chain(setting, one_node=True) == one, setting
        assert chain(setting, one_node=False) == many, setting
    assert chain("auto", True) == ("unix", "ray") and chain("auto", False) == ("tcp", "ray")


def test_every_chain_ends_in_ray_calls() -> None:
    assert {chain(s, one)[-1] for s in TRANSPORTS for one in (True, False)} == {"ray"}
    with pytest.raises(ValueError, match="a chain ends in plain Ray calls, got"):
        Transport(("unix",), lambda name: None)  # type: ignore[arg-type, return-value]


class InProcess(StepChannel):
    """A channel computing the shards in this process, as workers would."""

    def __init__(self, name: str, worker: ShardWorker) -> None:
        self.name, self.worker, self.closed = name, worker, False
        self.done: list[tuple[int, np.ndarray]] = []  # replies in the order they were sent

    def open(self, params: np.ndarray) -> None:
        return None

    def send(self, i: int, params: np.ndarray, indices: np.ndarray) -> None:
        self.done.append((i, self.worker.gradient_sums(params, indices)))

    def receive(self) -> tuple[int, np.ndarray]:
        return self.done.pop(0)

    def close(self) -> None:
        self.closed = True


class BreaksAt(InProcess):
    """Keeps the parameters in an array of its own (as the step file does) and breaks at
    step `at` of the run, or at open if `at` is None."""

    def __init__(self, name: str, worker: ShardWorker, at: int | None, steps: list[int]) -> None:
        super().__init__(name, worker)
        self.at, self.steps, self.home = at, steps, None

    def open(self, params: np.ndarray) -> np.ndarray:
        if self.at is None:
            raise ChannelBroken("no room here")
        self.home = params.copy()
        return self.home

    def step(self, params: np.ndarray, shards: list[np.ndarray]) -> list[np.ndarray]:
        assert params is self.home  # the server keeps its parameters where the channel said
        if self.steps[-1] == self.at:
            raise ChannelBroken(f"worker 1 closed its socket at step {self.at}")
        return super().step(params, shards)


@pytest.mark.parametrize("at", [None, 0, 23, 59])
def test_a_broken_channel_hands_the_same_step_to_the_next(at: int | None, mnist10k) -> None:
    plan = plan_run(CFG, mnist10k, None, False)
    worker = ShardWorker(plan.network, mnist10k.x_train, mnist10k.y_train, mnist10k.x_test, mnist10k.y_test)
    sampler = Sampler(len(mnist10k.y_train), CFG.batch_size, CFG.seed)
    server = Server(CFG, plan.network, plan.start, sampler.steps_per_epoch)
    steps: list[int] = []
    made: list[InProcess] = []

    def make(name: str) -> StepChannel:
        made.append(BreaksAt(name, worker, at, steps) if name == "unix" else InProcess(name, worker))
        return made[-1]

    transport = Transport(("unix", "ray"), make)
    for chunk in ((0, 30), (30, 60)):  # as the server runs a chunk: its parameters' home first
        server.params = transport.open(server.params, server.step)
        for step in range(*chunk):
            steps.append(step)
            server.params, replies = transport.step(server.params, split_batch(sampler.batch(step), 3), step)
            server.apply(*replies)
    transport.close()
    serial = train(CFG, mnist10k)["params"]
    assert np.max(np.abs(server.params - serial)) < 1e-12
    broke_at = 0 if at is None else at
    reason = "no room here" if at is None else f"worker 1 closed its socket at step {at}"
    fallbacks = [{"step": broke_at, "from": "unix", "to": "ray", "reason": reason}]
    # broken mid-run, the channel is tried again REOPEN_AFTER steps later (and here it opens); refused at open, never
    back = None if at is None or at + REOPEN_AFTER >= 60 else at + REOPEN_AFTER
    if back is not None:
        fallbacks.append({"step": back, "from": "ray", "to": "unix", "reason": "reopened: every worker answers on it again"})
    on_unix = broke_at + (60 - back if back is not None else 0)
    assert transport.record() == {"chain": ["unix", "ray"], "steps": {"unix": on_unix, "ray": 60 - on_unix},
                                  "fallbacks": fallbacks}  # fmt: skip
    assert [c.name for c in made] == ["unix", "ray"] + (["unix"] if back is not None else [])
    assert all(c.closed for c in made)


def test_a_bad_transport_is_one_line() -> None:
    from nnps.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--transport must be one of auto, unix, tcp, ray; got 'shm'$"):
        TrainConfig(transport="shm")


class Queued(InProcess):
    """send/receive in this process: replies in the order sent, computed at receive on the
    parameters as they were sent; breaks at its `breaks_at`-th receive (None: never)."""

    def __init__(self, name: str, worker: ShardWorker, breaks_at: int | None = None) -> None:
        super().__init__(name, worker)
        self.queue: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.breaks_at, self.received = breaks_at, 0

    def send(self, i: int, params: np.ndarray, indices: np.ndarray) -> None:
        self.queue.append((i, params.copy(), indices))

    def receive(self) -> tuple[int, np.ndarray]:
        if self.received == self.breaks_at:
            raise ChannelBroken("worker 0 closed its socket")
        self.received += 1
        i, params, indices = self.queue.pop(0)
        return i, self.worker.gradient_sums(params, indices)


def test_an_async_channel_that_breaks_resends_every_task_out(mnist10k) -> None:
    """Two tasks out when the channel breaks: the next channel computes both again, each on
    the parameters it was first sent with, so the result equals the replay of the record."""
    from nnps.core.record import UpdateLog, replay
    from nnps.core.steps import run_updates

    cfg = CFG.replace(workers=2, consistency="async")
    plan = plan_run(cfg, mnist10k, None, False)
    worker = ShardWorker(plan.network, mnist10k.x_train, mnist10k.y_train, mnist10k.x_test, mnist10k.y_test)
    sampler = Sampler(len(mnist10k.y_train), cfg.batch_size, cfg.seed)
    server = Server(cfg, plan.network, plan.start, sampler.steps_per_epoch)
    transport = Transport(("unix", "ray"), lambda name: Queued(name, worker, 25 if name == "unix" else None))
    rows = run_updates(transport, server, lambda _, t: sampler.batch(t), 2, None, 60)
    assert transport.record()["fallbacks"] == [{"step": 25, "from": "unix", "to": "ray",
                                                "reason": "worker 0 closed its socket"}]  # fmt: skip
    assert transport.record()["steps"] == {"unix": 25, "ray": 35}
    again, _ = replay(cfg, plan.network, mnist10k, plan.start, UpdateLog(np.array(rows)))
    np.testing.assert_array_equal(again.params, server.params)
