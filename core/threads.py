"""How many BLAS threads a step's matrix products should use.

OpenBLAS splits even small products over every core, and for the seed's network that
costs more than it gains: 784-30-10 at batch 100 runs 2.4x FASTER on one thread than on
two on a 2-core machine (bench/core_speed.py). Products of a few million multiply-adds
and more do gain from threads. The in-process path therefore pins BLAS to one thread
when its largest product is small; a Ray worker always runs on one thread (one CPU each).
threadpoolctl changes the limit at run time (~20 us), without restarting the process.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from nnps.core.network import Network

# Largest product per step (multiply-adds) below which one thread is faster; measured on
# this 2-core machine between 784-30-10 at batch 100 (2.4M, 1 thread wins) and batch
# 1000 (24M, 2 threads win by ~10%).
SMALL_PRODUCT = 8_000_000


def threads_for(network: Network, batch: int) -> int | None:
    """1 for small products; None (leave BLAS's own default) for large ones."""
    widest = max(a * b for a, b in zip(network.sizes[:-1], network.sizes[1:]))
    return 1 if batch * widest < SMALL_PRODUCT else None


@lru_cache(maxsize=1)
def _controller():  # type: ignore[no-untyped-def]
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    with _controller().limit(limits=n, user_api="blas"):
        yield
