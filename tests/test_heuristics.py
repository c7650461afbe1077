import numpy as np
import pytest

from eatsched.algos import make_policy
from eatsched.algos.heuristics import AdaptivePolicy
from eatsched.algos.registry import names as policy_names
from eatsched.core import kernel
from eatsched.core.config import EATConfig
from eatsched.sim.env import EATEnv
from eatsched.sim.rollout import simulate


def immediate_reward(env, action):
    """Reward of ``action`` from the env's current state, on copies of the state (env untouched)."""
    servers, tasks, clock, params, st, it = (x.copy() for x in env.state_arrays)
    obs = np.zeros_like(env._obs)
    info = np.zeros_like(env._info_vec)
    mask = np.zeros_like(env._mask)
    kernel.step_batch(servers, tasks, clock, params, st, it, action[None].astype(np.float32), obs, info, mask)
    return info[0, kernel.INFO_REWARD]


def test_greedy_takes_the_best_immediate_reward_without_mutating_the_env():
    cfg = EATConfig(nodes=8, rate=0.3)
    env = EATEnv(cfg)
    greedy = make_policy("greedy", cfg)
    greedy.attach(env.state_arrays)
    obs, info = env.reset(seed=4)
    checked = 0
    for _ in range(40):
        before = env.episode_tasks().tobytes(), env._servers.tobytes(), env.now
        a = greedy.act(obs, info)
        assert (env.episode_tasks().tobytes(), env._servers.tobytes(), env.now) == before
        best = max(
            immediate_reward(env, greedy.launch(slot, s))
            for slot in np.flatnonzero(info["action_mask"])
            for s in range(cfg.s_min, cfg.s_max + 1)
        )
        assert immediate_reward(env, a) == pytest.approx(best)
        checked += 1
        obs, r, term, trunc, info = env.step(a)
        assert r == pytest.approx(best)
        if term or trunc:
            break
    assert checked > 10


def test_greedy_needs_state():
    with pytest.raises(RuntimeError, match="attach"):
        make_policy("greedy", EATConfig()).act(np.zeros((18, 7), np.float32), {"action_mask": np.ones(10, bool)})


def test_fifo_starts_the_oldest_startable_task_with_fixed_steps():
    cfg = EATConfig(nodes=4, rate=0.2)
    res = simulate(make_policy("fifo", cfg), cfg, episodes=2, seed=0)
    assert {r["steps"] for r in res.tasks} == {26}  # where q saturates
    env = EATEnv(cfg)
    fifo = make_policy("fifo", cfg)
    obs, info = env.reset(seed=1)
    a = fifo.act(obs, info)
    slot = int(np.argmax(a[2:]))
    assert slot == int(np.argmax(info["action_mask"]))


def test_random_policy_is_seeded():
    cfg = EATConfig()
    a = simulate(make_policy("random", cfg, seed=3), cfg, episodes=2, seed=3)
    b = simulate(make_policy("random", cfg, seed=3), cfg, episodes=2, seed=3)
    assert [r["steps"] for r in a.tasks] == [r["steps"] for r in b.tasks]


def test_adaptive_prefers_reuse_and_lowers_steps_under_load():
    cfg = EATConfig(nodes=8, rate=0.1)
    pol = AdaptivePolicy(cfg, high=26, per_task=3)
    tok = np.zeros((18, 7), np.float32)
    tok[:3, 1] = 1  # three queued tasks
    tok[:3, 5] = 1  # all can start
    tok[2, 6] = 1  # the third can reuse an idle group
    a = pol.act(tok, {"action_mask": tok[:10, 5] > 0.5})
    assert int(np.argmax(a[2:])) == 2
    assert kernel.decode_steps(a[1], 5, 32) == 26 - 3 * 2
    tok[:, 6] = 0
    tok[1:3, 1] = 0
    tok[1:3, 5] = 0
    a = pol.act(tok, {"action_mask": tok[:10, 5] > 0.5})
    assert int(np.argmax(a[2:])) == 0 and kernel.decode_steps(a[1], 5, 32) == 26
    assert kernel.decode_steps(make_policy("adaptive", cfg).act(tok, {"action_mask": tok[:10, 5] > 0.5})[1],
                               5, 32) == 16


def test_adaptive_beats_greedy_and_fifo_on_efficiency():
    cfg = EATConfig(nodes=8, rate=0.5)
    eff = {p: simulate(make_policy(p, cfg), cfg, episodes=10, seed=100).summary()["efficiency"]
           for p in ("adaptive", "greedy", "fifo", "random")}
    assert eff["adaptive"] > max(eff["greedy"], eff["fifo"], eff["random"])


def test_unknown_policy_and_checkpoint_on_heuristic():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope", EATConfig())
    with pytest.raises(ValueError, match="no --checkpoint"):
        make_policy("fifo", EATConfig(), checkpoint="x.pt")
    assert "eat" in policy_names()
