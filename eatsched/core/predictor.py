"""Online time predictor (SPEC section 2): learns step_time and init_time from measured runs.

The host starts from a time profile and refits, per (model, k, server class), the two numbers of the
time model from what workers report:

    exec = steps * step_time(k) / speed      ->  step_time = sum(x y) / sum(x x),  x = steps / speed
    init = init_time(k)   (reloads only)     ->  init_time = mean of measured inits

Both are least-squares fits (a line through the origin and a constant). The profile enters as
``prior_weight`` pseudo-observations, so the first measurements nudge the profile instead of replacing
it, and a run of real measurements soon dominates. ``tables(model, server_class)`` returns the
``step_time[k]`` / ``init_time[k]`` arrays ``kernel.plan`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .profiles import PATCH_COUNTS, TimeProfile

PRIOR_STEPS = 20
"""Steps of the pseudo-observation that carries the profile's step time into the fit."""


@dataclass
class _Fit:
    sxy: float = 0.0  # sum of x * y for exec (x = steps / speed, y = exec seconds)
    sxx: float = 0.0
    init_sum: float = 0.0
    init_n: float = 0.0
    runs: int = 0  # measured runs (not counting the prior)


class TimePredictor:
    """Per (model, k, server class) least-squares estimates of seconds per step and init seconds.

    ``scale`` converts the profile's seconds into the caller's clock (the host runs the kernel in model
    seconds, so it is 1 there); ``prior_weight`` is how many measurements the profile is worth."""

    def __init__(self, profile: TimeProfile, *, prior_weight: float = 3.0, scale: float = 1.0):
        if prior_weight <= 0:
            raise ValueError("prior_weight must be > 0 (the profile is the starting point of every fit)")
        self.profile = profile
        self.prior_weight = float(prior_weight)
        self.scale = float(scale)
        self._fits: dict[tuple[int, int, str], _Fit] = {}
        self.version = 0  # bumped by every measurement, so callers refill their tables only on change

    def _fit(self, model: int, k: int, server_class: str) -> _Fit:
        key = (model, k, server_class)
        f = self._fits.get(key)
        if f is None:
            if k not in self.profile.step_time:
                raise ValueError(f"profile {self.profile.name!r} has no timings for k={k}")
            w = self.prior_weight
            x = float(PRIOR_STEPS)
            step = self.profile.step_time[k] * self.scale
            f = _Fit(sxy=w * x * x * step, sxx=w * x * x,
                     init_sum=w * self.profile.init_time[k] * self.scale, init_n=w)
            self._fits[key] = f
        return f

    def observe(self, *, model: int, k: int, steps: int, speed: float, exec_s: float, init_s: float | None,
                server_class: str = "default") -> None:
        """Record one measured run. ``init_s`` is None (or ignored) for a reuse (no init happened);
        ``speed`` is the slowest member's speed factor."""
        if steps <= 0 or speed <= 0 or not np.isfinite(exec_s) or exec_s < 0:
            return
        f = self._fit(model, k, server_class)
        x = steps / speed
        f.sxy += x * exec_s
        f.sxx += x * x
        if init_s is not None and np.isfinite(init_s) and init_s >= 0:
            f.init_sum += init_s
            f.init_n += 1.0
        f.runs += 1
        self.version += 1

    def step_time(self, model: int, k: int, server_class: str = "default") -> float:
        f = self._fit(model, k, server_class)
        return f.sxy / f.sxx

    def init_time(self, model: int, k: int, server_class: str = "default") -> float:
        f = self._fit(model, k, server_class)
        return f.init_sum / f.init_n

    def runs(self, model: int, k: int, server_class: str = "default") -> int:
        return self._fit(model, k, server_class).runs

    def fill_tables(self, step_out: np.ndarray, init_out: np.ndarray, model: int = 0,
                    server_class: str = "default") -> None:
        """Write ``step_time[k]`` and ``init_time[k]`` (indexed by patch count) in place, NaN where the
        profile has no entry: the layout of ``core.state.make_time_tables``."""
        step_out[:] = np.nan
        init_out[:] = np.nan
        for k in PATCH_COUNTS:
            if k in self.profile.step_time:
                step_out[k] = self.step_time(model, k, server_class)
                init_out[k] = self.init_time(model, k, server_class)

    def snapshot(self) -> list[dict]:
        """Every fit as a row (for the cluster view and logs)."""
        rows = []
        for (model, k, cls) in sorted(self._fits):
            rows.append({"model": model, "k": k, "server_class": cls, "runs": self._fits[(model, k, cls)].runs,
                         "step_time": self.step_time(model, k, cls), "init_time": self.init_time(model, k, cls)})
        return rows
