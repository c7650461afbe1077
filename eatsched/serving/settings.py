"""Every setting of the host in one dataclass (``eat serve --help`` mirrors it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.profiles import PATCH_COUNTS

DEFAULT_MODEL = "sd-v1-4"


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
    """bearer token required on write endpoints and worker registration (env EAT_TOKEN); None = open"""
    heartbeat_s: float = 1.0
    """how often workers send heartbeats"""
    heartbeat_timeout_s: float = 5.0
    """a worker silent this long is marked down and its tasks re-queued"""
    tick_s: float = 0.1
    """the scheduling loop also runs this often without an event (policies that waited get asked again)"""
    max_prompt_chars: int = 2000
    """longest prompt accepted"""
    max_body_bytes: int = 64 * 1024
    """largest request body accepted on the public API"""
    rate_limit: float = 50.0
    """task submissions per second per client (token bucket; 0 = no limit)"""
    rate_burst: int = 200
    """submissions a client may make at once before the rate limit applies"""
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

    @property
    def allowed_patches(self) -> tuple[int, ...]:
        return tuple(k for k in PATCH_COUNTS if k <= self.nodes)
