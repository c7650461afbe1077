"""Every constant of the problem model in one typed, validated, frozen dataclass.

The simulator, the learned and heuristic schedulers and the serving host all read an ``EATConfig``;
nothing else holds a constant of the model. Invalid values raise ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from .profiles import PATCH_COUNTS, ProfileError, TimeProfile, get_profile


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class EATConfig:
    """Cluster, workload, decision and reward constants (SPEC section 2). Defaults follow SPEC / the
    authors' simulator."""

    # --- cluster -------------------------------------------------------------------------------------
    nodes: int = 8
    """number of edge GPU servers N"""
    speeds: tuple[float, ...] | None = None
    """per-server speed factor c_j (1.0 = the profile's reference GPU); None = all 1.0"""
    profile: str | TimeProfile = "reference"
    """time-model profile: a built-in name (see ``eat profiles``) or a .toml/.json path"""
    n_models: int = 1
    """number of model types tasks may ask for (drawn uniformly)"""
    regroup_time: float | None = None
    """extension, off by default: init seconds when every chosen server already holds the model but is
    not exactly one idle group (only the communicator is rebuilt); None = full init_time"""

    # --- workload ------------------------------------------------------------------------------------
    rate: float = 0.1
    """Poisson arrival rate lambda (tasks per second)"""
    rate_max: float | None = None
    """Poisson only: when set, each episode draws its rate uniformly from [rate, rate_max] (training one policy
    over light and heavy load; ``eat train --rate 0.05:0.6``)"""
    rate_choices: tuple[float, ...] = ()
    """Poisson only: when set, each episode draws its rate from these values with equal chance
    (``eat train --rate 0.1,0.25,0.5``); ``rate`` is then their smallest"""
    arrival: Literal["poisson", "bursty", "trace"] = "poisson"
    """arrival process: exact Poisson, bursty (two-state Markov-modulated Poisson), or trace replay"""
    trace_path: str | None = None
    """CSV for ``arrival='trace'``: columns arrival (s), patches, prompt[, model]"""
    burst_factor: float = 4.0
    """bursty arrivals: rate multiplier in the burst state (the calm state runs slower to keep the mean)"""
    burst_fraction: float = 0.2
    """bursty arrivals: long-run fraction of time in the burst state"""
    tasks_per_episode: int = 32
    """tasks per episode"""
    patch_choices: tuple[int, ...] = (1, 2, 4)
    """patch counts k a task may have, drawn uniformly (8 allowed on clusters of >= 8 servers)"""

    # --- decisions -----------------------------------------------------------------------------------
    queue_len: int = 10
    """L: visible queue length (tasks the policy can pick from, oldest first)"""
    s_min: int = 5
    """fewest denoising steps a task may get"""
    s_max: int = 32
    """most denoising steps a task may get"""
    tick: float = 0.1
    """seconds the clock advances after a no-op in tick mode"""
    mode: Literal["tick", "event", "grid"] = "tick"
    """after a no-op: advance by ``tick`` (``tick``), or jump to the next arrival/completion (``event``). In both,
    when no visible task can start the clock jumps to the exact time of the next arrival or completion.
    ``grid`` (the authors' simulator): the clock only ever moves in steps of ``tick`` from its start (summed one
    tick at a time, as their ``current_time += 0.1``), an arrival is seen at the first grid time at or after it and
    a server frees at the first grid time at or after its task's end (with ``float32_durations``: after as many
    ticks as their float32 countdown takes)"""
    paper_literal: bool = False
    """paper's literal task rule: take the highest-scored visible task, no-op if it cannot start"""
    time_limit: float = 1024.0
    """episode time limit in seconds (truncation)"""
    time_scale: float = 100.0
    """seconds per unit of the normalized time features of the observation"""

    # --- quality and reward --------------------------------------------------------------------------
    q_max: float = 0.27
    """quality ceiling of q(s)"""
    q_min: float = 0.0
    """Q_min: tasks whose q(s) falls below it pay the penalty w_p (0 = never with s_min >= 5)"""
    w_t: float = 250.0
    """time weight: the time term is w_t / (w_w * Wbar + wait + init + exec)"""
    w_w: float = 1.0
    """weight of the visible queue's mean waiting time Wbar in the time term"""
    w_q: float = 10.0
    """quality weight"""
    w_p: float = 1.0
    """quality penalty P, paid when q(s) < Q_min"""
    r_max: float = 10.0
    """cap of the time term"""
    reward: Literal["paper", "response"] = "paper"
    """``paper``: each launch earns the capped time term plus the quality term (SPEC). ``response`` (ours, after
    Decima): each step costs ``w_r`` per task-second spent in the system (waiting or running) during the step, and a
    launch earns ``w_q q(s) - w_p [q < Q_min]``; an episode's return is then ``w_q`` x the summed quality minus
    ``w_r`` x the summed response time, the objective the paper states (quality up, latency down)"""
    w_r: float = 0.1
    """``reward="response"``: cost per task-second in the system (model seconds)"""

    # --- the authors' simulator: each difference from SPEC a switch (SPEC's behaviour is the default) -----------
    # ``EATConfig.preset("authors")`` / ``--preset authors`` sets them all (``PRESETS``); ``AUTHORS_FIXES`` names
    # the changes that turn each one back to SPEC (the ablation in docs/results.md). ``mode="grid"`` (above) and
    # ``paper_literal`` (above) are two more of them.
    selector: Literal["least-fragmentation", "first-idle"] = "least-fragmentation"
    """server selector: SPEC's (reuse an idle group of the model and size, else ungrouped idle servers first, then
    break the groups that de-group fewest) or the authors' ``first-idle`` (the first idle group of exactly k by server
    index, else the first k idle servers by index, grouped or not)"""
    prequeued: int = 0
    """generated workloads (Poisson, bursty): this many of the episode's tasks wait at time 0 when it starts (the
    authors' reset queues 10); the others arrive from ``clock_start`` on. A trace holds all its arrivals itself and
    ignores this and ``clock_start``"""
    clock_start: float = 0.0
    """generated workloads: the time of the episode's first decision (the authors' clock starts at 1 s)"""
    step_decoding: Literal["rounded", "32u"] = "rounded"
    """steps from u = (a1 + 1) / 2: SPEC's ``round(s_min + u (s_max - s_min))``, or the authors' ``32u``:
    ``s_max * u`` unrounded (0..32 steps; q = 0 below 5 steps)"""
    float32_durations: bool = False
    """durations as the authors' code computes them under NumPy 2: ``float32(step_time) * float32(steps) + init`` in
    float32 (and, with ``mode="grid"``, counted down in float32 by ``tick`` to decide when the servers free up)"""
    quality_dip: bool = False
    """the authors' quality curve: ``0.16 ln s / ln 6 - 0.02`` uncapped up to 30 steps (0.284 at 30), then ``q_max``
    past 30 steps (SPEC: capped at ``q_max``, monotone)"""
    empty_slots_win: bool = False
    """the authors' task rule: the highest-scored of all ``queue_len`` slots wins, empty ones included; an empty or
    unstartable winner is a no-op (SPEC: empty slots never win)"""
    greedy_slot_defect: bool = False
    """Greedy as the authors' GreedyAgent writes its action: the step fraction lands in the execute slot and 1 in the
    steps slot, so every Greedy launch runs ``s_max`` steps (SPEC section 5)"""
    greedy_unpriced: bool = False
    """Greedy prices a candidate as the authors' ``envaluate_action`` does before a launch: the task's duration is
    still 0 (init and execution are not priced) and Wbar includes the candidate itself"""
    sac_double_tanh: bool = False
    """the SAC family's deployed action is squashed by tanh a second time, as tianshou's ``action_bound_method="tanh"``
    did on top of the authors' tanh actor (steps can then never exceed ~28)"""
    train_rate: float | None = None
    """``eat train`` draws its training episodes at this rate whatever ``--rate`` says (the authors' training
    scripts always used 0.5); None: the configured rate"""

    extra: dict = field(default_factory=dict, compare=False, repr=False)
    """free-form metadata carried along (e.g. for serving); never read by the model"""

    @property
    def rate_span(self) -> tuple[float, float]:
        """The lowest and highest arrival rate an episode can have."""
        if self.rate_choices:
            return min(self.rate_choices), max(self.rate_choices)
        return self.rate, self.rate_max if self.rate_max is not None else self.rate

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ConfigError(name, msg)

        def finite(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        need(isinstance(self.nodes, int) and self.nodes >= 1, "nodes", f"must be an integer >= 1, got {self.nodes!r}")
        need(self.nodes <= 62, "nodes", f"at most 62 servers are supported, got {self.nodes}")
        if self.speeds is not None:
            object.__setattr__(self, "speeds", tuple(float(s) for s in self.speeds))
            need(len(self.speeds) == self.nodes, "speeds", f"needs {self.nodes} values, got {len(self.speeds)}")
            need(all(finite(s) and s > 0 for s in self.speeds), "speeds", "every speed must be > 0")
        try:
            prof = get_profile(self.profile)
        except ProfileError as e:
            raise ConfigError("profile", str(e).removeprefix("profile: ")) from None
        object.__setattr__(self, "_profile", prof)
        need(isinstance(self.n_models, int) and self.n_models >= 1, "n_models", "must be an integer >= 1")
        need(self.regroup_time is None or (finite(self.regroup_time) and self.regroup_time >= 0),
             "regroup_time", "must be None or a number >= 0")

        need(finite(self.rate) and self.rate > 0, "rate", f"must be a number > 0, got {self.rate!r}")
        object.__setattr__(self, "rate_choices", tuple(float(r) for r in self.rate_choices))
        need(self.rate_max is None or (finite(self.rate_max) and self.rate_max > self.rate), "rate_max",
             f"must be None or a number > rate ({self.rate}), got {self.rate_max!r}")
        need(all(finite(r) and r > 0 for r in self.rate_choices), "rate_choices", "every rate must be > 0")
        need(not (self.rate_max is not None and self.rate_choices), "rate_max",
             "give a rate range or choices, not both")
        need(self.arrival == "poisson" or (self.rate_max is None and not self.rate_choices), "rate_max",
             "a range or list of rates needs arrival='poisson'")
        need(self.arrival in ("poisson", "bursty", "trace"), "arrival",
             f"must be 'poisson', 'bursty' or 'trace', got {self.arrival!r}")
        need(self.arrival != "trace" or bool(self.trace_path), "trace_path", "is required when arrival='trace'")
        need(finite(self.burst_factor) and self.burst_factor >= 1, "burst_factor", "must be >= 1")
        need(finite(self.burst_fraction) and 0 < self.burst_fraction < 1, "burst_fraction", "must be in (0, 1)")
        need(self.burst_factor * self.burst_fraction < 1, "burst_factor",
             "burst_factor * burst_fraction must be < 1 so the calm state keeps a positive rate")
        need(isinstance(self.tasks_per_episode, int) and self.tasks_per_episode >= 1,
             "tasks_per_episode", "must be an integer >= 1")
        object.__setattr__(self, "patch_choices", tuple(int(k) for k in self.patch_choices))
        need(len(self.patch_choices) >= 1, "patch_choices", "needs at least one patch count")
        for k in self.patch_choices:
            need(k in PATCH_COUNTS, "patch_choices", f"patch count {k} not in {PATCH_COUNTS}")
            need(k <= self.nodes, "patch_choices", f"patch count k={k} is larger than the cluster ({self.nodes} nodes)")
            need(k in prof.step_time, "patch_choices", f"profile {prof.name!r} has no timings for k={k}")

        need(isinstance(self.queue_len, int) and self.queue_len >= 1, "queue_len", "must be an integer >= 1")
        need(isinstance(self.s_min, int) and self.s_min >= 1, "s_min", f"must be an integer >= 1, got {self.s_min!r}")
        need(isinstance(self.s_max, int) and self.s_max >= self.s_min, "s_max",
             f"must be an integer >= s_min ({self.s_min}), got {self.s_max!r}")
        need(finite(self.tick) and self.tick > 0, "tick", f"must be > 0, got {self.tick!r}")
        need(self.reward in ("paper", "response"), "reward", f"must be 'paper' or 'response', got {self.reward!r}")
        need(finite(self.w_r) and self.w_r >= 0, "w_r", f"must be a number >= 0, got {self.w_r!r}")
        need(self.mode in ("tick", "event", "grid"), "mode", f"must be 'tick', 'event' or 'grid', got {self.mode!r}")
        need(isinstance(self.time_limit, (int, float)) and not isinstance(self.time_limit, bool)
             and self.time_limit > 0, "time_limit", "must be > 0 (inf: no limit)")
        need(finite(self.time_scale) and self.time_scale > 0, "time_scale", "must be > 0")

        for name, allowed in SWITCH_VALUES.items():
            v = getattr(self, name)
            need(v in allowed, name, f"must be {_one_of(allowed)}, got {v!r}")
        need(isinstance(self.prequeued, int) and not isinstance(self.prequeued, bool)
             and 0 <= self.prequeued <= self.tasks_per_episode, "prequeued",
             f"must be an integer in 0..tasks_per_episode ({self.tasks_per_episode}), got {self.prequeued!r}")
        need(finite(self.clock_start) and self.clock_start >= 0, "clock_start",
             f"must be a number >= 0, got {self.clock_start!r}")
        need(self.train_rate is None or (finite(self.train_rate) and self.train_rate > 0), "train_rate",
             f"must be None or a number > 0, got {self.train_rate!r}")

        need(finite(self.q_max) and self.q_max > 0, "q_max", "must be > 0")
        need(finite(self.q_min) and self.q_min >= 0, "q_min", "must be >= 0")
        for name in ("w_t", "w_w", "w_q", "w_p", "r_max"):
            v = getattr(self, name)
            need(finite(v) and v >= 0, name, f"must be a number >= 0, got {v!r}")

    # --- derived -------------------------------------------------------------------------------------
    @property
    def time_profile(self) -> TimeProfile:
        return self._profile  # type: ignore[attr-defined]

    @property
    def server_speeds(self) -> tuple[float, ...]:
        return self.speeds if self.speeds is not None else (1.0,) * self.nodes

    @property
    def max_patches(self) -> int:
        return max(self.patch_choices)

    @property
    def action_dim(self) -> int:
        return 2 + self.queue_len

    @property
    def token_rows(self) -> int:
        return self.queue_len + self.nodes

    @classmethod
    def preset(cls, name: str, **overrides) -> EATConfig:
        """The config of a named setting (``PRESETS``: ``spec``, the default, or ``authors``) with ``overrides``
        applied on top; an unknown name is a ``ConfigError`` naming the allowed ones."""
        if name not in PRESETS:
            raise ConfigError("preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def training_config(self) -> EATConfig:
        """The config training episodes are drawn from: the same, except at ``train_rate`` when it is set."""
        if self.train_rate is None:
            return self
        return self.replace(rate=self.train_rate, rate_max=None, rate_choices=())

    def replace(self, **changes) -> EATConfig:
        """A copy with some fields changed (validated again)."""
        if not changes:
            return self
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(name, "unknown configuration field")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if isinstance(d["profile"], TimeProfile):
            d["profile"] = d["profile"].to_dict()
        d["speeds"] = list(d["speeds"]) if d["speeds"] is not None else None
        d["patch_choices"] = list(d["patch_choices"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EATConfig:
        d = dict(d)
        if isinstance(d.get("profile"), dict):
            d["profile"] = TimeProfile.from_dict(d["profile"])
        for key in ("speeds", "patch_choices"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown configuration field")
        return cls(**d)


def parse_field_values(cls, items, option: str, what: str, reserved: dict[str, str] | None = None) -> dict:
    """``KEY=VALUE`` strings of a CLI option (``--set`` for ``EATConfig``, ``--sac`` for ``SACArgs``) as fields of
    the dataclass ``cls``, each value converted by its field's annotation: ints, floats, bools, strings,
    comma-separated tuples, ``none`` where None is allowed. Unknown keys (``what`` names the kind of field), keys
    in ``reserved`` (field -> the option that sets it), unreadable values and a key given twice with different
    values raise ``ConfigError``. The values themselves are validated by ``cls``."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name != "extra"}
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not sep or not key:
            raise ConfigError(item, f"expected KEY=VALUE, e.g. {option} {next(iter(kinds))}=...")
        if key not in kinds:
            raise ConfigError(key, f"not a {what}; choose from {', '.join(sorted(kinds))}")
        if reserved and key in reserved:
            raise ConfigError(key, f"has its own option: {reserved[key]}")
        kind = kinds[key]
        try:
            if "None" in kind and raw.lower() == "none":
                value = None
            elif kind.startswith("tuple["):
                elem = int if kind.startswith("tuple[int") else float
                value = tuple(elem(x) for x in raw.split(",") if x.strip())
            elif kind.startswith("bool"):
                if raw.lower() not in _TRUE + _FALSE:
                    raise ValueError
                value = raw.lower() in _TRUE
            elif kind.startswith("int"):
                value = int(raw)
            elif kind.startswith("float"):
                value = float(raw)
            else:
                value = raw
        except ValueError:
            spell = f" ({' | '.join(sorted(_TRUE))} or {' | '.join(sorted(_FALSE))})" if kind == "bool" else ""
            raise ConfigError(key, f"cannot read {raw!r}: expected a {kind}{spell}") from None
        if key in out and out[key] != value:
            raise ConfigError(key, f"{option} given twice with different values")
        out[key] = value
    return out


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


SWITCH_VALUES: dict[str, tuple] = {
    "selector": ("least-fragmentation", "first-idle"),
    "step_decoding": ("rounded", "32u"),
    "float32_durations": (False, True),
    "quality_dip": (False, True),
    "empty_slots_win": (False, True),
    "greedy_slot_defect": (False, True),
    "greedy_unpriced": (False, True),
    "sac_double_tanh": (False, True),
    "paper_literal": (False, True),
}
"""The allowed values of every switch with a fixed set of values (the first is SPEC's)."""


def _one_of(values) -> str:
    return " or ".join(", ".join(repr(v) for v in values).rsplit(", ", 1))


PRESETS: dict[str, dict] = {
    "spec": {},
    "authors": dict(
        selector="first-idle", prequeued=10, clock_start=1.0, step_decoding="32u", mode="grid",
        float32_durations=True, quality_dip=True, paper_literal=True, empty_slots_win=True,
        greedy_slot_defect=True, greedy_unpriced=True, sac_double_tanh=True, train_rate=0.5,
    ),
}
"""Named settings: ``spec`` (SPEC section 2, the default) and ``authors``: every behaviour of the authors' simulator
(zzf1955/EAT, ``EAT Simu/_SDEnv``, commit 58ed96d) that SPEC changes, with the constants of its ``make_env``
(10 tasks queued at reset, clock from 1 s, 0.1 s grid, 32 steps at most, training at rate 0.5). With ``--preset
authors``, ``eat simulate --policy hol --steps S --arrival trace`` reproduces their per-task logs
(``tests/test_fidelity.py``)."""

AUTHORS_FIXES: dict[str, dict] = {
    "selector": dict(selector="least-fragmentation"),
    "pre-queued tasks": dict(prequeued=0, clock_start=0.0),
    "step decoding": dict(step_decoding="rounded"),
    "time grid": dict(mode="tick"),
    "float32": dict(float32_durations=False),
    "quality dip": dict(quality_dip=False),
    "task rule": dict(paper_literal=False, empty_slots_win=False),
    "greedy slot": dict(greedy_slot_defect=False),
    "greedy pricing": dict(greedy_unpriced=False),
    "double tanh": dict(sac_double_tanh=False),
    "training rate": dict(train_rate=None),
}
"""Each fix SPEC makes to the authors' setting, as the fields that undo it: ``authors`` with all of them applied is
``spec`` (a test checks this). The ablation turns them on one at a time."""
