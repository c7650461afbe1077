"""Per-job state of a patch-parallel denoising run, and the activation exchange its layers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

MODES = ("sync", "stale")
"""``sync``: every layer exchanges fresh activations every step (equals one device).
``stale``: DistriFusion's displaced patch parallelism (stale neighbours, asynchronous exchange)."""

T = TypeVar("T")


class PatchContext:
    """Which band of rows this rank computes, which step the run is at, and the per-layer exchange.

    Every wrapped layer owns a ``slot``. ``exchange(slot, local, combine)`` returns ``combine(parts)``
    where ``parts[r]`` is rank r's activation for that layer: this step's for every rank when the step is
    synchronous, otherwise this rank's fresh one and the others' from the previous step, while this step's
    fresh activations are all-gathered asynchronously into the slot's buffers for the next step.

    :param rank: this process's rank (its band: rows ``rank * H/k`` to ``(rank + 1) * H/k``)
    :param world_size: k, the number of bands
    :param group: the torch.distributed process group (None: the default group)
    :param mode: ``sync`` or ``stale``
    :param warmup_steps: synchronous steps before ``stale`` mode switches to stale activations (at least 1:
        the first step has no previous activations)
    :param flush_each_step: wait for every asynchronous exchange at the end of each step instead of at the
        next use (needed when one step is captured as a CUDA graph, which cannot leave work in flight)
    """

    def __init__(self, rank: int, world_size: int, group=None, *, mode: str = "sync", warmup_steps: int = 1,
                 flush_each_step: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {MODES}")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} is outside a group of {world_size}")
        if warmup_steps < 0:
            raise ValueError("warmup_steps: must be >= 0")
        self.rank = rank
        self.world_size = world_size
        self.group = group
        self.mode = mode
        self.warmup_steps = max(1, warmup_steps)
        self.flush_each_step = flush_each_step
        self.step = 0
        self.full_rows = 0  # latent rows of the whole image, set by the UNet wrapper at each call
        self.sync_exchanges = 0
        self.async_exchanges = 0
        self._buffers: dict[int, list[torch.Tensor]] = {}
        self._pending: dict[int, tuple[object, torch.Tensor]] = {}

    @property
    def synchronous(self) -> bool:
        return self.mode == "sync" or self.step < self.warmup_steps

    def band(self, rows: int) -> tuple[int, int]:
        """This rank's [start, stop) rows of a tensor with ``rows`` rows (split evenly)."""
        if rows % self.world_size:
            raise ValueError(f"{rows} rows cannot be split into {self.world_size} equal bands")
        h = rows // self.world_size
        return self.rank * h, (self.rank + 1) * h

    def exchange(self, slot: int, local: torch.Tensor, combine: Callable[[list[torch.Tensor]], T]) -> T:
        """All ranks' activations for one layer, fresh or one step stale (see the class docstring).

        ``combine`` must build new tensors from the parts (not views of them): the parts of a stale step
        are overwritten by the asynchronous exchange launched right after it returns."""
        if self.world_size == 1:
            return combine([local])
        local = local.contiguous()
        if self.synchronous or slot not in self._buffers:
            self._wait(slot)
            parts = self._buffers.get(slot)
            if parts is None or parts[0].shape != local.shape or parts[0].dtype != local.dtype:
                # allocated once per shape and then rewritten in place, so a captured CUDA graph of a
                # synchronous step and one of a stale step read and write the same buffers
                parts = [torch.empty_like(local) for _ in range(self.world_size)]
                self._buffers[slot] = parts
            dist.all_gather(parts, local, group=self.group)
            self.sync_exchanges += 1
            return combine(parts)
        self._wait(slot)
        buffers = self._buffers[slot]
        parts = list(buffers)
        parts[self.rank] = local
        out = combine(parts)
        work = dist.all_gather(buffers, local, group=self.group, async_op=True)
        self._pending[slot] = (work, local)  # keep ``local`` alive until the exchange has read it
        self.async_exchanges += 1
        return out

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Join every rank's band along the row axis (-2), synchronously: the step's output."""
        if self.world_size == 1:
            return local
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts, dim=-2)

    def end_step(self) -> None:
        if self.flush_each_step:
            self.flush()
        self.step += 1

    def flush(self) -> None:
        """Wait for every exchange still in flight."""
        for slot in list(self._pending):
            self._wait(slot)

    def reset(self) -> None:
        """Start a new image: back to step 0 (synchronous). The buffers stay; step 0 rewrites them."""
        self.flush()
        self.step = 0

    def _wait(self, slot: int) -> None:
        pending = self._pending.pop(slot, None)
        if pending is not None:
            pending[0].wait()
