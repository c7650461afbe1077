"""Hand-written schedulers of the DEdgeAI offloading problem (``sim.offload``): local-only, random and Opt-TS.

Each one plays a slot of an ``OffloadSim`` (``play_slot``): local-only and random decide the whole slot in one
call; Opt-TS (the authors' ``Baselines/Opt-TS``) goes task by task, sending each to the server with the least delay
given full knowledge of the current backlogs, this slot's earlier decisions included (a per-task greedy, not an
optimum over the slot; the observation the learned agents get holds only the slot-start backlogs).
"""

from __future__ import annotations

import numpy as np

from ..sim.offload import OffloadConfig, OffloadSim


class LocalOnly:
    """Every task stays at its own station."""

    def play_slot(self, sim: OffloadSim) -> None:
        sim.step_slot(sim.workload.station[sim.pending()])


class RandomTarget:
    """Every task goes to a uniformly drawn station."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def play_slot(self, sim: OffloadSim) -> None:
        sim.step_slot(self.rng.integers(0, sim.config.stations, len(sim.pending())))


class OptTS:
    """Per-task greedy with full queue knowledge: the target of least delay (``OffloadSim.candidate_delays``)."""

    def play_slot(self, sim: OffloadSim) -> None:
        for _ in range(len(sim.pending())):
            sim.step_task(int(np.argmin(sim.candidate_delays())))


BASELINES = {"local": LocalOnly, "random": RandomTarget, "opt-ts": OptTS}
"""name -> class; ``make_baseline(name, seed)`` builds one."""


def make_baseline(name: str, seed: int = 0):
    if name not in BASELINES:
        raise ValueError(f"unknown offloading baseline {name!r}; choose from {', '.join(BASELINES)}")
    return RandomTarget(seed) if name == "random" else BASELINES[name]()


def play_episode(policy, sim: OffloadSim, seed: int | None = None, *, rng: np.random.Generator | None = None) -> float:
    """Reset ``sim`` (workload from ``seed`` or ``rng``), let ``policy`` play every slot; the mean delay (s)."""
    sim.reset(seed, rng=rng)
    while not sim.done:
        policy.play_slot(sim)
    return float(sim.delays.mean())


def evaluate_baseline(name: str, cfg: OffloadConfig, seeds) -> list[float]:
    """Mean delay (s) of baseline ``name`` on the workload of each seed."""
    sim, policy = OffloadSim(cfg), make_baseline(name)
    return [play_episode(policy, sim, s) for s in seeds]
