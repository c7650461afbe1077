"""Hand-written schedulers: random, greedy, fifo, hol (head-of-line FIFO), and our heuristics ``adaptive`` and
``patient`` (the bar learned policies must beat)."""

from __future__ import annotations

import numpy as np

from ..core import kernel
from ..core.config import EATConfig
from ..core.kernel import MAX_PATCHES
from ..core.policy import Policy
from ..core.state import (
    SERVER_BUSY_FOR,
    SERVER_GROUP,
    SERVER_IDLE,
    SERVER_MODEL,
    TASK_MODEL,
    TASK_PATCHES,
    TASK_PRESENT,
    TASK_READY,
)


def saturation_steps(cfg: EATConfig) -> int:
    """Fewest steps at which q(s) reaches q_max (26 with the default curve), clipped to [s_min, s_max]."""
    for s in range(cfg.s_min, cfg.s_max + 1):
        if kernel.quality(s, cfg.q_max) >= cfg.q_max:
            return s
    return cfg.s_max


class Heuristic(Policy):
    """Base of the hand-written schedulers that launch with a chosen number of steps: ``launch`` writes the steps in
    the config's decoding (SPEC's rounding, or the authors' ``32u``)."""

    def launch(self, slot: int, steps: int) -> np.ndarray:
        a = super().launch(slot, steps)
        if self.config.step_decoding == "32u":
            a[1] = kernel.encode_steps_32u(steps, self.config.s_max)
        return a


def check_steps(config: EATConfig, steps: int, who: str) -> int:
    """``steps`` if the config's decoding can express it (SPEC: s_min..s_max; ``32u``: 0..s_max), else ValueError."""
    lo = 0 if config.step_decoding == "32u" else config.s_min
    if not (isinstance(steps, (int, np.integer)) and lo <= steps <= config.s_max):
        raise ValueError(f"{who}: steps must be an integer in {lo}..{config.s_max} with step_decoding="
                         f"{config.step_decoding!r}, got {steps!r}")
    return int(steps)


class RandomPolicy(Policy):
    """Uniform random actions (paper baseline "Random")."""

    name = "random"

    def __init__(self, config: EATConfig, seed: int = 0):
        super().__init__(config, seed)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, observation, info):
        return self.rng.uniform(-1.0, 1.0, self.config.action_dim).astype(np.float32)


class FifoPolicy(Heuristic):
    """The oldest visible task that can start, with a fixed number of steps (default: where SPEC's quality curve
    saturates, 26). The "traditional" scheduler of paper Tables II-IV."""

    name = "fifo"

    def __init__(self, config: EATConfig, steps: int | None = None, seed: int = 0):
        super().__init__(config, seed)
        self.steps = check_steps(config, steps, self.name) if steps is not None else saturation_steps(config)

    def act(self, observation, info):
        mask = info["action_mask"]
        if not mask.any():
            return self.wait()
        return self.launch(int(np.argmax(mask)), self.steps)


class HolPolicy(Heuristic):
    """Head-of-line FIFO: the oldest visible task with a fixed number of steps, and a no-op while it cannot start
    (younger tasks never pass it). The policy the authors' simulator was replayed with on the traces of
    ``../shared/fidelity`` (``docs/fidelity.md``)."""

    name = "hol"

    def __init__(self, config: EATConfig, steps: int | None = None, seed: int = 0):
        super().__init__(config, seed)
        self.steps = check_steps(config, steps, self.name) if steps is not None else saturation_steps(config)

    def act(self, observation, info):
        if not info["action_mask"][0]:
            return self.wait()
        return self.launch(0, self.steps)


class GreedyPolicy(Heuristic):
    """Paper baseline "Greedy": enumerate (visible task x steps) and take the best immediate reward,
    priced by the scheduler core without mutating the state (needs ``attach``)."""

    name = "greedy"
    needs_state = True

    def act(self, observation, info):
        if self.view is None:
            raise RuntimeError("greedy needs the scheduler state: call policy.attach(env.state_arrays)")
        v = self.view
        slot, steps, _ = kernel.greedy_choice(v.servers[0], v.tasks[0], v.clock[0], v.params, v.step_time,
                                              v.init_time)
        if slot < 0:
            return self.wait()
        return self.launch(int(slot), int(steps))


class AdaptivePolicy(Heuristic):
    """Our hand-written heuristic: reuse first, a moderate fixed number of steps, optional load term.

    * Task: among tasks that can start now, the oldest one whose model and size match an idle group
      (starts without a cold start); otherwise the oldest that can start.
    * Steps: ``high`` (16: q = 0.228 at 38% less execution time than 26, where q saturates), minus
      ``per_task`` for every further queued task, never below ``low``. ``per_task`` is 0 by default:
      in a sweep (8 nodes, rates 0.1 and 0.5, 20 episodes; README) lowering quality under load cost more
      efficiency than the latency it saved, and 14-18 fixed steps beat greedy on efficiency.
    """

    name = "adaptive"

    def __init__(self, config: EATConfig, high: int = 16, low: int | None = None, per_task: int = 0, seed: int = 0):
        super().__init__(config, seed)
        self.high = min(config.s_max, max(config.s_min, high))
        self.low = low if low is not None else config.s_min
        self.per_task = per_task

    def act(self, observation, info):
        mask = info["action_mask"]
        if not mask.any():
            return self.wait()
        tok = self.tokens(observation)
        L = self.config.queue_len
        ready = mask & (tok[:L, TASK_READY] > 0.5)
        slot = int(np.argmax(ready)) if ready.any() else int(np.argmax(mask))
        queued = int((tok[:L, TASK_PRESENT] > 0.5).sum())
        steps = max(self.low, self.high - self.per_task * max(0, queued - 1))
        return self.launch(slot, steps)


class PatientPolicy(AdaptivePolicy):
    """``adaptive`` that waits for a warm group instead of paying a cold start (found by the learning diagnosis,
    ``docs/learning.md``).

    * Task: the oldest task that can start without a cold start, as ``adaptive``. Otherwise the oldest task that can
      start and has no group of its size and model busy for at most ``wait_s`` more seconds; if every task that could
      start has such a group about to free up, wait (no-op) for it.
    * Steps: ``high`` (16), as ``adaptive``.

    Why: a cold start costs 24-32 model s against 2-5 s of execution (reference profile), so waiting up to about
    one cold start for a group of the right size is usually faster, and it keeps the groups intact for the tasks
    behind. ``wait_s`` = 25 (about one cold start) was the best single value of a sweep of 10-30 s over 4, 8 and 12
    nodes at the paper's middle and heavy rates; the best value differs by cluster size and load
    (``docs/learning.md``).
    Reads only the observation, so it runs on the serving host as in the simulator."""

    name = "patient"

    def __init__(self, config: EATConfig, high: int = 16, wait_s: float = 25.0, seed: int = 0):
        super().__init__(config, high=high, seed=seed)
        if not (isinstance(wait_s, (int, float)) and wait_s >= 0):
            raise ValueError(f"patient: wait_s must be a number >= 0, got {wait_s!r}")
        self.wait_s = float(wait_s)

    def act(self, observation, info):
        mask = info["action_mask"]
        if not mask.any():
            return self.wait()
        cfg = self.config
        L = cfg.queue_len
        tok = self.tokens(observation)
        ready = mask & (tok[:L, TASK_READY] > 0.5)
        if ready.any():
            return self.launch(int(np.argmax(ready)), self.high)
        srv = tok[L:]
        # a busy server belongs to a group of its recorded size running one task: when it frees, so does the group
        soon = (srv[:, SERVER_IDLE] < 0.5) & (srv[:, SERVER_BUSY_FOR] * cfg.time_scale <= self.wait_s)
        size = np.rint(srv[:, SERVER_GROUP] * cfg.nodes)
        for q in np.flatnonzero(mask):
            k = round(float(tok[q, TASK_PATCHES]) * MAX_PATCHES)
            if not (soon & (size == k) & (np.abs(srv[:, SERVER_MODEL] - tok[q, TASK_MODEL]) < 1e-6)).any():
                return self.launch(int(q), self.high)
        return self.wait()


FIXED_STEPS = {"fifo": "steps", "hol": "steps", "adaptive": "high", "patient": "high"}
"""The hand-written schedulers that launch at a fixed number of steps, and the argument that sets it
(``eat simulate --steps N``)."""


def with_steps(name: str, config: EATConfig, steps: int, seed: int = 0) -> Policy:
    """Fixed-step heuristic ``name`` launching every task at ``steps`` steps (ValueError naming the allowed ones for
    any other scheduler, or for steps the config's decoding cannot express)."""
    if name not in FIXED_STEPS:
        raise ValueError(f"--steps applies to the fixed-step schedulers {', '.join(FIXED_STEPS)}, not {name!r}")
    cls = {"fifo": FifoPolicy, "hol": HolPolicy, "adaptive": AdaptivePolicy, "patient": PatientPolicy}[name]
    steps = check_steps(config, steps, name)
    if FIXED_STEPS[name] == "high" and steps < config.s_min:  # adaptive's steps are never below s_min
        raise ValueError(f"--steps: {name} runs at least s_min = {config.s_min} steps, got {steps}")
    return cls(config, **{FIXED_STEPS[name]: steps}, seed=seed)
