"""Real hosts on one machine: Linux network namespaces joined by veth pairs to a bridge.

Each host is a namespace with its own loopback and one interface, `eth0`, addressed from
the documentation range 198.51.100.0/24 (198.51.100.1, .2, ...); the bridge lives in a
namespace of its own, so the machine's own network is not touched. On each host a Ray
node runs in its own process group (`ray start --block`): the head on the first, the
others joining it by its address. What crosses between hosts crosses a real interface,
which `tc` can shape and `ip link set down` can cut.

Needs root (CI runs as root), iproute2 and nftables; `available()` says why not, for the
tests' skip (CI fails instead of skipping). Everything is removed at the end, processes first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SUBNET = "198.51.100"
GCS_PORT = 6379


# nftables' nft and iproute2's tc install into /usr/sbin, which a user's PATH may lack (a non-root shell's does)
NFT, TC = (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin") for t in ("nft", "tc"))

def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if NFT is None:
        return "no `nft` command (nftables)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"nnps-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def ray_token() -> None:
    """Ray's token file (~/.ray/auth_token), made if missing: every node and driver reads it."""
    token = Path.home() / ".ray" / "auth_token"
    if not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(secrets.token_hex(32))


class MemoryLimit:
    """A memory cgroup of `limit` bytes: cgroup v2's memory.max where the memory controller is
    on the unified hierarchy, else v1's memory.limit_in_bytes (a hybrid host's)."""

    def __init__(self, name: str, limit: int) -> None:
        v2 = Path("/sys/fs/cgroup")
        if "memory" in (v2 / "cgroup.controllers").read_text().split() if (v2 / "cgroup.controllers").exists() else False:
            self.path, self.limit_file, self.peak_file = v2 / name, "memory.max", "memory.peak"
        else:
            self.path, self.limit_file, self.peak_file = (v2 / "memory" / name, "memory.limit_in_bytes",
                                                          "memory.max_usage_in_bytes")  # fmt: skip
        self.path.mkdir()
        (self.path / self.limit_file).write_text(str(limit))

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd` run inside the cgroup (it moves itself in, then execs)."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *cmd]

    def peak(self) -> int:
        """The most memory the cgroup's processes have held at once, in bytes."""
        return int((self.path / self.peak_file).read_text())

    def remove(self) -> None:
        for _ in range(50):  # its processes take a moment to leave after they are killed
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class Hosts:
    def __init__(self, cpus: list[int], env: dict[str, str] | None = None, memory: int | None = None) -> None:
        """`memory`: each host's Ray node in a memory cgroup of that many bytes."""
        self.tag = f"{os.getpid() % 100000}"
        self.names = [f"nnps{self.tag}-h{i + 1}" for i in range(len(cpus))]
        self.switch = f"nnps{self.tag}-sw"
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(len(cpus))]
        self.nodes: list[subprocess.Popen] = []
        self.limits: list[MemoryLimit] = []
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
        for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(k, None)
        # A dead node is declared dead after 3 missed 1 s health checks, not Ray's 5 of 3 s (a
        # host cut off: the run waits for Ray to restart its worker elsewhere).
        self.env.update({"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                         "RAY_health_check_failure_threshold": "3"})  # fmt: skip
        self.env.update(env or {})  # the Ray nodes' environment, which their actors inherit
        ray_token()
        try:
            for name in self.names if memory else []:
                self.limits.append(MemoryLimit(f"{name}-mem", memory))
            self._network()
            for i, n in enumerate(cpus):
                self._node(i, n)
            self._wait_for_nodes(len(cpus))
        except BaseException:
            self.close()
            raise

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def _network(self) -> None:
        for ns in [self.switch, *self.names]:
            self._ip("netns", "add", ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.names, self.addresses)):
            port = f"port{i + 1}"
            self._ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
            self._ip("-n", self.switch, "link", "set", port, "master", "br0")
            self._ip("-n", self.switch, "link", "set", port, "up")
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")

    def _node(self, i: int, cpus: int) -> None:
        where = ["--head", f"--port={GCS_PORT}", "--include-dashboard=false"] if i == 0 else \
            [f"--address={self.addresses[0]}:{GCS_PORT}"]  # fmt: skip
        cmd = ["ip", "netns", "exec", self.names[i], str(BIN / "ray"), "start", "--block", *where,
               f"--node-ip-address={self.addresses[i]}", f"--num-cpus={cpus}", "--disable-usage-stats"]  # fmt: skip
        if self.limits:
            cmd = self.limits[i].wrap(cmd)
        self.nodes.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True))  # fmt: skip
        if i == 0:
            self.wait_for_port(self.addresses[0], GCS_PORT)

    def wait_for_port(self, host: str, port: int, timeout: float = 60) -> None:
        probe = f"import socket; socket.create_connection(('{host}', {port}), timeout=1).close()"
        deadline = time.monotonic() + timeout
        while self.run(0, sys.executable, "-c", probe, check=False).returncode != 0:
            assert all(n.poll() is None for n in self.nodes), "a Ray node exited while starting"
            assert time.monotonic() < deadline, f"{host}:{port} not up in {timeout} s"
            time.sleep(0.5)

    def _wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        count = ("import ray; ray.init(address='auto', log_to_driver=False); "
                 "print(len([x for x in ray.nodes() if x['Alive']]))")  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(0, sys.executable, "-c", count, check=False, env={"RAY_ADDRESS": self.address})
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            assert time.monotonic() < deadline, f"{n} Ray nodes not up in {timeout} s: {out.stderr[-500:]}"
            time.sleep(1)

    @property
    def address(self) -> str:
        return f"{self.addresses[0]}:{GCS_PORT}"

    def run(self, i: int, *cmd: str, check: bool = True, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
        """`cmd` on host i, as a process of that namespace."""
        return subprocess.run(["ip", "netns", "exec", self.names[i], *cmd], env={**self.env, **(env or {})},
                              capture_output=True, text=True, check=check, timeout=timeout)  # fmt: skip

    def popen(self, i: int, *cmd: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.names[i], *cmd], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def shape(self, i: int, rate: str, burst: str = "64kb") -> None:
        """Host i's interface limited to `rate` (tc's token bucket filter, e.g. "20mbit";
        a fast rate needs a burst of at least rate / HZ, e.g. "4mb" for 10gbit)."""
        self._ip("netns", "exec", self.names[i], TC, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                 "burst", burst, "latency", "200ms")  # fmt: skip

    def unshape(self, i: int) -> None:
        subprocess.run(["ip", "netns", "exec", self.names[i], TC, "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True)  # fmt: skip

    def block(self, i: int, port: int) -> None:
        """TCP to `port` on host i dropped when it comes from another host (nftables, in
        host i's namespace): a firewall that lets only Ray's own ports through."""
        rules = (f"table inet nnps {{ chain input {{ type filter hook input priority 0; "
                 f"iifname \"eth0\" tcp dport {port} drop; }}; }}")  # fmt: skip
        self._ip("netns", "exec", self.names[i], NFT, rules)

    def unblock(self, i: int) -> None:
        subprocess.run(["ip", "netns", "exec", self.names[i], NFT, "delete", "table", "inet", "nnps"],
                       capture_output=True)  # fmt: skip

    def cut(self, i: int) -> None:
        """Host i cut off: its interface down."""
        self._ip("-n", self.names[i], "link", "set", "eth0", "down")

    def close(self) -> None:
        for node in self.nodes:
            try:
                os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
            except ProcessLookupError:
                pass
        for node in self.nodes:
            try:
                node.wait(timeout=5)  # a node whose host was cut off waits for its head: not worth more
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for ns in [*self.names, self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for limit in self.limits:
            limit.remove()
