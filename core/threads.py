"""How many BLAS threads a step's matrix products should use.

OpenBLAS splits even small products over every core, and for the seed's network that
costs more than it gains (bench/core_speed.py measures it). Larger products do gain from
threads, but not from all of a big machine's: the in-process path gives BLAS one thread
per SMALL_PRODUCT multiply-adds of its largest product, up to the cores; k Ray workers on
one node share its cores, less two for the server and the driver (`worker_threads`).
threadpoolctl changes the limit at run time, without restarting the process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from nnps.core.network import Network

# Multiply-adds in a step's largest product per BLAS thread: below this one thread is
# faster (where it lies: docs/performance.md and bench/core_speed.py).
SMALL_PRODUCT = 8_000_000


def threads_for(network: Network, batch: int, cores: int | None = None) -> int:
    """One BLAS thread per SMALL_PRODUCT multiply-adds of the largest product, 1..cores
    (default: this machine's)."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, batch * network.layout.widest_product // SMALL_PRODUCT))


def worker_threads(network: Network, batch: int, k: int, cpus: int | None) -> int:
    """BLAS threads (and CPUs asked of Ray) for each of k workers on one node of `cpus`
    CPUs: the cores left after two split evenly, and no more than the shard's products
    use. The two are the server's (its sum and update) and the driver's; one thread each
    would leave a big machine's other cores idle.
    cpus=None (several nodes): 1, since where Ray puts k workers is its call, and a
    worker asking for more CPUs than any node has left would never start."""
    if cpus is None:
        return 1
    share = max(1, (cpus - 2) // k)
    return min(share, threads_for(network, -(-batch // k), cpus))


@lru_cache(maxsize=1)
def _controller():  # type: ignore[no-untyped-def]
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_cap: int | None = None  # see blas_cap


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    with _controller().limit(limits=min(n, _cap or n), user_api="blas"):
        yield


@contextmanager
def blas_cap(n: int) -> Iterator[None]:
    """At most n BLAS threads for every product in this process during the block, those
    under blas_threads too. For while another thread forks: OpenBLAS's fork handler
    stops its thread pool, and a multithreaded product running meanwhile on another
    thread then hangs (a matrix product beside subprocess.Popen with a preexec_fn: hung
    on 2 threads, never on 1). One thread runs BLAS on the caller's thread, no pool."""
    global _cap
    old, _cap = _cap, n
    try:
        with _controller().limit(limits=n, user_api="blas"):
            yield
    finally:
        _cap = old
