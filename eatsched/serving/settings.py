"""Every setting of the host in one dataclass (``eat serve --help`` mirrors it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.profiles import PATCH_COUNTS

DEFAULT_MODEL = "sd-v1-4"
SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 64, 2048, 8
"""image width and height in px"""


def max_result_bytes(width: int, height: int) -> int:
    """A worker result's largest body: JSON around the base64 of the largest PNG of a ``width`` x ``height``
    image (stored uncompressed, RGBA: a filter byte per row, 4 bytes per pixel, plus zlib and chunk framing)."""
    png = height * (1 + 4 * width)
    png += png // 16_000 * 5 + 64 * 1024  # zlib stored blocks (5 bytes per block), PNG header and chunks
    return 4 * -(-png // 3) + 64 * 1024


@dataclass
class HostSettings:
    """Host settings. Times are wall seconds unless they say model seconds."""

    bind: str = "127.0.0.1"
    """address to listen on"""
    port: int = 8000
    """port to listen on"""
    data_dir: str = "eat-data"
    """SQLite database (eat.sqlite) and images/ live here"""
    nodes: int = 8
    """servers N the policy schedules (worker slots); tasks may use at most this many patches"""
    policy: str = "eat"
    """scheduler: eat (shipped checkpoint; falls back to adaptive with a warning) | adaptive | greedy | fifo | ..."""
    checkpoint: str | None = None
    """checkpoint of a learned policy"""
    profile: str = "reference"
    """time profile the online predictor starts from"""
    time_scale: float = 1.0
    """wall seconds per model second: the workers' --time-scale (the kernel runs in model seconds)"""
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    """model names tasks may ask for (the first is the default)"""
    token: str | None = field(default_factory=lambda: os.environ.get("EAT_TOKEN") or None)
    """clients' bearer token (env EAT_TOKEN): required to submit and cancel, and to read tasks, images, the
    cluster and metrics unless ``public_read``; None = open"""
    worker_token: str | None = field(default_factory=lambda: os.environ.get("EAT_WORKER_TOKEN") or None)
    """workers' bearer token (env EAT_WORKER_TOKEN), required on every /v1/workers route; None = workers use
    ``token`` (one shared secret: a warning is logged, as clients could then act as workers)"""
    public_read: bool = False
    """with ``token`` set, reads (tasks, images, cluster without worker addresses, metrics) need no token: demos"""
    forwarded_allow_ips: str | None = None
    """proxies (comma-separated IPs, or *) whose X-Forwarded-For is trusted as the client's address; None = the
    rate limit keys on the peer address and X-Forwarded-For is ignored"""
    heartbeat_s: float = 1.0
    """how often workers send heartbeats"""
    heartbeat_timeout_s: float = 5.0
    """a worker silent this long is marked down and its tasks re-queued"""
    tick_s: float = 0.1
    """the scheduling loop also runs this often without an event (policies that waited get asked again)"""
    max_prompt_chars: int = 2000
    """longest prompt accepted"""
    max_body_bytes: int = 64 * 1024
    """largest request body accepted on every route but worker results"""
    max_result_bytes: int = field(default_factory=lambda: max_result_bytes(SIZE_MAX, SIZE_MAX))
    """largest worker result body (default: the base64 of an uncompressed RGBA PNG of the largest image)"""
    max_poll_s: float = 60.0
    """longest long poll a worker may ask for (GET /v1/workers/{id}/job?wait=)"""
    rate_limit: float = 50.0
    """task submissions per second per client (token bucket; 0 = no limit)"""
    rate_burst: int = 200
    """submissions a client may make at once before the rate limit applies"""
    rate_clients_max: int = 10_000
    """clients the rate limiter remembers (least recently seen are forgotten first: a forgotten client's
    bucket is full again, which it would be anyway after ``rate_burst / rate_limit`` seconds)"""
    job_deadline_factor: float = 10.0
    """an attempt is abandoned (servers freed, task re-queued, late results rejected) once it has run this many
    times its predicted init + exec time ..."""
    job_deadline_min_s: float = 30.0
    """... but never before this many wall seconds"""
    max_attempts: int = 5
    """a task whose workers report an error this many times is marked failed"""
    width: int = 512
    """default image width"""
    height: int = 512
    """default image height"""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("nodes must be >= 1")
        if not self.time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if not self.models:
            raise ValueError("at least one model is needed")
        self.models = tuple(self.models)
        if self.heartbeat_timeout_s <= self.heartbeat_s:
            raise ValueError("heartbeat_timeout_s must be larger than heartbeat_s")
        if not self.job_deadline_factor >= 1.0:
            raise ValueError("job_deadline_factor must be >= 1 (a deadline shorter than the prediction)")
        if not self.job_deadline_min_s > 0:
            raise ValueError("job_deadline_min_s must be > 0")
        if self.token == "" or self.worker_token == "":
            raise ValueError("an empty token would let anyone in; leave it unset for an open host")
        if self.rate_clients_max < 1:
            raise ValueError("rate_clients_max must be >= 1")
        if not 0 < self.max_poll_s <= 600:
            raise ValueError("max_poll_s must be in (0, 600]")

    @property
    def worker_credential(self) -> str | None:
        """The token workers present: ``worker_token``, else ``token``."""
        return self.worker_token or self.token

    def job_deadline_s(self, predicted_init: float, predicted_exec: float) -> float:
        """Wall seconds an attempt may run, from its predicted init and exec (model seconds)."""
        predicted = max(0.0, predicted_init) + max(0.0, predicted_exec)
        return max(self.job_deadline_min_s, self.job_deadline_factor * predicted * self.time_scale)

    @property
    def allowed_patches(self) -> tuple[int, ...]:
        return tuple(k for k in PATCH_COUNTS if k <= self.nodes)
