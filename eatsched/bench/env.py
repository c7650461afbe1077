"""``eat bench env``: simulator throughput, single and batched."""

from __future__ import annotations

import time

import numpy as np

from ..core.config import EATConfig
from ..sim.env import EATEnv
from ..sim.vector import BatchedEATEnv

AUTHORS_SIM_STEPS_PER_S = 21_000
"""Authors' simulator, 8 nodes, random actions, one process on a 2-core machine (SPEC section 6)."""


def bench_single(config: EATConfig, seconds: float = 3.0, seed: int = 0) -> dict:
    """Steps/s of one EATEnv under uniformly random actions (pre-drawn, so the policy costs nothing)."""
    env = EATEnv(config)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (65536, config.action_dim)).astype(np.float32)
    env.reset(seed=seed)
    for a in actions[:2000]:  # warm-up (compiled code is cached, but caches and branch predictors are not)
        _, _, te, tr, _ = env.step(a)
        if te or tr:
            env.reset()
    steps = episodes = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for a in actions:
            _, _, te, tr, _ = env.step(a)
            if te or tr:
                env.reset()
                episodes += 1
        steps += len(actions)
    dt = time.perf_counter() - t0
    return {"env": "single", "steps": steps, "episodes": episodes, "seconds": dt, "steps_per_s": steps / dt,
            "ratio_vs_authors": steps / dt / AUTHORS_SIM_STEPS_PER_S}


def bench_batched(config: EATConfig, num_envs: int, seconds: float = 3.0, seed: int = 0) -> dict:
    """Env-steps/s of BatchedEATEnv (auto-reset included) under random actions."""
    env = BatchedEATEnv(num_envs, config, copy_obs=False)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (16, num_envs, config.action_dim)).astype(np.float32)
    for a in actions:
        env.step(a)
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a in actions:
            env.step(a)
        steps += len(actions) * num_envs
    dt = time.perf_counter() - t0
    return {"env": f"batched-{num_envs}", "steps": steps, "seconds": dt, "steps_per_s": steps / dt,
            "ratio_vs_authors": steps / dt / AUTHORS_SIM_STEPS_PER_S}
