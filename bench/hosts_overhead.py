"""The step across real hosts: the `tcp` channel beside Ray calls, links shaped to 1 and 10 Gbit/s.

Two hosts made on this machine (tests/hosts.py: network namespaces, each with its own
address, interface and Ray node of 2 CPUs; needs root, iproute2); the driver runs on the
head's host. For each link speed (tc's token bucket on both hosts' interfaces) and each
network, `nnps bench`'s measurement (cluster/calibrate.py) with 2 workers, one per host
as Ray spreads them, over `--transport tcp` and `--transport ray`, beside the best single
process. Then bench/scaling.py's model of the same placement: the transfer term it gives
for each link speed, against the measured step's overhead (step minus one shard's
compute), and the change between the two speeds, measured and modelled.

Both hosts share this machine's 2 cores, so compute and copies compete as they would not
on two machines; the link shaping is real (every byte between the hosts crosses a veth
and its queue).

Run (as root): .venv/bin/python bench/hosts_overhead.py [--rates 1gbit,10gbit] [--rate 1.5e9]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/hosts.py
sys.path.insert(0, str(REPO / "bench"))  # scaling.py

from scaling import Cluster, transfer  # noqa: E402

from tests.hosts import Hosts, available  # noqa: E402

CASES = [((30,), [100, 1000]), ((1024, 1024), [256])]
BURST = {"1gbit": "1mb", "10gbit": "8mb"}
MEASURE = """
import json, sys, ray
from nnps.cluster.calibrate import measure
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
rows = measure(tuple(json.loads(sys.argv[2])), json.loads(sys.argv[3]), [2], transports=("tcp", "ray"))
print("ROWS", json.dumps([r.__dict__ for r in rows]))
"""


def bits(rate: str) -> float:
    return float(rate.removesuffix("gbit")) * 1e9 if rate.endswith("gbit") else float(rate.removesuffix("mbit")) * 1e6


def main() -> None:
    rates = (sys.argv[sys.argv.index("--rates") + 1] if "--rates" in sys.argv else "1gbit,10gbit").split(",")
    rate = float(sys.argv[sys.argv.index("--rate") + 1]) if "--rate" in sys.argv else 1.5e9
    why = available()
    if why:
        sys.exit(f"error: cannot make hosts here: {why}")
    hosts = Hosts([2, 2])
    measured: dict[tuple, dict] = {}
    try:
        for link in rates:
            for i in (0, 1):
                hosts.shape(i, link, BURST.get(link, "1mb"))
            for hidden, batches in CASES:
                out = hosts.run(0, sys.executable, "-c", MEASURE, hosts.address, json.dumps(hidden), json.dumps(batches))
                rows = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("ROWS "))[5:])
                for r in rows:
                    measured[(link, hidden, r["batch"], r["mode"].split()[0])] = r
            for i in (0, 1):
                hosts.unshape(i)
    finally:
        hosts.close()
    print(f"2 hosts (network namespaces on this machine's 2 cores), 2 workers; model: bench/scaling.py, rate {rate:.2g} B/s")
    print(f"{'network':>18} {'batch':>5} {'link':>6} {'1 proc':>7} {'tcp ms':>7} {'ray ms':>7} {'tcp/1p':>7} "
          f"{'tcp over':>8} {'model xfer':>10}")  # fmt: skip
    for hidden, batches in CASES:
        net = "784-" + "-".join(map(str, hidden)) + "-10"
        params = 784 * hidden[0] + hidden[0] + sum(a * b + b for a, b in zip(hidden, [*hidden[1:], 10]))
        for batch in batches:
            for link in rates:
                serial = next(r for (lk, h, b, _), r in measured.items() if (lk, h, b) == (link, hidden, batch)
                              and r["workers"] == 0)  # fmt: skip
                tcp, ray_ = (measured.get((link, hidden, batch, m)) for m in ("tcp", "ray"))
                model = transfer(params, 2, 1, Cluster(2, 2, bits(link) / 8, rate), host_sum=True).seconds
                over = (tcp["seconds"] - tcp["compute"]) if tcp else float("nan")
                print(f"{net:>18} {batch:>5} {link:>6} {serial['seconds'] * 1e3:>7.2f} "
                      f"{tcp['seconds'] * 1e3 if tcp else float('nan'):>7.2f} "
                      f"{ray_['seconds'] * 1e3 if ray_ else float('nan'):>7.2f} "
                      f"{serial['seconds'] / tcp['seconds'] if tcp else float('nan'):>6.2f}x "
                      f"{over * 1e3:>8.2f} {model * 1e3:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
