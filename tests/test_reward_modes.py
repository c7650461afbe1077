"""The ``response`` reward (after Decima): an episode's return is w_q x summed quality minus w_r x summed response."""

import numpy as np
import pytest

from eatsched.algos import make_policy
from eatsched.core.config import ConfigError, EATConfig
from eatsched.sim.env import EATEnv
from eatsched.sim.rollout import simulate


@pytest.mark.parametrize("policy", ["random", "fifo", "adaptive"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_response_return_is_quality_minus_response(policy, rate):
    cfg = EATConfig(nodes=8, rate=rate, reward="response", w_r=0.2, w_q=7.0)
    res = simulate(make_policy(policy, cfg, seed=1), cfg, 3, seed=5)
    for ep, rec in zip(res.episodes, res.task_records, strict=True):
        launched = rec[rec["steps"] > 0]
        assert len(launched) == cfg.tasks_per_episode  # every task finished (terminated, not truncated)
        want = 7.0 * launched["quality"].sum() - 0.2 * (launched["finish"] - launched["arrival"]).sum()
        assert ep["reward"] == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_truncated_episode_pays_for_waiting_tasks():
    """A scheduler that never launches pays w_r for every second every arrived task waited, up to the limit."""
    cfg = EATConfig(nodes=4, rate=0.1, reward="response", time_limit=200.0)
    env = EATEnv(cfg)
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.full(cfg.action_dim, -1.0, np.float32))
        total += r
        done = term or trunc
    arrivals = env.workload.arrival[env.workload.arrival <= cfg.time_limit]
    assert trunc and total == pytest.approx(-cfg.w_r * (cfg.time_limit - arrivals).sum(), rel=1e-6)


def test_same_schedule_under_either_reward():
    paper, response = EATConfig(nodes=8, rate=0.3), EATConfig(nodes=8, rate=0.3, reward="response")
    a = simulate(make_policy("adaptive", paper), paper, 2, seed=3)
    b = simulate(make_policy("adaptive", response), response, 2, seed=3)
    assert [(t["start"], t["servers"]) for t in a.tasks] == [(t["start"], t["servers"]) for t in b.tasks]
    assert a.summary()["mean_reward"] != b.summary()["mean_reward"]


def test_bad_reward_values_are_refused():
    with pytest.raises(ConfigError, match="reward"):
        EATConfig(reward="decima")
    with pytest.raises(ConfigError, match="w_r"):
        EATConfig(w_r=-1.0)
