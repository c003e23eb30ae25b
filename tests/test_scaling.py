"""bench/scaling.py (the model of a step across hosts) against byte counts worked out by hand for small placements."""

from __future__ import annotations

import math

import pytest

from bench.scaling import Cluster, placement, servers_needed, step_seconds, transfer

V = 4 * 1_000_000  # bytes of one vector of a million float32
R = 1e9


def test_one_host_two_cores_is_bound_by_its_cores() -> None:
    # 2 workers read V and write V each; the server reads 2 replies and writes V: 7V over 2 cores.
    t = transfer(1_000_000, workers=2, servers=1, cluster=Cluster(hosts=1, cores=2, nic=math.inf, rate=R))
    expected = {"server": 3 * V / R, "worker": 2 * V / R, "host cores": 3.5 * V / R, "NIC": 0.0}
    assert t.loads == pytest.approx(expected)
    assert (t.bottleneck, t.seconds) == ("host cores", pytest.approx(3.5 * V / R))
    # Sharding cannot help there: the cores, not the server, are the limit.
    assert transfer(1_000_000, 2, 4, Cluster(1, 2, math.inf, R)).seconds == pytest.approx(3.5 * V / R)


def test_two_hosts_one_worker_each() -> None:
    # Server on host 0 beside worker 0. Host 1 receives the parameters (V) and sends worker
    # 1's reply (V); worker 0's reply stays on host 0.
    nic = 0.2e9  # slower than the server: 20 ms against its 12
    t = transfer(1_000_000, workers=2, servers=1, cluster=Cluster(hosts=2, cores=16, nic=nic, rate=R))
    assert t.loads["NIC"] == pytest.approx(V / nic)
    assert t.loads["server"] == pytest.approx(3 * V / R)
    assert (t.bottleneck, t.seconds) == ("NIC", pytest.approx(V / nic))


def test_the_servers_nic_takes_every_remote_reply() -> None:
    # 4 hosts, 1 worker each, 1 server on host 0: 3 remote replies arrive at host 0, and the
    # parameters leave it for 3 hosts; with 4 servers, one per host, each host sends 3
    # quarter-slices of its reply and 3 of its parameters, and receives as many.
    c = Cluster(hosts=4, cores=16, nic=1e9, rate=1e12)
    assert transfer(1_000_000, 4, 1, c).loads["NIC"] == pytest.approx(3 * V / 1e9)
    assert transfer(1_000_000, 4, 4, c).loads["NIC"] == pytest.approx(6 * V / 4 / 1e9)


def test_summing_on_the_host_sends_one_reply_per_host() -> None:
    # 4 workers, 2 per host, the server on host 0. Without host sums host 1 sends its 2
    # replies and the server reads 4 (and writes 1); with them host 1 sends 1 summed reply,
    # the server reads 2, and one process per host reads 2 replies and writes their sum.
    c = Cluster(hosts=2, cores=16, nic=1e9, rate=R)
    plain, summed = transfer(1_000_000, 4, 1, c), transfer(1_000_000, 4, 1, c, host_sum=True)
    assert plain.loads["NIC"] == pytest.approx(2 * V / 1e9)
    assert plain.loads["server"] == pytest.approx(5 * V / R)
    assert summed.loads["NIC"] == pytest.approx(V / 1e9)
    assert summed.loads["server"] == pytest.approx(3 * V / R)
    assert summed.loads["host sum"] == pytest.approx(3 * V / R)
    assert "host sum" not in plain.loads
    faster = Cluster(hosts=2, cores=16, nic=1e9, rate=R, host_rate=3 * R)
    assert transfer(1_000_000, 4, 1, faster, host_sum=True).loads["host sum"] == pytest.approx(V / R)


def test_servers_needed_is_where_the_workers_become_the_bound() -> None:
    # 8 hosts, a worker each, NIC and cores plentiful: the server term 9V/(S R) falls below
    # the worker's 2V/R at S = 5 (9/5 = 1.8), and more servers change nothing.
    c = Cluster(hosts=8, cores=64, nic=1e15, rate=R)
    assert [transfer(1_000_000, 8, s, c).bottleneck for s in (1, 4, 5)] == ["server", "server", "worker"]
    assert servers_needed(1_000_000, 8, c) == 5
    assert servers_needed(1_000_000, 2, Cluster(1, 2, math.inf, R)) == 1  # core-bound: none needed


def test_placement_spreads_workers_and_deals_servers_round_robin() -> None:
    assert placement(5, 3, 2) == ([0, 0, 0, 1, 1], [0, 1, 0])


def test_step_adds_shard_coordination_and_transfer() -> None:
    c = Cluster(hosts=1, cores=2, nic=math.inf, rate=R)
    assert step_seconds(0.01, 0.002, 1_000_000, 2, 1, c) == pytest.approx(0.012 + 3.5 * V / R)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("hosts", 0, "hosts must be >= 1, got 0"),
    ("cores", -1, "cores must be >= 1, got -1"),
    ("nic", 0.0, "nic must be > 0 bytes/s, got 0.0"),
    ("rate", float("nan"), "rate must be > 0 bytes/s, got nan"),
    ("host_rate", -2.0, "host_rate must be > 0 bytes/s, got -2.0"),
])  # fmt: skip
def test_bad_cluster_is_refused_with_its_value(field: str, value: float, message: str) -> None:
    args = {"hosts": 1, "cores": 1, "nic": 1.0, "rate": 1.0, field: value}
    with pytest.raises(ValueError, match=message):
        Cluster(**args)
    with pytest.raises(ValueError, match="workers and servers must be >= 1, got 0 and 1"):
        transfer(10, 0, 1, Cluster(1, 1, 1.0, 1.0))
