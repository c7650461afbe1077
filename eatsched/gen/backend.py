"""The contract between a worker process and what actually generates images (a backend).

A worker receives one ``PatchJob`` per task it takes part in: the task's parameters and its ``GroupSpec``
(the k workers running the task together, this worker's rank, and the rendezvous address for
torch.distributed). The backend keeps the model and the process group loaded between jobs, so a job
for the same ``group_id`` and model reuses them (no init), as the paper's edge servers do.

Backends (``eatsched.gen.backends``): ``simulated`` (sleeps per the time model; placeholder image) and
``diffusers`` (real pipelines with patch parallelism).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GroupSpec:
    """The k workers that run one task together. Same ``group_id`` means same members in the same
    ranks: a backend that still holds that group (and the model) reuses it."""

    group_id: str
    members: tuple[str, ...]  # worker ids, in rank order
    rank: int  # this worker's rank in ``members``
    master_addr: str = "127.0.0.1"  # torch.distributed rendezvous (rank 0's address)
    master_port: int = 0

    @property
    def world_size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class PatchJob:
    """One task's work for one member of its group (patch ``group.rank`` of ``group.world_size``)."""

    task_id: str
    prompt: str
    model: str
    steps: int
    seed: int
    group: GroupSpec
    negative_prompt: str | None = None
    width: int = 512
    height: int = 512
    guidance_scale: float = 7.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PatchJob:
        d = dict(d)
        g = dict(d.pop("group"))
        g["members"] = tuple(g["members"])
        return cls(group=GroupSpec(**g), **d)


@dataclass
class PatchResult:
    """What a member reports back. Every rank returns the whole image (patch parallelism gathers the
    latent on every rank); the host keeps rank 0's. Times are measured by the backend."""

    task_id: str
    rank: int
    init_s: float  # model load + process-group setup spent for this job (0 when reused)
    exec_s: float  # denoising + decode
    reloaded: bool
    image_png: bytes | None = None
    clip_score: float | None = None
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """Generates images for ``PatchJob``s, keeping the loaded model and process group for reuse."""

    name = "backend"

    @abstractmethod
    def run(self, job: PatchJob) -> PatchResult:
        """Load or reuse the model and group for ``job`` (timed as ``init_s``), then generate (``exec_s``)."""

    def release(self) -> None:  # noqa: B027 - optional hook: a backend with nothing to free keeps it
        """Drop the loaded model and group (the host dissolved the group or the worker shuts down)."""

    def close(self) -> None:
        self.release()
