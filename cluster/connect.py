"""Joining Ray: an embedded local instance by default, or an existing cluster.

The embedded instance keeps Ray's token authentication on (RAY_AUTH_MODE=token, Ray's
default for local clusters since 2.59; Ray's notice that it is on is not shown, its
warning when it is off is) and its dashboard on 127.0.0.1. An address is
probed with a plain TCP connect first, so an unreachable one fails in seconds with one
line instead of Ray's long retry loop.
"""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from nnps.cluster.reaper import Reaper
from nnps.core.environment import RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
from nnps.core.errors import ClusterError

PROBE_TIMEOUT_S = 3.0
# Ray inlines task arguments and results up to this size in its messages instead of
# going through the object store (Ray's default: 100 KiB). The parameter vector and the
# gradient replies travel every step, and inlined they skip the object store's puts and
# gets. Applies to the embedded Ray; a cluster keeps its own setting.
INLINE_BYTES = 4 * 1024 * 1024
RAY_DEFAULT_INLINE_BYTES = 100 * 1024
_inline_bytes = RAY_DEFAULT_INLINE_BYTES
_embedded = False  # see embedded()


@contextmanager
def hiding(logger: str, text: str) -> Iterator[None]:
    """Drop `logger`'s records that contain `text` during the block; keep everything else."""
    hide = lambda record: text not in record.getMessage()  # noqa: E731
    logging.getLogger(logger).addFilter(hide)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(hide)


AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_ON = "Token authentication is enabled for this Ray cluster"  # said on every embedded start: hidden


TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where `ray start` keeps a cluster's token by default


def token_auth() -> str:
    """Where Ray's token comes from, turning Ray's token mode on when one is at hand, as
    Ray's own CLI does: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else
    ~/.ray/auth_token. Without the mode set, Ray's clients send no token even when one
    is there, and a token-auth cluster (Ray's default) refuses them."""
    if RAY_AUTH_TOKEN.get():
        where = RAY_AUTH_TOKEN.name
    elif RAY_AUTH_TOKEN_PATH.get():
        where = f"{RAY_AUTH_TOKEN_PATH.name} ({RAY_AUTH_TOKEN_PATH.get()})"
    elif TOKEN_FILE.exists():
        where = str(TOKEN_FILE)
    else:
        return "none found (looked in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token)"
    if not RAY_AUTH_MODE.get():
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

        with hiding(AUTH_LOGGER, AUTH_ON):  # Ray's own switch: sets RAY_AUTH_MODE=token and refreshes its config
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    return where


def inline_bytes() -> int:
    """The inlining limit of the Ray this process started (Ray's default if it joined one)."""
    return _inline_bytes


def probe(address: str, default_port: int = 6379) -> None:
    """Raise ClusterError unless something accepts TCP connections at `address`."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or default_port
    if not host:
        raise ClusterError(f"--address {address!r} is not HOST:PORT or a URL")
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise ClusterError(f"cannot reach Ray at {address}: {reason}")


@contextmanager
def ray_connection(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block; shut down only what we started."""
    import ray

    if ray.is_initialized():  # a test fixture's cluster, or a caller's own ray.init
        yield
        return
    if address in ("local", ""):
        address = None
    if address and address != "auto":
        probe(address)
    if address:
        token_auth()
    kwargs: dict = {"log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        # "local" starts a fresh instance even where a stale /tmp/ray/ray_current_cluster
        # (left by a `ray start` that was killed) would make ray.init try to join it.
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False,
                      _system_config={"max_direct_call_object_size": INLINE_BYTES,
                                      "task_rpc_inlined_bytes_limit": 4 * INLINE_BYTES})  # fmt: skip
    global _inline_bytes, _embedded
    _inline_bytes = RAY_DEFAULT_INLINE_BYTES if address else INLINE_BYTES
    _embedded = not address
    reaper = None if address else Reaper()  # an embedded Ray goes with its driver, killed or not
    try:
        with hiding(AUTH_LOGGER, AUTH_ON):
            _init(kwargs, address)
    except BaseException:
        if reaper:
            reaper.close()
        raise
    if reaper:
        reaper.watch()
    try:
        yield
    finally:
        ray.shutdown()
        _inline_bytes, _embedded = RAY_DEFAULT_INLINE_BYTES, False
        if reaper:
            reaper.close()


def _init(kwargs: dict, address: str | None) -> None:
    import ray

    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if address and "uthenticat" in str(e):
            why = f"authentication refused; the token used: {token_auth()}"
        raise ClusterError(f"cannot start or join Ray{f' at {address}' if address else ''}: {why}")


def embedded() -> bool:
    """Whether the Ray at hand is the one ray_connection started here (its CPUs are all
    there will be: no autoscaler adds nodes to it)."""
    return _embedded
