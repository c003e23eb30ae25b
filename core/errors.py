"""The project's own exceptions.

Each carries a one-line message meant for the user as it stands: the CLI prints it after
`error: ` and exits 1. Code raises these for anything the user can fix (a bad flag, a bad
file, an unreachable address); a bare Python exception means a bug in nnps.
"""


class NnpsError(Exception):
    """Base of every error the CLI turns into one line and a non-zero exit."""


class ConfigError(NnpsError, ValueError):
    """A run's configuration (or a CLI flag) is invalid."""


class DataError(NnpsError):
    """A dataset file is missing, malformed or does not match its catalog entry."""


class CheckpointError(NnpsError):
    """A checkpoint is unreadable or does not fit the network it is loaded into."""


class DivergenceError(NnpsError):
    """The cost became NaN or infinite; training stopped."""


class ClusterError(NnpsError):
    """Ray could not be reached, or a job or actor failed."""
