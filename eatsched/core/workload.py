"""Arrival processes: where an episode's tasks come from.

Every process draws only from the ``np.random.Generator`` it is handed (the env's ``np_random``), so
episodes are reproducible from ``reset(seed=...)`` and never touch the global RNGs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError, EATConfig
from .profiles import PATCH_COUNTS


@dataclass
class Workload:
    """One episode's tasks in arrival order."""

    arrival: np.ndarray  # seconds, non-decreasing
    patches: np.ndarray  # k_i
    models: np.ndarray  # model type index
    prompts: list[str] | None = None

    def __post_init__(self):
        # one array type for the compiled reset (float64 / int64, contiguous), whatever the caller passed
        self.arrival = np.ascontiguousarray(self.arrival, np.float64)
        self.patches = np.ascontiguousarray(self.patches, np.int64)
        self.models = np.ascontiguousarray(self.models, np.int64)
        if not (len(self.arrival) == len(self.patches) == len(self.models)):
            raise ValueError("workload arrays must have one entry per task")

    def __len__(self) -> int:
        return len(self.arrival)


class ArrivalProcess:
    """Base class: ``sample(rng)`` returns one episode's ``Workload``."""

    def sample(self, rng: np.random.Generator) -> Workload:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def max_tasks(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def sample_batch(self, rng: np.random.Generator, n: int):
        """n episodes' workloads as padded arrays (arrival, patches, models, counts), shapes (n, T)."""
        ws = [self.sample(rng) for _ in range(n)]
        t = self.max_tasks
        arrival = np.full((n, t), np.inf)
        patches = np.zeros((n, t), np.int64)
        models = np.zeros((n, t), np.int64)
        counts = np.zeros(n, np.int64)
        for q, w in enumerate(ws):
            m = len(w)
            arrival[q, :m], patches[q, :m], models[q, :m], counts[q] = w.arrival, w.patches, w.models, m
        return arrival, patches, models, counts


class PoissonArrivals(ArrivalProcess):
    """Exact Poisson arrivals: exponential gaps of mean 1/rate, the first one after time 0.

    With ``cfg.prequeued = m`` (the authors' reset): the first m tasks arrive at time 0 and the other n - m arrive by
    the same process from ``cfg.clock_start`` on (the patch counts and models are drawn for all n as before)."""

    def __init__(self, cfg: EATConfig):
        self.prequeued = cfg.prequeued
        self.clock_start = cfg.clock_start
        self.rate = cfg.rate
        self.rate_max = cfg.rate_max
        self.rate_choices = np.asarray(cfg.rate_choices, np.float64)
        self.n = cfg.tasks_per_episode
        self.choices = np.asarray(cfg.patch_choices, dtype=np.int64)
        self.n_models = cfg.n_models

    @property
    def max_tasks(self) -> int:
        return self.n

    def _kinds(self, u: np.ndarray):
        """Patch counts and model types from uniforms u (2, n): uniform over the choices / model types."""
        patches = self.choices[(u[0] * len(self.choices)).astype(np.int64)]
        models = (u[1] * self.n_models).astype(np.int64)
        return patches, models

    def rates(self, rng: np.random.Generator, n: int | None = None):
        """The episode's rate (or n episodes' rates): fixed, or drawn from the range / the choices."""
        if self.rate_max is not None:
            return rng.uniform(self.rate, self.rate_max, n)
        if len(self.rate_choices):
            return rng.choice(self.rate_choices, n)
        return self.rate if n is None else np.full(n, self.rate)

    def sample(self, rng: np.random.Generator) -> Workload:
        # one draw for everything (a reset is on the simulator's hot path): exponential gaps by inversion
        rate = self.rates(rng)
        u = rng.random((3, self.n))
        arrival = np.cumsum(-np.log1p(-u[0]) / rate)
        patches, models = self._kinds(u[1:])
        return Workload(self._prequeue(arrival), patches, models)

    def _prequeue(self, arrival: np.ndarray) -> np.ndarray:
        """``prequeued`` tasks at time 0, the rest of the process (its first n - m arrivals) from ``clock_start``
        (arrays of one episode or of a batch, tasks along the last axis)."""
        m = self.prequeued
        if m == 0 and self.clock_start == 0.0:
            return arrival
        out = np.zeros_like(arrival)
        out[..., m:] = arrival[..., : arrival.shape[-1] - m] + self.clock_start
        return out


    def sample_batch(self, rng: np.random.Generator, n: int):
        # same transformation as ``sample``, all episodes in one draw
        rates = self.rates(rng, n)
        u = rng.random((3, n, self.n))
        arrival = np.cumsum(-np.log1p(-u[0]) / rates[:, None], axis=1)
        patches, models = self._kinds(u[1:])
        return self._prequeue(arrival), patches, models, np.full(n, self.n, np.int64)


class BurstyArrivals(PoissonArrivals):
    """Two-state Markov-modulated Poisson process with the same mean rate as ``cfg.rate``.

    A burst state (rate x burst_factor) holds a ``burst_fraction`` of the time on average; the calm state
    runs slower so the long-run mean stays ``rate``. States last exponential times with mean 10/rate."""

    def __init__(self, cfg: EATConfig):
        super().__init__(cfg)
        f, b = cfg.burst_fraction, cfg.burst_factor
        self.rates = (cfg.rate * (1 - f * b) / (1 - f), cfg.rate * b)  # calm, burst
        self.hold = (10.0 / cfg.rate * (1 - f) / 0.5, 10.0 / cfg.rate * f / 0.5)
        self.burst_fraction = f

    def sample(self, rng: np.random.Generator) -> Workload:
        out = np.empty(self.n)
        t = 0.0
        state = int(rng.random() < self.burst_fraction)  # start in the stationary distribution
        switch = rng.exponential(self.hold[state])
        i = 0
        while i < self.n:
            gap = rng.exponential(1.0 / self.rates[state])
            if t + gap > switch:  # memoryless: restart the draw in the next state
                t = switch
                state = 1 - state
                switch = t + rng.exponential(self.hold[state])
                continue
            t += gap
            out[i] = t
            i += 1
        patches, models = self._kinds(rng.random((2, self.n)))
        return Workload(self._prequeue(out), patches, models)

    sample_batch = ArrivalProcess.sample_batch


class TraceArrivals(ArrivalProcess):
    """Replay a CSV trace with columns ``arrival`` (seconds), ``patches``, ``prompt`` and optional
    ``model``. Every episode replays the whole trace; the rng is not used. The trace's times are used as they are:
    ``prequeued`` and ``clock_start`` do not apply (the clock starts at 0)."""

    def __init__(self, cfg: EATConfig):
        self.path = Path(cfg.trace_path or "")
        self.workload = read_trace(self.path, cfg)

    @property
    def max_tasks(self) -> int:
        return len(self.workload)

    def sample(self, rng: np.random.Generator) -> Workload:
        w = self.workload
        return Workload(w.arrival.copy(), w.patches.copy(), w.models.copy(), list(w.prompts or []))


def read_trace(path: Path, cfg: EATConfig) -> Workload:
    if not path.is_file():
        raise ConfigError("trace_path", f"trace file {str(path)!r} does not exist")
    try:
        rows = _trace_rows(path, cfg)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConfigError("trace_path", f"{path.name} is not a CSV text file ({type(e).__name__})") from None
    if not rows:
        raise ConfigError("trace_path", f"trace {path.name} has no tasks")
    rows.sort(key=lambda r: r[0])  # stable: equal times keep file order
    return Workload(
        np.array([r[0] for r in rows], dtype=np.float64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.int64),
        [r[3] for r in rows],
    )


TRACE_COLUMNS = ("arrival", "patches")
"""The columns a trace must have; ``model`` and ``prompt`` are optional."""


def _trace_rows(path: Path, cfg: EATConfig) -> list[tuple[float, int, int, str]]:
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        have = [c for c in (reader.fieldnames or []) if c]
        missing = [c for c in TRACE_COLUMNS if c not in have]
        if missing:
            raise ConfigError("trace_path", f"trace {path.name} lacks column(s) {', '.join(missing)}; a trace needs "
                                            f"arrival (model s), patches and optionally model, prompt (it has: "
                                            f"{', '.join(have) or 'no header'})")
        for n, row in enumerate(reader, start=2):
            try:
                a, k = float(row["arrival"]), int(row["patches"])
                m = int(row.get("model") or 0)
            except (TypeError, ValueError) as e:
                raise ConfigError("trace_path", f"{path.name} line {n}: {e}") from None
            if not (a >= 0) or k not in PATCH_COUNTS or k > cfg.nodes or not (0 <= m < cfg.n_models):
                raise ConfigError("trace_path", f"{path.name} line {n}: bad arrival/patches/model {dict(row)} (arrival "
                                                f">= 0 model s; patches one of {', '.join(map(str, PATCH_COUNTS))} "
                                                f"and at most {cfg.nodes} nodes; model 0..{cfg.n_models - 1})")
            rows.append((a, k, m, row.get("prompt") or ""))
    return rows


def trace_horizon(cfg: EATConfig, w: Workload) -> float:
    """A time by which any schedule of trace ``w`` that runs one task at a time, each at the most steps on the
    slowest servers with a cold start, from the last arrival on, has finished: the time limit of a trace replay
    that is not given one (a policy that idles longer than that is cut, and says so)."""
    prof = cfg.time_profile
    slowest = min(cfg.server_speeds)
    work = sum(prof.init_time[int(k)] + cfg.s_max * prof.step_time[int(k)] / slowest for k in w.patches)
    return float(max(cfg.time_limit if cfg.time_limit < float("inf") else 0.0, w.arrival.max() + work + 1.0))


def make_arrivals(cfg: EATConfig) -> ArrivalProcess:
    return {"poisson": PoissonArrivals, "bursty": BurstyArrivals, "trace": TraceArrivals}[cfg.arrival](cfg)
