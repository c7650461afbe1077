"""The DEdgeAI multi-edge offloading problem (LAD-TS's own scenario) as a simulator and a Gymnasium env.

B base stations, each with an edge server (capacity f_b GHz) and a processing queue (backlog in Gcycles), and a link
of rate R_b Mbit/s. Time is slotted (``slot_s`` = 1 s). In every slot N_{t,b} tasks arrive at every station b; task
n has an input size d (Mbit), q diffusion steps, a computing density rho (Gcycles per step, so its work is
w = rho q Gcycles) and a result size r (Mbit). The station's agent sends each task to one edge server (action = the
target station a). Its delay, with f = f_a and R = R_a (the target's link, as ``tran_rate_BSs[action]`` in the
authors' ``environment_lad.py``):

    delay = upload + compute + download + wait
    upload = d / R if a != b else 0;  compute = w / f;  download = r / R;  wait = Q_a / f

where Q_a is the target's backlog when the task joins it. The task's w is then added to Q_a. At the end of each
slot every queue drains by f_a * slot_s, never below zero. Reward = -delay.

Order of decisions within a slot (the authors' ``main_lad.py``: ``for t: for b: for n``): station 0's tasks in
arrival order, then station 1's, ..., then the queues drain. A decision *observes* the backlogs as they stood at the
start of the slot (the authors' state holds ``proc_queue_len[t]``), but its *wait* counts every earlier decision of
the same slot, of any station (``proc_queue_len[t] + proc_queue_bef[t]``). So the stations decide at the same time,
without seeing each other's choices of this slot, and all of a slot's decisions can be made in one call
(``OffloadSim.step_slot``); deciding them one at a time (``step_task``, the Gymnasium view) gives the same delays.

Differences from the authors' code, each deliberate: every one of the ``slots`` slots is decided (their loop skips
the last of its 60, which only supplies next states); a task's (q, rho, r) are drawn per task unless
``task_profile="per_index"`` (their code: drawn once per task index n, fixed across slots, stations and episodes,
what the ``dedgeai`` preset sets); the instance (f, R, and the per-index profile) comes from ``instance_seed``
instead of the global RNG seeds 2, 5 and 1.

Observation (single-agent view, one task): ``[d, q, rho, r, onehot(station) (B), backlog (B), f (B), R (B)]``,
physical units, backlogs as at the slot's start; ``OffloadSim.obs_scale`` divides them into O(1) numbers for
networks. Action: ``Discrete(B)``, the target station.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..core.config import ConfigError

PARTS = ("upload", "compute", "download", "wait")
"""The parts of a task's delay, in seconds, in the order of ``OffloadSim.parts``'s columns."""


@dataclass(frozen=True)
class OffloadConfig:
    """Every constant of the offloading problem. Defaults: the authors' main run (``main_lad.py``)."""

    stations: int = 20
    """B: base stations, each with one edge server"""
    slots: int = 60
    """time slots per episode"""
    slot_s: float = 1.0
    """slot length in seconds (queues drain f * slot_s per slot)"""
    tasks_min: int = 1
    """fewest tasks arriving per slot per station (uniform integer in [tasks_min, tasks_max])"""
    tasks_max: int = 50
    """most tasks arriving per slot per station"""
    size_mbit: tuple[float, float] = (2.0, 5.0)
    """d: task input size range, Mbit (uniform)"""
    steps: tuple[int, int] = (1, 14)
    """q: diffusion steps range, inclusive (the authors' randint(1, 15))"""
    density_gcycles: tuple[float, float] = (0.1024, 0.3072)
    """rho: computing density range, Gcycles per step (uniform)"""
    result_mbit: tuple[float, float] = (0.6, 1.0)
    """r: result size range, Mbit (uniform, [lo, hi))"""
    capacity_ghz: tuple[int, int] = (10, 50)
    """f: edge server capacity range, GHz, inclusive integers (drawn once per instance)"""
    rate_mbps: tuple[int, int] = (400, 500)
    """R: link rate range, Mbit/s, inclusive integers (drawn once per instance)"""
    capacities: tuple[float, ...] | None = None
    """explicit f per station (GHz); None: drawn from ``capacity_ghz`` with ``instance_seed``"""
    rates: tuple[float, ...] | None = None
    """explicit R per station (Mbit/s); None: drawn from ``rate_mbps`` with ``instance_seed``"""
    task_profile: Literal["per_task", "per_index"] = "per_task"
    """``per_task``: every task draws its own (q, rho, r); ``per_index``: (q, rho, r) depend only on the task's index
    within its slot and station, drawn once per instance (the authors' code); d is always drawn per task"""
    instance_seed: int = 2
    """seed of the fixed instance: capacities, rates and the per-index task profile (the same every episode)"""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ConfigError(name, msg)

        def is_int(x) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        def positive(x) -> bool:
            return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

        def span(name: str, integer: bool) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(positive(x) for x in v) and v[0] <= v[1]
            ok = ok and (not integer or all(is_int(x) for x in v))
            kind = "integers" if integer else "numbers"
            need(ok, name, f"must be two {kind} 0 < lo <= hi, got {v!r}")
            object.__setattr__(self, name, tuple(int(x) if integer else float(x) for x in v))

        need(is_int(self.stations) and self.stations >= 1, "stations",
             f"must be an integer >= 1, got {self.stations!r}")
        need(is_int(self.slots) and self.slots >= 1, "slots", f"must be an integer >= 1, got {self.slots!r}")
        need(positive(self.slot_s), "slot_s", f"must be a number > 0, got {self.slot_s!r}")
        need(is_int(self.tasks_min) and self.tasks_min >= 1, "tasks_min",
             f"must be an integer >= 1, got {self.tasks_min!r}")
        need(is_int(self.tasks_max) and self.tasks_max >= self.tasks_min, "tasks_max",
             f"must be an integer >= tasks_min ({self.tasks_min}), got {self.tasks_max!r}")
        for name in ("size_mbit", "density_gcycles", "result_mbit"):
            span(name, integer=False)
        for name in ("steps", "capacity_ghz", "rate_mbps"):
            span(name, integer=True)
        for name in ("capacities", "rates"):
            v = getattr(self, name)
            if v is not None:
                need(len(v) == self.stations and all(positive(x) for x in v), name,
                     f"must be {self.stations} numbers > 0 (one per station), got {v!r}")
                object.__setattr__(self, name, tuple(float(x) for x in v))
        need(self.task_profile in ("per_task", "per_index"), "task_profile",
             f"must be 'per_task' or 'per_index', got {self.task_profile!r}")
        need(is_int(self.instance_seed) and self.instance_seed >= 0, "instance_seed",
             f"must be an integer >= 0, got {self.instance_seed!r}")

    def replace(self, **changes) -> OffloadConfig:
        names = {f.name for f in dataclasses.fields(self)}
        for k in changes:
            if k not in names:
                raise ConfigError(k, "unknown field of OffloadConfig")
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> OffloadConfig:
        """A named setting (``OFFLOAD_PRESETS``) with ``overrides`` on top."""
        if name not in OFFLOAD_PRESETS:
            raise ConfigError("preset", f"unknown preset {name!r}; choose from {', '.join(OFFLOAD_PRESETS)}")
        return cls().replace(**{**OFFLOAD_PRESETS[name], **overrides})


OFFLOAD_PRESETS: dict[str, dict] = {
    "dedgeai": {"task_profile": "per_index"},
    "small": {"stations": 3, "slots": 6, "tasks_max": 6, "capacity_ghz": (2, 6)},
}
"""``dedgeai``: the authors' main run (20 stations, 60 slots, 1-50 tasks, f 10-50 GHz, per-index task profile).
``small``: a few stations and slots for tests, with slow servers so that queues build up."""


# --- the instance and the workload ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """What stays fixed across episodes: server capacities and link rates, and the per-index task profile."""

    capacity: np.ndarray  # (B,) GHz
    rate: np.ndarray  # (B,) Mbit/s
    profile_q: np.ndarray  # (tasks_max,) steps of task index n (task_profile="per_index")
    profile_rho: np.ndarray  # (tasks_max,) Gcycles per step
    profile_r: np.ndarray  # (tasks_max,) Mbit


def make_instance(cfg: OffloadConfig) -> Instance:
    rng = np.random.default_rng(cfg.instance_seed)
    f = rng.integers(cfg.capacity_ghz[0], cfg.capacity_ghz[1] + 1, cfg.stations).astype(np.float64)
    rate = rng.integers(cfg.rate_mbps[0], cfg.rate_mbps[1] + 1, cfg.stations).astype(np.float64)
    q, rho, r = _task_profile(cfg, rng, cfg.tasks_max)
    if cfg.capacities is not None:
        f = np.array(cfg.capacities, np.float64)
    if cfg.rates is not None:
        rate = np.array(cfg.rates, np.float64)
    return Instance(f, rate, q, rho, r)


def _task_profile(cfg: OffloadConfig, rng: np.random.Generator, n: int):
    q = rng.integers(cfg.steps[0], cfg.steps[1] + 1, n).astype(np.float64)
    rho = rng.uniform(*cfg.density_gcycles, n)
    r = rng.uniform(*cfg.result_mbit, n)
    return q, rho, r


@dataclass
class OffloadWorkload:
    """One episode's tasks in decision order: by slot, then station, then index within the station's slot."""

    slot: np.ndarray  # int
    station: np.ndarray  # int
    index: np.ndarray  # int, 0.. within (slot, station)
    size: np.ndarray  # d, Mbit
    steps: np.ndarray  # q
    density: np.ndarray  # rho, Gcycles per step
    result: np.ndarray  # r, Mbit

    def __post_init__(self):
        for name in ("slot", "station", "index"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), np.int64))
        for name in ("size", "steps", "density", "result"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), np.float64))
        key = (self.slot, self.station, self.index)
        if len({len(a) for a in (*key, self.size, self.steps, self.density, self.result)}) != 1:
            raise ValueError("workload arrays must have one entry per task")
        if len(self.slot) and np.any(np.diff(np.lexsort(key[::-1])) != 1):
            raise ValueError("workload tasks must be sorted by (slot, station, index)")

    @property
    def work(self) -> np.ndarray:
        """w = rho q, Gcycles."""
        return self.density * self.steps

    def __len__(self) -> int:
        return len(self.slot)


def make_workload(cfg: OffloadConfig, inst: Instance, rng: np.random.Generator) -> OffloadWorkload:
    """Draw one episode: N_{t,b} ~ U{tasks_min..tasks_max} tasks per slot and station, each with its d (and, per
    task, q, rho, r)."""
    counts = rng.integers(cfg.tasks_min, cfg.tasks_max + 1, (cfg.slots, cfg.stations)).reshape(-1)
    n = int(counts.sum())
    group = np.repeat(np.arange(counts.size), counts)
    index = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    size = rng.uniform(*cfg.size_mbit, n)
    if cfg.task_profile == "per_index":
        q, rho, r = inst.profile_q[index], inst.profile_rho[index], inst.profile_r[index]
    else:
        q, rho, r = _task_profile(cfg, rng, n)
    return OffloadWorkload(group // cfg.stations, group % cfg.stations, index, size, q, rho, r)


# --- the delay model (the one implementation) ----------------------------------------------------------------
def delay_parts(station, target, size, work, result, queue_before, capacity, rate) -> np.ndarray:
    """(n, 4) delay parts (``PARTS``) of n tasks sent from ``station`` to ``target``, each finding ``queue_before``
    Gcycles at its target."""
    f, link = capacity[target], rate[target]
    upload = np.where(target != station, size / link, 0.0)
    return np.stack([upload, work / f, result / link, queue_before / f], axis=-1)


def queue_before(backlog, target, work) -> np.ndarray:
    """The backlog each of a run of consecutive decisions finds at its target: the target's ``backlog`` before the
    run plus the work of the run's earlier tasks sent to the same target."""
    order = np.argsort(target, kind="stable")
    w, t = work[order], target[order]
    excl = np.cumsum(w) - w  # work of the earlier tasks in sorted order
    excl -= excl[np.searchsorted(t, t)]  # ... minus that of the tasks of smaller targets
    out = np.empty_like(w)
    out[order] = backlog[t] + excl
    return out


class OffloadSim:
    """One shared simulation of all stations: per-slot batched decisions (``step_slot``) or one task at a time
    (``step_task``); both run the same two functions above. Records each task's target and delay parts."""

    def __init__(self, config: OffloadConfig | None = None):
        self.config = cfg = config or OffloadConfig()
        self.instance = make_instance(cfg)
        self.capacity, self.rate = self.instance.capacity, self.instance.rate
        b = cfg.stations
        self.obs_dim = 4 + 4 * b
        self.obs_scale = np.concatenate([
            [cfg.size_mbit[1], cfg.steps[1], cfg.density_gcycles[1], cfg.result_mbit[1]], np.ones(b),
            np.full(b, self.capacity.max() * cfg.slot_s), np.full(b, self.capacity.max()), np.full(b, self.rate.max()),
        ]).astype(np.float32)
        """divides an observation into O(1) numbers (backlogs in slots of the fastest server's work)"""
        self.workload: OffloadWorkload | None = None

    def reset(self, seed: int | None = None, *, rng: np.random.Generator | None = None,
              workload: OffloadWorkload | None = None) -> None:
        """A new episode: ``workload`` if given, else one drawn from ``rng`` (or ``np.random.default_rng(seed)``)."""
        cfg = self.config
        if workload is None:
            workload = make_workload(cfg, self.instance, rng if rng is not None else np.random.default_rng(seed))
        if len(workload) and (workload.slot.max() >= cfg.slots or workload.station.max() >= cfg.stations):
            raise ValueError("workload has a slot or station outside the config")
        self.workload = w = workload
        self.work = w.work
        self.starts = np.searchsorted(w.slot, np.arange(cfg.slots + 1))  # tasks of slot t: starts[t]..starts[t+1]
        n = len(w)
        self.target = np.full(n, -1, np.int64)
        self.parts = np.zeros((n, len(PARTS)))
        self.backlog = np.zeros(cfg.stations)  # Gcycles at the start of the current slot
        self.added = np.zeros(cfg.stations)  # Gcycles sent to each server so far in the current slot
        self.drained = np.zeros(cfg.stations)  # Gcycles processed so far in the episode
        self.slot, self.pos = 0, 0
        self._skip_empty_slots()

    @property
    def done(self) -> bool:
        return self.slot >= self.config.slots

    @property
    def delays(self) -> np.ndarray:
        """Each task's delay (s) so far (0 for undecided ones)."""
        return self.parts.sum(axis=1)

    def pending(self) -> np.ndarray:
        """Indices (into the workload) of the current slot's undecided tasks, in decision order."""
        return np.arange(self.pos, self.starts[self.slot + 1]) if not self.done else np.arange(0)

    def observe(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), obs_dim) float32 observations of these tasks, with the backlogs at the current slot's start."""
        w, b = self.workload, self.config.stations
        obs = np.empty((len(idx), self.obs_dim), np.float32)
        obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3] = w.size[idx], w.steps[idx], w.density[idx], w.result[idx]
        obs[:, 4:4 + b] = np.arange(b) == w.station[idx, None]
        obs[:, 4 + b:4 + 2 * b] = self.backlog
        obs[:, 4 + 2 * b:4 + 3 * b] = self.capacity
        obs[:, 4 + 3 * b:] = self.rate
        return obs

    def step_slot(self, actions) -> np.ndarray:
        """Decide every pending task of the current slot (``actions`` in ``pending()`` order) and end the slot.
        Returns the (n, 4) delay parts."""
        idx = self.pending()
        return self._decide(idx, np.asarray(actions, np.int64).reshape(len(idx)))

    def step_task(self, action: int) -> np.ndarray:
        """Decide the next task; returns its (4,) delay parts (the slot ends after its last task)."""
        return self._decide(self.pending()[:1], np.array([action], np.int64))[0]

    def candidate_delays(self) -> np.ndarray:
        """(B,) the next task's delay on each target given the current backlogs, this slot's decisions included
        (full queue knowledge, what Opt-TS uses)."""
        i, b = self.pos, self.config.stations
        w, targets = self.workload, np.arange(b)
        return delay_parts(w.station[i], targets, w.size[i], self.work[i], w.result[i], self.backlog + self.added,
                           self.capacity, self.rate).sum(axis=1)

    def _decide(self, idx: np.ndarray, actions: np.ndarray) -> np.ndarray:
        b = self.config.stations
        if self.done or len(idx) == 0:
            raise RuntimeError("the episode is over; call reset()")
        if actions.min() < 0 or actions.max() >= b:
            raise ValueError(f"actions must be station indices in 0..{b - 1}")
        w, work = self.workload, self.work[idx]
        qb = queue_before(self.backlog + self.added, actions, work)
        parts = delay_parts(w.station[idx], actions, w.size[idx], work, w.result[idx], qb, self.capacity, self.rate)
        self.target[idx], self.parts[idx] = actions, parts
        self.added += np.bincount(actions, work, minlength=b)
        self.pos = int(idx[-1]) + 1
        if self.pos == self.starts[self.slot + 1]:
            self._end_slot()
            self._skip_empty_slots()
        return parts

    def _end_slot(self) -> None:
        load = self.backlog + self.added
        done = np.minimum(load, self.capacity * self.config.slot_s)
        self.backlog, self.drained = load - done, self.drained + done
        self.added[:] = 0.0
        self.slot += 1

    def _skip_empty_slots(self) -> None:
        """Slots without tasks (only in a given workload) just drain."""
        while not self.done and self.starts[self.slot] == self.starts[self.slot + 1]:
            self._end_slot()


# --- the Gymnasium view ----------------------------------------------------------------------------------------
class OffloadEnv(gym.Env):
    """
    ## Description
    The DEdgeAI offloading problem (module docstring): one step decides one task, in the order station 0's tasks of
    slot 0, station 1's, ..., then slot 1. Per-station agents share this one simulation; a single agent (this view)
    decides for every station, the deciding station is one-hot in the observation.

    ## Action Space
    ``Discrete(B)``: the edge server (station) that processes the task; the deciding station itself = local.

    ## Observation Space
    ``Box(0, hi, (4 + 4B,), float32)``: ``[d, q, rho, r, onehot(station), backlog (Gcycles, at the slot's start),
    f (GHz), R (Mbit/s)]``. After the last task: zeros.

    ## Rewards
    -delay of the task, seconds.

    ## Episode End
    Termination after the last task of the last slot. No truncation.

    ## Info
    After a step: the decided task's ``delay`` and its parts ``upload``, ``compute``, ``download``, ``wait``;
    its ``station``, ``target``, ``slot``. Always: ``backlog`` (the current backlogs, this slot's decisions
    included). ``reset(options={"workload": OffloadWorkload(...)})`` replays a given workload.

    ## Arguments
    ``gymnasium.make("eatsched/Offload-v0", preset="dedgeai", stations=10, ...)``: a preset and/or any
    ``OffloadConfig`` field as a keyword, or ``config=OffloadConfig(...)``.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: OffloadConfig | None = None, *, preset: str | None = None, **overrides):
        if config is None:
            config = OffloadConfig.preset(preset, **overrides) if preset else OffloadConfig(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.sim = OffloadSim(config)
        cfg, b = config, config.stations
        most_work = cfg.slots * cfg.tasks_max * b * cfg.steps[1] * cfg.density_gcycles[1]
        high = np.concatenate([[cfg.size_mbit[1], cfg.steps[1], cfg.density_gcycles[1], cfg.result_mbit[1]],
                               np.ones(b), np.full(b, most_work), self.sim.capacity, self.sim.rate])
        self.observation_space = spaces.Box(0.0, high.astype(np.float32), (self.sim.obs_dim,), np.float32)
        self.action_space = spaces.Discrete(b)

    def _obs(self) -> np.ndarray:
        if self.sim.done:
            return np.zeros(self.sim.obs_dim, np.float32)
        return self.sim.observe(self.sim.pending()[:1])[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.sim.reset(rng=self.np_random, workload=(options or {}).get("workload"))
        return self._obs(), {"backlog": self.sim.backlog + self.sim.added}

    def step(self, action):
        sim = self.sim
        i = sim.pos
        parts = sim.step_task(int(action))
        delay = float(parts.sum())
        info = {"delay": delay, **dict(zip(PARTS, parts.tolist(), strict=True)),
                "station": int(sim.workload.station[i]), "target": int(action), "slot": int(sim.workload.slot[i]),
                "backlog": sim.backlog + sim.added}
        return self._obs(), -delay, sim.done, False, info
