"""Simulated nodes of `ray.cluster_utils.Cluster`: a node lost mid-run, and a node's relay.

The workers on a removed node die with it; their TCP links break, the server goes on
with Ray calls, Ray restarts the workers on the surviving node and retries their calls,
and the run ends equal to serial SGD. Two workers on one node share one link, relayed
by the first (worker/channels/relay.py), and the run equals serial SGD too.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from nnps.core.training import train
from tests.test_distributed import CFG, AfterSteps, step_files, train_on_ray

pytestmark = pytest.mark.ray


@contextmanager
def simulated_nodes(*cpus: int) -> Iterator[Cluster]:
    """Ray on a head without CPUs (the driver's node) and one node of each of `cpus`."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for n in cpus:
            cluster.add_node(num_cpus=n)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


class RemoveNodeAfter(AfterSteps):
    def __init__(self, cluster: Cluster, after: int, executors: list) -> None:
        super().__init__(after)
        self.cluster, self.executors, self.workers_on_node = cluster, executors, 0

    def fire(self) -> None:
        nodes = self.placement = [node for _, node in self.executors[-1].placement()]
        holder = self.executors[-1].data_holder  # where a restarted worker fetches its data from
        self.holder_node = ray.get(holder.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
        victim = next(n for n in self.cluster.worker_nodes if n.node_id == nodes[0])  # the node of worker 0
        self.workers_on_node = nodes.count(victim.node_id)
        self.cluster.remove_node(victim)


@pytest.mark.parametrize("transport", ["tcp", "ray"])  # unix cannot span nodes: it refuses (test_unix_across_nodes)
def test_node_lost_mid_run(transport: str, mnist10k) -> None:
    serial = train(CFG, mnist10k)["params"]
    # No CPUs on the head: both workers land on the two worker nodes, so removing worker
    # 0's node surely kills a worker, and its replacement fits on the other node.
    with simulated_nodes(2, 2) as cluster:
        executors: list = []
        remover = RemoveNodeAfter(cluster, after=20, executors=executors)
        params = train_on_ray(CFG.replace(workers=2, transport=transport), mnist10k, reporter=remover,
                              executors=executors)  # fmt: skip
        ex = executors[-1]
        assert remover.fired and remover.workers_on_node >= 1
        assert remover.holder_node == cluster.head_node.node_id  # the driver's node, never the one removed
        done = ex.channels()
        if transport == "ray":  # Ray restarted the lost worker on the other node and retried its calls
            assert done["steps"]["ray"] >= 60 and done["fallbacks"] == [], done
        elif ex.servers_built == 1:
            # TCP links until the node went, then Ray calls, which Ray retried on the restarted
            # worker; perhaps TCP links again, to it on the other node (REOPEN_AFTER steps later)
            fell, *back = done["fallbacks"]
            assert sum(done["steps"].values()) == 60 and done["steps"]["tcp"] >= fell["step"] >= 20, done
            assert [(b["from"], b["to"]) for b in back] in ([], [("ray", "tcp")]), done
            together = remover.placement[0] == remover.placement[1]  # SPREAD is a preference
            assert back or done["groups"] == ([[0, 1]] if together else [[0], [1]]), done
            # "worker 0's link failed ...", or, if both workers were on that node, the relay's
            assert fell["reason"].startswith(("worker ", "workers 0, 1 (node relay)")), done
        else:  # Ray had put the server on that node: rebuilt from the last checkpoint, over new links
            assert ex.servers_built == 2
            assert done["steps"]["tcp"] > 0 and done["steps"]["ray"] == 0 and done["fallbacks"] == [], done
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert np.max(np.abs(params - serial)) < 1e-9


def test_two_workers_on_a_node_share_its_relay(mnist10k) -> None:
    serial = train(CFG, mnist10k)["params"]
    # Both workers on the one node of 2 CPUs, the server there or on the head without CPUs.
    # (By default a server beside its workers takes the unix channel: tcp is asked for.)
    with simulated_nodes(2):
        made: list = []
        params = train_on_ray(CFG.replace(workers=2, transport="tcp"), mnist10k, executors=made)
        # one link for the node, relayed by worker 0
        assert made[0].channels() == {"chain": ["tcp", "ray"], "steps": {"tcp": 60, "ray": 0}, "fallbacks": [],
                                      "groups": [[0, 1]]}  # fmt: skip
        assert np.max(np.abs(params - serial)) < 1e-9
        # no server step file; the relay's went as soon as its member had mapped it
        assert step_files() == []


def test_unix_across_nodes_refuses_and_runs_on_ray_calls(mnist10k) -> None:
    """--transport unix with the workers on another node than the server: the step file
    cannot reach them; the first step goes by Ray calls, and the record says why."""
    with simulated_nodes(1, 1):  # a worker on each node of 1 CPU: at least one is not the server's
        made: list = []
        params = train_on_ray(CFG.replace(workers=2, transport="unix", steps=10), mnist10k, executors=made)
        assert np.max(np.abs(params - train(CFG.replace(steps=10), mnist10k)["params"])) < 1e-9
        done = made[0].channels()
        (fell,) = done.pop("fallbacks")
        assert done == {"chain": ["unix", "ray"], "steps": {"unix": 0, "ray": 10}}, done
        assert (fell["step"], fell["from"], fell["to"]) == (0, "unix", "ray")
        away = r"(worker [01]|workers 0, 1) on another node than the server, which a step file cannot reach"
        assert re.fullmatch(away, fell["reason"]), fell


class RemoveAWorkersNode(AfterSteps):
    """Removes the node of a GradientWorker (found by its process's parent raylet) after `after` steps."""

    def __init__(self, cluster: Cluster, after: int) -> None:
        super().__init__(after)
        self.cluster, self.removed = cluster, None

    def fire(self) -> None:
        from tests.test_distributed import actor_pids

        raylets = {n.all_processes["raylet"][0].process.pid: n for n in self.cluster.worker_nodes}
        for pid in actor_pids("GradientWorker"):
            while pid > 1 and pid not in raylets:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if pid in raylets:
                self.removed = raylets[pid]
                self.cluster.remove_node(self.removed)
                return


def test_a_lost_nodes_parts_are_read_again_where_its_worker_restarts(tmp_path) -> None:
    """--partitioned: each worker holds only its parts; when its node goes, Ray restarts it on
    the spare node, where it reads its parts again (from the disk every node sees) and the
    run's description from the holder on the driver's node, and the run equals serial."""
    from nnps.cluster import driver
    from tests.test_partitioned import config, write_parquet

    table = write_parquet(tmp_path / "t", [700, 333, 900], group=128)
    cfg = config(table, workers=2, transport="ray", steps=200, checkpoint_every=20)  # chunks of at most 20 steps
    serial = driver.run(cfg.replace(workers=0), None)["params"]
    with simulated_nodes(1, 1, 1) as cluster:  # one worker a node, a third node spare
        remover = RemoveAWorkersNode(cluster, after=20)
        done = driver.run(cfg, None, reporter=remover)
        assert remover.removed is not None and len([n for n in ray.nodes() if n["Alive"]]) == 3
    assert done["step"] == 200 and done["channels"]["steps"] == {"ray": 200}
    assert np.max(np.abs(done["params"] - serial)) < 1e-9
