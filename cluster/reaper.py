"""An embedded Ray must not outlive its driver.

`ray.init` on a machine starts Ray's processes (the GCS, the raylet, the dashboard and
runtime-env agents, ...) as the driver's descendants. When the driver ends normally it shuts
them down; killed outright (SIGKILL, the OOM killer) it cannot, and Ray's agents were seen
still running a minute later, holding their ports. So the driver starts a reaper first: a
bare Python process in a session of its own, which reads from a pipe the pids (and start
times) of the processes the driver started, and when the pipe reaches its end, because the
driver closed it or died, kills whichever of them are still the processes it was told of.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Run with `python -S -c`: no imports beyond os and sys, so it starts in milliseconds.
REAPER = """
import os, sys
told = [tuple(int(v) for v in line.split()) for line in sys.stdin]
for pid, start in told:
    try:
        with open(f"/proc/{pid}/stat") as f:
            if int(f.read().rsplit(")", 1)[1].split()[19]) == start:
                os.kill(pid, 9)
    except (OSError, ValueError, IndexError):
        pass
"""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with
    the pid, what names one process even after the pid is reused."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """The pids below `root` in the process tree, now."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class Reaper:
    """The reaper of this driver's embedded Ray (Linux; elsewhere it does nothing). Made
    just before `ray.init`: what the driver started before (a test's servers, say) is not
    Ray's and is left alone."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.before = set(descendants(os.getpid())) if sys.platform == "linux" else set()
        if sys.platform == "linux":
            self.proc = subprocess.Popen([sys.executable, "-S", "-c", REAPER], stdin=subprocess.PIPE, text=True,
                                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def watch(self) -> None:
        """Tell the reaper of the processes this driver has started since (Ray's)."""
        if self.proc is None or self.proc.stdin is None:
            return
        for pid in set(descendants(os.getpid())) - self.before - {self.proc.pid}:
            if (t := start_time(pid)) is not None:
                self.proc.stdin.write(f"{pid} {t}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """After Ray's shutdown: the reaper ends, killing what shutdown left."""
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.wait()
