"""The ``simulated`` backend: sleeps per the time model and returns a placeholder image that shows how the task ran.

It keeps the same reuse rule as a real edge server: the model and the process group stay "loaded"
after a job, so the next job of the same group and model skips the init sleep. Times follow the
profile (``exec = steps * step_time(k) / speed``, ``init = init_time(k)`` on a reload), multiplied by
``time_scale`` so a demo or a test runs in seconds.

The image (``placeholder_png``) is no picture of the prompt: it is the task's size and is split into the k
horizontal bands (patches) its k servers computed at once, each in its own colour, separated by seams and labelled
with patch, rank and server, with a tick per denoising step. Real images: ``eat worker --backend diffusers``."""

from __future__ import annotations

import io
import time

from ...core.profiles import TimeProfile, get_profile
from ..backend import Backend, PatchJob, PatchResult

BAND_COLOURS = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
                (240, 228, 66), (136, 34, 85))
"""One colour per band (Okabe-Ito without black, then Tol's wine; colour-blind safe): an image's k bands differ."""
SEAM_COLOUR = (17, 17, 17)
"""The line drawn where two bands meet."""


def band_rows(height: int, k: int) -> list[tuple[int, int]]:
    """Pixel rows [top, bottom) of each of the k horizontal bands (patches) of an image ``height`` tall, as the
    patch-parallel pipeline splits them (equal bands, the last one takes the remainder)."""
    h = height // k
    return [(i * h, height if i == k - 1 else (i + 1) * h) for i in range(k)]


def placeholder_png(prompt: str, seed: int, width: int = 512, height: int = 512, *, members: tuple[str, ...] = (),
                    steps: int = 0) -> bytes:
    """A placeholder that shows how the task ran: the image at the task's size, split into one horizontal band per
    patch (k = ``len(members)``, at least 1), each in its own colour with a dark seam between bands and labelled
    with its patch, rank and server; a row of ``steps`` ticks (the denoising steps every band ran at once); the
    prompt in the top band; and a footer saying it is a placeholder and how to get real images."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    k = max(1, len(members))
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    fsize = max(9, min(width, height) // 28)
    font = ImageFont.load_default(size=fsize)
    small = ImageFont.load_default(size=max(8, fsize * 3 // 4))
    text = {"fill": (255, 255, 255), "stroke_width": max(1, fsize // 9), "stroke_fill": (0, 0, 0)}
    pad = max(3, fsize // 3)
    foot_h = small.size + 2 * pad // 2 + 2
    shift = seed % len(BAND_COLOURS)
    for i, (top, bottom) in enumerate(band_rows(height, k)):
        c0 = BAND_COLOURS[(i + shift) % len(BAND_COLOURS)]
        c1 = tuple(int(v * 0.55) for v in c0)
        ends = Image.new("RGB", (1, 2))
        ends.putpixel((0, 0), c0)
        ends.putpixel((0, 1), c1)
        img.paste(ends.resize((width, bottom - top), Image.Resampling.BILINEAR), (0, top))
        if i:
            draw.rectangle((0, top - 1, width, top + 1), fill=SEAM_COLOUR)  # the seam: 3 rows
        name = members[i] if i < len(members) else "one server"
        label = f"patch {i + 1}/{k}  rank {i}  {name}" if members else f"1 patch on {name}"
        y = top + pad + 1
        draw.text((pad + 6, y), label, font=font, **text)
        y += fsize + pad
        # the steps: one tick each, along the bottom of the band (above the footer in the last band)
        floor = bottom - pad - (foot_h if i == k - 1 else 0)
        tick_h = max(3, fsize // 3)
        if steps > 0 and floor - tick_h > y:
            step_w = (width - 2 * (pad + 6)) / steps
            for s in range(steps):
                x0 = pad + 6 + s * step_w
                draw.rectangle((x0, floor - tick_h, x0 + max(1.0, step_w - 2), floor), fill=(255, 255, 255))
            floor -= tick_h + pad
        if i == 0:  # the prompt, as many lines as fit above the ticks
            per_line = max(8, int((width - 2 * (pad + 6)) / (fsize * 0.55)))
            words, lines, line = prompt.split(), [], ""
            for w in words:
                if line and len(line) + len(w) + 1 > per_line:
                    lines.append(line)
                    line = w
                else:
                    line = f"{line} {w}".strip()
            lines.append(line)
            for ln in lines:
                if y + fsize > floor:
                    break
                draw.text((pad + 6, y), ln, font=font, **text)
                y += fsize + 2
    footer = (f"placeholder {width}x{height}, {steps} steps on {k} server{'s' if k > 1 else ''}; "
              "real images: --backend diffusers")
    while draw.textlength(footer, font=small) > width - 2 * pad and small.size > 6:
        small = ImageFont.load_default(size=small.size - 1)
    draw.rectangle((0, height - foot_h, width, height), fill=(0, 0, 0))
    draw.text((pad, height - foot_h + 1), footer, font=small, fill=(230, 230, 230))
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
        png = (placeholder_png(job.prompt, job.seed, job.width, job.height, members=job.group.members,
                              steps=job.steps) if job.group.rank == 0 else None)
        t2 = time.perf_counter()
        return PatchResult(task_id=job.task_id, rank=job.group.rank, init_s=t1 - t0 if reload else 0.0,
                           exec_s=t2 - t1, reloaded=reload, image_png=png)

    def release(self) -> None:
        self.loaded = None
