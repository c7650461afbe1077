"""Time-model profiles: per-patch-count denoising step time and cold-start (init) time.

A profile is data, not code (SPEC section 2). The time model every part of eatsched uses is

    exec = steps * step_time(k) / min_{j in S} c_j
    init = init_time(k) if the launch is a reload else 0

Built-in profiles:

``reference``      constants of the authors' simulator (the default: makes our tables comparable to
                   the paper's simulated 8- and 12-node columns).
``paper-4090``     paper Table VI (SD v1.4, 1440x1440, RTX 4090). The paper measured k = 1, 2, 4 only;
                   k = 8 is extrapolated (see ``_paper_4090``).
``h100-measured``  measured on an H100 (``data/calibration/h100-sd14-unet-vae.json``, SD v1.4 UNet
                   step with classifier-free guidance batch 2, fp16, eager) at 1440 px, the paper's
                   resolution. ``h100-measured-512`` / ``-768`` / ``-1024`` are the other sizes.

Users add profiles from a TOML or JSON file (``load_profile(path)``), shaped like::

    name = "my-a100"
    description = "..."
    [step_time]     # seconds per denoising step, keyed by patch count
    1 = 0.41
    2 = 0.23
    [init_time]     # seconds to load the model and build the process group
    1 = 20.0
    2 = 21.0
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

PATCH_COUNTS = (1, 2, 4, 8)
"""Patch counts a task may use: the image is split into k row patches, k a power of two."""


class ProfileError(ValueError):
    """A time profile is unknown or malformed."""


@dataclass(frozen=True)
class TimeProfile:
    """Seconds per denoising step and init seconds for each patch count k (on a speed-1.0 server)."""

    name: str
    step_time: dict[int, float]
    init_time: dict[int, float]
    description: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, table in (("step_time", self.step_time), ("init_time", self.init_time)):
            for k, v in table.items():
                if k not in PATCH_COUNTS:
                    raise ProfileError(f"profile {self.name!r}: {label} has patch count {k}; allowed {PATCH_COUNTS}")
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                    raise ProfileError(f"profile {self.name!r}: {label}[{k}] = {v!r} must be a finite number >= 0")
                if label == "step_time" and v <= 0:
                    raise ProfileError(f"profile {self.name!r}: step_time[{k}] must be > 0")
        if set(self.step_time) != set(self.init_time):
            raise ProfileError(f"profile {self.name!r}: step_time and init_time must cover the same patch counts")
        if 1 not in self.step_time:
            raise ProfileError(f"profile {self.name!r}: patch count 1 is required")

    @property
    def patch_counts(self) -> tuple[int, ...]:
        return tuple(sorted(self.step_time))

    def exec_time(self, k: int, steps: int, speed: float = 1.0) -> float:
        return steps * self.step_time[k] / speed

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "step_time": {str(k): v for k, v in sorted(self.step_time.items())},
            "init_time": {str(k): v for k, v in sorted(self.init_time.items())},
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict, *, default_name: str = "custom") -> TimeProfile:
        try:
            step = {int(k): float(v) for k, v in d["step_time"].items()}
            init = {int(k): float(v) for k, v in d["init_time"].items()}
        except KeyError as e:
            raise ProfileError(f"profile file is missing the table {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ProfileError(f"profile file has a bad entry: {e}") from None
        return cls(
            name=str(d.get("name", default_name)),
            step_time=step,
            init_time=init,
            description=str(d.get("description", "")),
            notes={str(k): str(v) for k, v in d.get("notes", {}).items()},
        )


def _reference() -> TimeProfile:
    return TimeProfile(
        name="reference",
        step_time={1: 0.315, 2: 0.15625, 4: 0.14, 8: 0.1},
        init_time={1: 24.0, 2: 24.0, 4: 32.0, 8: 30.0},
        description="constants of the authors' simulator",
    )


def _paper_4090() -> TimeProfile:
    # Paper Table VI measured k = 1, 2, 4. For k = 8 we scale the k = 4 step time by DistriFusion's
    # measured 4 -> 8 patch ratio (paper Table I: 7.6 s -> 4.81 s per image), and keep init at the k = 4
    # value since the paper reports init time "remains relatively constant" across patch counts.
    step8 = 0.20 * 4.81 / 7.6
    return TimeProfile(
        name="paper-4090",
        step_time={1: 0.53, 2: 0.29, 4: 0.20, 8: round(step8, 4)},
        init_time={1: 33.5, 2: 31.9, 4: 35.0, 8: 35.0},
        description="paper Table VI: SD v1.4, 1440x1440, RTX 4090 (k=8 extrapolated)",
        notes={"8": "step = k4 step * 4.81/7.6 (paper Table I); init = k4 init"},
    )


def _calibration_json(name: str) -> dict:
    with resources.files("eatsched.data.calibration").joinpath(name).open() as f:
        return json.load(f)


# Init estimate for the H100: the calibration file measured building the UNet on the GPU (7.8 s), the
# VAE (0.8 s) and the weight copy (0.4 s); a group of k > 1 also builds a communicator, which we estimate
# at 0.5 s per additional member (rendezvous + NCCL init on one host). Documented estimate, not measured.
H100_COMM_INIT_PER_PEER_S = 0.5


def _h100(px: int) -> TimeProfile:
    data = _calibration_json("h100-sd14-unet-vae.json")
    load = data["unet_build_to_gpu_s"] + data["vae_build_to_gpu_s"] + data["unet_weights_h2d_s"]
    step = {
        int(r["patches"]): r["unet_step_ms_cfg2"] / 1000.0
        for r in data["rows"]
        if r.get("px") == px and "patches" in r
    }
    init = {k: round(load + H100_COMM_INIT_PER_PEER_S * (k - 1), 3) for k in step}
    suffix = "" if px == 1440 else f"-{px}"
    return TimeProfile(
        name=f"h100-measured{suffix}",
        step_time=step,
        init_time=init,
        description=f"H100, SD v1.4 UNet step (CFG batch 2, fp16, eager) at {px} px; init estimated",
        notes={"init": f"UNet+VAE build and copy ({load:.2f} s) + {H100_COMM_INIT_PER_PEER_S} s per extra peer"},
    )


_BUILTIN = {
    "reference": _reference,
    "paper-4090": _paper_4090,
    "h100-measured": lambda: _h100(1440),
    "h100-measured-512": lambda: _h100(512),
    "h100-measured-768": lambda: _h100(768),
    "h100-measured-1024": lambda: _h100(1024),
}


def builtin_profiles() -> tuple[str, ...]:
    return tuple(_BUILTIN)


def load_profile(path: str | Path) -> TimeProfile:
    """Read a user profile from a ``.toml`` or ``.json`` file."""
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"profile file {str(p)!r} does not exist")
    if p.suffix == ".json":
        d = json.loads(p.read_text())
    elif p.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        d = tomllib.loads(p.read_text())
    else:
        raise ProfileError(f"profile file {str(p)!r} must end in .toml or .json")
    return TimeProfile.from_dict(d, default_name=p.stem)


def get_profile(name_or_path: str | TimeProfile) -> TimeProfile:
    """A built-in profile by name, or a profile file by path."""
    if isinstance(name_or_path, TimeProfile):
        return name_or_path
    if name_or_path in _BUILTIN:
        return _BUILTIN[name_or_path]()
    if name_or_path.endswith((".toml", ".json")):
        return load_profile(name_or_path)
    raise ProfileError(
        f"profile: unknown profile {name_or_path!r}; built-in: {', '.join(_BUILTIN)} (or a .toml/.json path)"
    )
