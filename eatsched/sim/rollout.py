"""Run a policy for K episodes in the simulator and collect per-task logs and metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core.config import EATConfig
from ..core.metrics import summarize, task_log
from ..core.policy import Policy
from .env import EATEnv


@dataclass
class SimulationResult:
    policy: str
    config: EATConfig
    episodes: list[dict] = field(default_factory=list)  # per-episode metrics
    tasks: list[dict] = field(default_factory=list)  # per-task log, all episodes
    task_records: list[np.ndarray] = field(default_factory=list)

    def episode_summaries(self) -> list[dict]:
        """``core.metrics.summarize`` of each episode on its own (per-seed numbers for paired comparisons)."""
        return [summarize(rec) for rec in self.task_records]

    def summary(self) -> dict:
        """Run-level numbers, pooled over every task of every episode."""
        pooled = summarize(np.concatenate(self.task_records)) if self.task_records else {}
        out = {
            "policy": self.policy,
            "nodes": self.config.nodes,
            "rate": None if self.config.arrival == "trace" else self.config.rate,  # a trace has its own arrivals
            "episodes": len(self.episodes),
            **{k: pooled[k] for k in ("tasks", "tasks_completed", "mean_response_s", "p95_response_s",
                                       "mean_quality", "reload_rate", "efficiency")},
            "mean_decision_ms": float(np.mean([e["mean_decision_ms"] for e in self.episodes])),
            "mean_reward": float(np.mean([e["reward"] for e in self.episodes])),
        }
        return out


def simulate(policy: Policy, config: EATConfig, episodes: int, seed: int = 0,
             on_episode: Callable[[int, dict], None] | None = None) -> SimulationResult:
    """Episode e runs on workload seed ``seed + e``; the policy is reset with the same seed."""
    env = EATEnv(config)
    if policy.needs_state:
        policy.attach(env.state_arrays)
    result = SimulationResult(policy.name, config)
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        policy.reset(seed=seed + e)
        decide_s = 0.0
        n_decisions = 0
        done = False
        while not done:
            t0 = time.perf_counter()
            action = policy.act(obs, info)
            decide_s += time.perf_counter() - t0
            n_decisions += 1
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        m = info["episode"]
        m["episode"] = e
        m["seed"] = seed + e
        m["mean_decision_ms"] = 1000.0 * decide_s / max(1, n_decisions)
        result.episodes.append(m)
        result.task_records.append(env.episode_tasks())
        result.tasks.extend(task_log(env.episode_tasks(), len(env.episode_tasks()), episode=e))
        if on_episode is not None:
            on_episode(e, m)
    return result
