"""`ParameterServer`: `nnps.core.server.Server` behind a Ray actor, driving the steps.

It holds the flat parameters, the optimizer and its state, the step counter and the
epoch's running metrics, and it runs the steps itself: for each step of a chunk it draws
the mini-batch from the sampler (a pure function of seed and step), sends each worker
the parameters and its shard's indices, waits for the k replies and applies them:

    for step in range(self.step, stop):                              # on the server
        shards = split(sampler.batch(step), k)
        replies = ray.get([w.gradient_sums.remote(params, s) for w, s in zip(workers, shards)])
        server.apply(*replies)                                        # sum, / m, optimizer step

One round trip (server <-> workers) per step, with the server as the owner of the reply
objects; the driver only starts a chunk and reads the result, off the critical path. On
one node the vectors themselves stay put: the parameters and the k replies live in one
/dev/shm file the server and the workers map (worker/node_buffers.py), the optimizer
updates the parameters there in place, and the calls carry only (file, i, indices).
(Driving each step from the driver costs two round trips per step, because the driver,
as the owner of every object, resolves each dependency; bench/step_overhead.py measures
both.) On one node, with the step file, the indices and acknowledgements go over Unix
sockets instead of Ray calls (worker/step_sockets.py, `_sent_over_sockets`): the same loop with
a socket message where the `.remote` call was, and Ray calls again if a socket breaks.
Across nodes the whole step, parameters and replies too, goes over TCP links the same way
(worker/step_links.py, `_sent_over_links`), one per node: its first worker relays the
steps of the node's others and answers with their sum (worker/node_relay.py,
`_open_links`); `_replies` picks the channel each step.
With NNPS_RAY_COMPILED=1 the step runs as a compiled graph instead, through `plan` and
`apply_planned` below (ray_executor.CompiledSteps).

It asks for no CPU (`num_cpus=0`): its work per step is one vector sum and an optimizer
update, small beside the workers' backprop, and on a 2-core laptop both cores go to
workers. NNPS_SERVER_THREADS=n runs that update on n threads while the workers wait
(core/server.py; one by default). A lost server is not restarted by Ray: the driver rebuilds it from the last
checkpoint (`ray_executor.RayExecutor.restore`).
"""

from __future__ import annotations

import os

import numpy as np
import ray
from ray.exceptions import RayError

from nnps.core.config import TrainConfig
from nnps.core.network import Network
from nnps.core.sampler import Sampler, split
from nnps.core.server import Server, Snapshot
from nnps.worker.gradient_worker import keep_freed_memory, skip_torch_probe
from nnps.worker.node_buffers import Mapped, NodeBuffers
from nnps.worker.step_links import ServerLinks
from nnps.worker.step_sockets import ChannelBroken, ServerSockets

Array = np.ndarray


def node_groups(where: list[tuple[int, str]], relay: bool = True) -> list[list[int]]:
    """The workers' indices grouped by node, in order of first appearance ((pid, node id)
    of each: GradientWorker.where); without relays, every worker on its own."""
    if not relay:
        return [[i] for i in range(len(where))]
    groups: dict[str, list[int]] = {}
    for i, (_, node) in enumerate(where):
        groups.setdefault(node, []).append(i)
    return list(groups.values())


@ray.remote(num_cpus=0)
class ParameterServer:
    def __init__(self, config: TrainConfig, network: Network, snapshot: Snapshot, n_train: int,
                 workers: list, inline_bytes: int, shared: bool = False, threads: int = 1,
                 sockets: bool = False, links: bool = False, relay: bool = True) -> None:  # fmt: skip
        self.sampler = Sampler(n_train, config.batch_size, config.seed)
        self.server = Server(config, network, snapshot, self.sampler.steps_per_epoch)
        self.server.threads = threads  # for the sum and update of wide networks (core/server.py)
        self.workers = workers
        self.inline_bytes = inline_bytes
        self.mapped = self._map_step_file(network) if shared else None
        self._params_into_step_file()
        # Step signals through Unix sockets (worker/step_sockets.py): only with the step file.
        self.want_sockets = sockets and self.mapped is not None
        self.sockets: ServerSockets | None = None
        self.channel_error: str | None = None  # why the sockets were dropped, if they were
        # Without the step file (workers on other nodes), TCP links carry each step's
        # indices, parameters and replies instead of Ray calls (worker/step_links.py).
        self.want_links = links and self.mapped is None
        self.links: ServerLinks | None = None
        self.relay = relay  # one link per node (worker/node_relay.py), or one per worker
        self.link_groups: list[list[int]] | None = None  # the workers of each link, once open
        self.steps_by_channel = {"socket": 0, "link": 0, "ray": 0}
        skip_torch_probe()
        keep_freed_memory()  # the optimizers' temporaries (Adam's) are vector-sized

    def _map_step_file(self, network: Network) -> Mapped | None:
        try:
            return Mapped(NodeBuffers.create(network.layout.size, len(self.workers), network.np_dtype.name))
        except OSError:  # no room in /dev/shm, say: the object store carries the vectors
            return None

    def _params_into_step_file(self) -> None:
        """From now on the optimizer updates the step file's copy of the parameters in place."""
        if self.mapped is not None:
            self.mapped.params[...] = self.server.params
            self.server.params = self.mapped.params

    def vectors(self) -> NodeBuffers | None:
        """The step file, if the vectors travel through shared memory."""
        return self.mapped.spec if self.mapped else None

    def run(self, stop: int) -> int:
        """Apply steps until `stop` (or divergence); returns the step reached."""
        while self.server.step < stop and self.server.diverged_at is None:
            shards = split(self.sampler.batch(self.server.step), len(self.workers))
            channel, replies = self._replies(shards)
            self.server.apply(*replies)
            self.steps_by_channel[channel] += 1
        return self.server.step

    def _replies(self, shards: list[Array]) -> tuple[str, list[Array]]:
        """The workers' replies to one step's shards, and the channel they came by."""
        if self.mapped is not None:
            # The vectors stay in the step file; only indices travel, over the sockets or Ray.
            if self._sent_over_sockets(shards):
                return "socket", self.mapped.replies[: len(shards)]
            spec = self.mapped.spec
            ray.get([w.gradient_sums_shared.remote(spec, i, s) for i, (w, s) in enumerate(zip(self.workers, shards))])  # fmt: skip
            return "ray", self.mapped.replies[: len(shards)]
        if (replies := self._sent_over_links(shards)) is not None:
            return "link", replies
        # Ray inlines arguments up to inline_bytes (connect.inline_bytes()); above that each
        # .remote() call would put its own copy in the object store, so the server puts ONE
        # copy per step that the workers on a node share.
        params = self.server.params
        arg = ray.put(params) if params.nbytes > self.inline_bytes else params
        return "ray", ray.get([w.gradient_sums.remote(arg, s) for w, s in zip(self.workers, shards)])

    def _sent_over_sockets(self, shards: list[Array]) -> bool:
        """One step's shards over the workers' sockets; True once every sum is in its slot.
        False if the sockets are not wanted, or one broke (a worker died): then they are
        all closed, and this step and the rest of the run go by Ray calls."""
        if not self.want_sockets:
            return False
        assert self.mapped is not None  # want_sockets requires the step file
        try:
            if self.sockets is None:
                self.sockets = ServerSockets(self.mapped.spec)
                ray.get([w.serve_steps.remote(self.mapped.spec, i) for i, w in enumerate(self.workers)])
                self.sockets.accept()
            self.sockets.step(shards)
            return True
        except (ChannelBroken, RayError, OSError) as e:
            self._drop_channels(e)
            return False

    def _sent_over_links(self, shards: list[Array]) -> list[Array] | None:
        """One step over the workers' TCP links: the replies, or None if links are not
        wanted or one broke (then they are all closed and the run goes on with Ray calls)."""
        if not self.want_links:
            return None
        try:
            if self.links is None:
                self.links = self._open_links()
            return self.links.step(self.server.params, shards)
        except (ChannelBroken, RayError, OSError) as e:
            self._drop_channels(e)
            return None

    def _open_links(self) -> ServerLinks:
        """Listen, group the workers by node (each group's first worker relays its steps:
        worker/node_relay.py), have the relays' members serve them, and the relays connect."""
        groups = node_groups(ray.get([w.where.remote() for w in self.workers]), self.relay)
        params, host = self.server.params, ray.util.get_node_ip_address()
        links = ServerLinks(host, groups, params.size + 3, params.dtype)
        self.link_groups = groups
        relays = [self.workers[members[0]] for members in groups]
        try:
            for relay, members in zip(relays, groups):
                if len(members) > 1:
                    spec = ray.get(relay.relay_steps.remote(len(members) - 1))
                    ray.get([self.workers[i].serve_steps.remote(spec, j) for j, i in enumerate(members[1:])])
            failed = ray.get([w.serve_links.remote(links.address, links.token, g, len(members))
                              for g, (w, members) in enumerate(zip(relays, groups))])  # fmt: skip
            for g, why in enumerate(failed):
                if why is not None:
                    raise ChannelBroken(f"{links.who(g)} {why}")
            links.accept()
        except BaseException:
            links.close()
            raise
        return links

    def _drop_channels(self, error: Exception) -> None:
        """Close the sockets or links for good, keeping why: the run goes on with Ray calls."""
        self.channel_error = f"{type(error).__name__}: {error}"
        self.want_sockets = self.want_links = False
        for channel in (self.sockets, self.links):
            if channel is not None:
                channel.close()  # the workers' threads read EOF and end
        self.sockets = self.links = None

    def channels(self) -> dict:
        """Steps taken over each channel, why the sockets or links were dropped, and the
        workers of each link (for nnps bench, tests)."""
        return {**self.steps_by_channel, "socket_error": self.channel_error, "link_groups": self.link_groups}

    # The compiled-graph path (ray_executor.CompiledSteps) splits a step into two calls,
    # plan -> workers -> apply_planned, that Ray wires together with shared-memory channels.

    def plan(self, step: int) -> tuple[Array | NodeBuffers, list[Array]]:
        """The parameters (or the step file that holds them) and the k shards of `step`
        (some may be empty)."""
        if step != self.server.step:
            raise RuntimeError(f"compiled step {step} reached a server at step {self.server.step}")
        vectors = self.mapped.spec if self.mapped is not None else self.server.params
        return vectors, split(self.sampler.batch(step), len(self.workers), keep_empty=True)

    def apply_planned(self, *replies: Array | bool | None) -> int:
        if self.mapped is not None:  # replies are acknowledgements; the sums are in the slots
            self.server.apply(*(slot for slot, r in zip(self.mapped.replies, replies) if r is not None))
        else:
            self.server.apply(*(r for r in replies if r is not None))
        return self.server.step

    def load(self, snapshot: Snapshot) -> int:
        """Take over a run at `snapshot` (its parameters, optimizer state, step and epoch
        sums): where a warm start's in-process steps left off (cluster/warm_start.py)."""
        self.server.restore(snapshot)
        self._params_into_step_file()
        return self.server.step

    def params(self) -> Array:
        return self.server.params

    def snapshot(self) -> Snapshot:
        return self.server.snapshot()

    def pid(self) -> int:
        return os.getpid()

    def ready(self) -> bool:
        return True
