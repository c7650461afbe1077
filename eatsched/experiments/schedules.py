"""What both exact solvers return and how a schedule is scored (``optimal``'s branch and bound and ``cpsat``'s model
share it): a ``Solution``, R0 and the mean response of a schedule given as ``core.state.TASK`` records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core import kernel
from ..core.config import EATConfig
from ..core.state import DONE


@dataclass
class Solution:
    objective: str  # "reward" (R0, maximized) or "response" (mean response s, minimized)
    value: float  # R0 sum, or mean response s, of the schedule in ``tasks`` (exact)
    optimal: bool  # proven optimal; False: ``value`` is the best found and ``upper_bound`` bounds the optimum
    nodes: int  # branch-and-bound nodes, or CP-SAT branches
    solve_s: float
    tasks: np.ndarray  # TASK records of the schedule (order = launch order)
    upper_bound: float  # a proven bound on the optimum: = value when optimal (for "response": a lower bound on it)
    solver: str = "branch-and-bound"
    status: str = ""  # the solver's own word for how it ended
    bound: float = math.nan  # the proven bound as the solver reported it (even when optimal)

    @property
    def gap(self) -> float:
        """Proven relative gap between the schedule's value and the bound (0 when optimal)."""
        if self.optimal:
            return 0.0
        return abs(self.upper_bound - self.value) / max(abs(self.value), 1e-12)

    @property
    def label(self) -> str:
        """``optimal`` only when proven; otherwise ``best found``."""
        return "optimal" if self.optimal else "best found"


def reward_r0(tasks: np.ndarray, cfg: EATConfig) -> float:
    """R0 of a schedule given as TASK records (a scheduler's ``episode_tasks()`` or a ``Solution``)."""
    total = 0.0
    for t in tasks:
        if int(t["order"]) < 0:
            continue
        total += kernel.launch_reward(float(t["start"] - t["arrival"]), float(t["init"]), float(t["exec"]), 0.0,
                                      float(t["quality"]), cfg.w_t, cfg.w_w, cfg.w_q, cfg.w_p, cfg.q_min, cfg.r_max)
    return total


def mean_response(tasks: np.ndarray) -> float:
    done = tasks["state"] == DONE
    return float((tasks["finish"] - tasks["arrival"])[done].mean()) if done.any() else math.nan
