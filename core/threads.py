"""How many BLAS threads a step's matrix products should use.

OpenBLAS splits even small products over every core, and for the seed's network that
costs more than it gains: 784-30-10 at batch 100 runs 2.4x FASTER on one thread than on
two on a 2-core machine (bench/core_speed.py). Products of a few million multiply-adds
and more do gain from threads, but not from all of a big machine's: the in-process path
gives BLAS one thread per ~8M multiply-adds of its largest product, up to the cores; a Ray
worker always runs on one thread (one CPU each).
threadpoolctl changes the limit at run time (~20 us), without restarting the process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from nnps.core.network import Network

# Multiply-adds in a step's largest product per BLAS thread: below this one thread is
# faster. Measured on the 2-core development machine between 784-30-10 at batch 100 (2.4M,
# 1 thread wins) and batch 1000 (24M, 2 threads win by ~10%); on a 16-core machine the
# same batch 1000 ran 4x slower on all 16 threads than on one (docs/performance.md).
SMALL_PRODUCT = 8_000_000


def threads_for(network: Network, batch: int) -> int:
    """One BLAS thread per SMALL_PRODUCT multiply-adds of the largest product, 1..cores."""
    return max(1, min(os.cpu_count() or 1, batch * network.layout.widest_product // SMALL_PRODUCT))


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
