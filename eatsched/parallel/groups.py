"""torch.distributed process groups formed from the host's rendezvous data and kept for reuse."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import torch.distributed as dist


class ProcessGroupCache:
    """The one process group this worker is in, kept while jobs arrive with the same ``group_id``.

    A worker belongs to at most one group at a time (taking some members of a group dissolves it, SPEC
    section 2), so a job for another group destroys the old group and rendezvouses a new one at the job's
    ``master_addr:master_port`` (rank 0 hosts the store). Single-patch jobs need no group.

    :param backend: ``gloo`` (CPU) or ``nccl`` (CUDA)
    :param timeout_s: how long rendezvous and collectives may wait for the other members
    """

    def __init__(self, backend: str = "gloo", timeout_s: float = 120.0):
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"process group backend {backend!r}: use gloo or nccl")
        self.backend = backend
        self.timeout_s = timeout_s
        self.group_id: str | None = None

    def join(self, spec) -> tuple[object, float]:
        """The process group for ``spec`` (a ``GroupSpec``) and the seconds spent forming it (0: reused)."""
        if spec.world_size == 1:
            return None, 0.0
        if self.group_id == spec.group_id and dist.is_initialized():
            return dist.group.WORLD, 0.0
        self.release()
        if not spec.master_port:
            raise ValueError(f"group {spec.group_id}: a {spec.world_size}-member group needs a master_port")
        if spec.master_addr in ("127.0.0.1", "localhost") and self.backend == "gloo":
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        start = time.perf_counter()
        dist.init_process_group(self.backend, init_method=f"tcp://{spec.master_addr}:{spec.master_port}",
                                rank=spec.rank, world_size=spec.world_size, timeout=timedelta(seconds=self.timeout_s))
        self.group_id = spec.group_id
        return dist.group.WORLD, time.perf_counter() - start

    def release(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        self.group_id = None
