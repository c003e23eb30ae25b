"""Every environment variable nnps reads, declared once with its default.

Settings that change how a run computes or communicates are fields of `TrainConfig`
(saved in the run's config.json: `--transport`, `--workers`, ...). What is left here
describes the machine, not the run: where data is cached, how many BLAS threads a worker
may use, which port a firewall lets the TCP links through. The README lists them.

Variables of other tools that nnps reads as those tools mean them (Ray's address and
token, the XDG cache) are declared here too, in `BORROWED`; `TUNE_SETTINGS` are the ones
nnps sets for Ray Tune before a sweep starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nnps.core.errors import ConfigError


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str

    def get(self) -> str:
        return os.environ.get(self.name) or self.default

    def count(self) -> int | None:
        """A whole number >= 1, or None for "auto"."""
        return self._number(1)

    def port(self) -> int:
        value = self._number(0)
        if value is None or value > 65535:
            raise ConfigError(f"{self.name}={self.get()!r}: expected a TCP port, 0 to 65535 (0: any free port)")
        return value

    def _number(self, least: int) -> int | None:
        setting = self.get()
        if setting == "auto":
            return None
        if not setting.isdigit() or int(setting) < least:
            raise ConfigError(f"{self.name}={setting!r}: expected a whole number >= {least}, or auto")
        return int(setting)


DATA_DIR = Variable("NNPS_DATA_DIR", "", "where datasets are downloaded and cached (empty: $XDG_CACHE_HOME/nnps, "
                    "i.e. ~/.cache/nnps)")  # fmt: skip
WORKER_THREADS = Variable("NNPS_WORKER_THREADS", "auto", "BLAS threads (and Ray CPUs) per worker; auto: a share "
                          "of the node's cores by the shard's size (core/threads.py)")  # fmt: skip
LINK_PORT = Variable("NNPS_LINK_PORT", "0", "the TCP port the parameter server's links listen on, read on the "
                     "server's node; 0: any free port")  # fmt: skip

VARIABLES = (DATA_DIR, WORKER_THREADS, LINK_PORT)

XDG_CACHE_HOME = Variable("XDG_CACHE_HOME", "", "the user's cache folder (empty: ~/.cache)")
RAY_ADDRESS = Variable("RAY_ADDRESS", "", "Ray's: the cluster train, sweep and bench join; an http(s) URL is also "
                       "where submit, status, logs and fetch find the dashboard")  # fmt: skip
RAY_API_SERVER_ADDRESS = Variable("RAY_API_SERVER_ADDRESS", "", "Ray's: the dashboard jobs are submitted to")
RAY_AUTH_TOKEN = Variable("RAY_AUTH_TOKEN", "", "Ray's: the cluster's token itself")
RAY_AUTH_TOKEN_PATH = Variable("RAY_AUTH_TOKEN_PATH", "", "Ray's: a file holding the token (default ~/.ray/auth_token)")
RAY_AUTH_MODE = Variable("RAY_AUTH_MODE", "", "Ray's: `token` sends the token; nnps sets it when a token is at hand")
BORROWED = (XDG_CACHE_HOME, RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, RAY_AUTH_MODE)

# Set for Ray Tune before a Tuner starts: the experiment's state is saved after every trial
# event (its default waits up to minutes), and no CSV/TensorBoard loggers run (each trial's
# run directory already holds its metrics).
TUNE_SETTINGS = {"TUNE_GLOBAL_CHECKPOINT_S": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                 "TUNE_RESULT_BUFFER_LENGTH": "1", "RAY_AIR_NEW_OUTPUT": "0"}  # fmt: skip


def set_for_tune() -> None:
    os.environ.update(TUNE_SETTINGS)
