"""``eat bench decide``: single-decision latency (batch 1, CPU) of every registered policy."""

from __future__ import annotations

import time

import numpy as np

from ..algos import registry
from ..core.config import EATConfig


def bench_decide(config: EATConfig, decisions: int = 2000, seed: int = 0) -> list[dict]:
    """p50/p99 latency of ``policy.act`` at batch 1 on observations of a real episode stream, every policy."""
    from ..algos.sac_policy import SACPolicy  # noqa: PLC0415
    from ..sim.env import EATEnv  # noqa: PLC0415

    rows = []
    for name in registry.names():
        algo = registry.get(name)
        label = "shipped" if algo.learned else "hand-written"
        try:
            if algo.family == "sac" and registry.shipped_or_none(name, config.nodes) is None:
                pol, label = SACPolicy.untrained(name, config, seed), "untrained"
            else:
                pol = registry.make_policy(name, config, seed=seed)
        except (ImportError, FileNotFoundError, ValueError) as e:
            rows.append({"policy": name, "note": f"skipped: {str(e).splitlines()[0][:100]}"})
            continue
        rows.append({"policy": name, "label": label, **_latency(pol, EATEnv(config), decisions, seed)})
    rows.append({"policy": "eat (torch eager)", "label": "untrained", **_latency(
        _TorchEager("eat", config, seed), EATEnv(config), min(decisions, 500), seed)})
    return rows


def _latency(pol, env, decisions: int, seed: int) -> dict:
    if pol.needs_state:
        pol.attach(env.state_arrays)
    obs, info = env.reset(seed=seed)
    pol.reset(seed=seed)
    times = np.empty(decisions)
    for i in range(decisions):
        t0 = time.perf_counter()
        a = pol.act(obs, info)
        times[i] = time.perf_counter() - t0
        obs, _, te, tr, info = env.step(a)
        if te or tr:
            obs, info = env.reset()
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
            "decisions": decisions}


class _TorchEager:
    """EAT's torch network at batch 1 (what the NumPy path replaces), for comparison."""

    needs_state = False

    def __init__(self, algo: str, config: EATConfig, seed: int):
        import torch  # noqa: PLC0415

        from ..algos.sac import SACAgent  # noqa: PLC0415

        self.torch = torch
        self.agent = SACAgent(registry.get(algo).default_args(), config.queue_len, config.nodes, seed=seed)

    def reset(self, seed=None):
        pass

    def act(self, obs, info):
        with self.torch.inference_mode():
            return self.agent.act(self.torch.from_numpy(obs)[None], deterministic=True)[0].numpy()
