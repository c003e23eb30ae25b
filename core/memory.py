"""Will it fit? What a network or a dataset needs in memory, checked before it is allocated.

A run that asks for more than the machine has should say so in one line, not end in
numpy's `_ArrayMemoryError` (or the kernel's OOM killer) after minutes of set-up. The
estimate is a floor for one process training in-process or serving as the server: the
parameter vector, its gradient sum, the optimizer's state, the cost model's probe copy,
and one batch's activations. Ray workers add their own copies on their nodes.
"""

from __future__ import annotations

import os

from nnps.core.errors import ConfigError, DataError
from nnps.core.network import Network

GIB = 1024**3
# Parameter-sized vectors one process holds: the parameters, a gradient sum, the update's
# temporary, the cost model's probe copy, plus the optimizer's state (core/optimizers.py).
VECTORS = 4
STATE_VECTORS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}
PER_UNIT = 4  # per example and unit of each layer: z^l, a^l, delta^l and sigma'(z^l)


def available_bytes() -> int:
    """Memory this process can still take: MemAvailable on Linux, else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def network_bytes(network: Network, batch_size: int, optimizer: str) -> int:
    item = network.np_dtype.itemsize
    vectors = (VECTORS + STATE_VECTORS.get(optimizer, 2)) * network.layout.size * item
    activations = PER_UNIT * batch_size * sum(network.sizes) * item
    return vectors + activations


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.0f} MiB"


def check_network(network: Network, batch_size: int, optimizer: str) -> None:
    """ConfigError unless training `network` at `batch_size` fits in the memory available."""
    need, have = network_bytes(network, batch_size, optimizer), available_bytes()
    if need > have:
        shape = "-".join(map(str, network.sizes))
        raise ConfigError(f"a {shape} network does not fit: its {network.layout.size:,} {network.np_dtype.name} "
                          f"parameters (with gradients and {optimizer}'s state) and batch {batch_size}'s "
                          f"activations need {gib(need)}; this machine has {gib(have)} available")  # fmt: skip


def check_data(path: object, nbytes: int, what: str) -> None:
    """DataError unless `nbytes` of `what` from `path` fit in the memory available."""
    have = available_bytes()
    if nbytes > have:
        raise DataError(f"{path}: {what} need {gib(nbytes)}; this machine has {gib(have)} available")
