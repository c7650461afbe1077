"""The ``simulated`` backend: sleeps per the time model and returns a placeholder image.

It keeps the same reuse rule as a real edge server: the model and the process group stay "loaded"
after a job, so the next job of the same group and model skips the init sleep. Times follow the
profile (``exec = steps * step_time(k) / speed``, ``init = init_time(k)`` on a reload), multiplied by
``time_scale`` so a demo or a test runs in seconds."""

from __future__ import annotations

import io
import time

from ...core.profiles import TimeProfile, get_profile
from ..backend import Backend, PatchJob, PatchResult

PLACEHOLDER_SIZE = 256
"""Edge of the placeholder image in pixels (kept small: it travels to the host in every result)."""


def placeholder_png(prompt: str, seed: int, size: int = PLACEHOLDER_SIZE) -> bytes:
    """The prompt's text on a gradient whose colours come from the seed: a recognisable stand-in image."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    h = (seed * 2654435761) & 0xFFFFFF
    c0 = ((h >> 16) & 255, (h >> 8) & 255, h & 255)
    c1 = (255 - c0[0], 255 - c0[1], 255 - c0[2])
    ends = Image.new("RGB", (1, 2))
    ends.putpixel((0, 0), c0)
    ends.putpixel((0, 1), c1)
    img = ends.resize((size, size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    words, lines, line = prompt.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 28:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    for n, text in enumerate(lines[:12]):
        draw.text((10, 10 + 16 * n), text, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class SimulatedBackend(Backend):
    """Sleeps ``time_scale`` x the profile's time; only rank 0 renders the (placeholder) image."""

    name = "simulated"

    def __init__(self, profile: str | TimeProfile = "reference", time_scale: float = 1.0, speed: float = 1.0):
        if not time_scale >= 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.profile = get_profile(profile)
        self.time_scale = float(time_scale)
        self.speed = float(speed)
        self.loaded: tuple[str, str] | None = None  # (group_id, model)

    def run(self, job: PatchJob) -> PatchResult:
        k = job.group.world_size
        if k not in self.profile.step_time:
            raise ValueError(f"profile {self.profile.name!r} has no timings for {k} patches")
        t0 = time.perf_counter()
        reload = self.loaded != (job.group.group_id, job.model)
        if reload:
            self.release()
            time.sleep(self.profile.init_time[k] * self.time_scale)
            self.loaded = (job.group.group_id, job.model)
        t1 = time.perf_counter()
        time.sleep(job.steps * self.profile.step_time[k] / self.speed * self.time_scale)
        png = placeholder_png(job.prompt, job.seed) if job.group.rank == 0 else None
        t2 = time.perf_counter()
        return PatchResult(task_id=job.task_id, rank=job.group.rank, init_s=t1 - t0 if reload else 0.0,
                           exec_s=t2 - t1, reloaded=reload, image_png=png)

    def release(self) -> None:
        self.loaded = None
