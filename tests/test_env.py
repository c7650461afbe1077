import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eatsched  # noqa: F401 - registers the env
from eatsched.core.config import EATConfig
from eatsched.core.invariants import check_schedule
from eatsched.core.metrics import task_log
from eatsched.sim.env import EATEnv


def rollout(env, seed, action_seed=None, max_steps=100_000):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed if action_seed is None else action_seed)
    times, rewards = [info["time"]], []
    for _ in range(max_steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        times.append(info["time"])
        rewards.append(r)
        assert env.observation_space.contains(obs)
        if term or trunc:
            return term, trunc, times, rewards, info
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("kw", [{}, {"mode": "event"}, {"paper_literal": True}, {"nodes": 4, "rate": 0.05}])
def test_check_env_passes(kw):
    check_env(EATEnv(**kw), skip_render_check=True)
    check_env(EATEnv(flat=True, **kw), skip_render_check=True)


def test_registered_and_make_passes_config():
    env = gym.make("eatsched/EAT-v0", nodes=12, rate=0.15)
    assert env.unwrapped.config.nodes == 12 and env.unwrapped.config.rate == 0.15
    obs, info = env.reset(seed=0)
    assert obs.shape == (10 + 12, 7)
    assert info["action_mask"].shape == (10,)
    env.close()


def test_same_seed_same_task_log_and_different_seeds_differ():
    a, b = EATEnv(nodes=8, rate=0.1), EATEnv(nodes=8, rate=0.1)
    rollout(a, 7)
    rollout(b, 7)
    assert a.episode_tasks().tobytes() == b.episode_tasks().tobytes()  # bit-identical
    rollout(b, 8)
    assert a.episode_tasks().tobytes() != b.episode_tasks().tobytes()


def test_reset_without_seed_continues_the_stream_and_never_touches_global_rng():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    env = EATEnv()
    env.reset(seed=1)
    a = env.workload.arrival.copy()
    env.reset()
    assert not np.array_equal(a, env.workload.arrival)
    assert np.random.random() == before


def test_poisson_arrivals_have_the_configured_rate():
    env = EATEnv(rate=0.05, tasks_per_episode=32)
    gaps = []
    for s in range(300):
        env.reset(seed=s)
        gaps.extend(np.diff(np.concatenate([[0.0], env.workload.arrival])))
    gaps = np.array(gaps)
    assert gaps.mean() == pytest.approx(1 / 0.05, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 0.05, rel=0.08)  # exponential: std == mean
    counts = np.bincount(np.concatenate([env.workload.patches]), minlength=5)
    assert set(np.flatnonzero(counts)) <= {1, 2, 4}


def test_episode_metrics_and_log_are_consistent():
    env = EATEnv(nodes=8, rate=0.1)
    term, trunc, times, rewards, info = rollout(env, 3)
    assert term and not trunc
    m = info["episode"]
    log = env.task_log()
    resp = [r["response_s"] for r in log]
    assert m["tasks_completed"] == 32 and m["completed_fraction"] == 1.0
    assert m["mean_response_s"] == pytest.approx(np.mean(resp))
    assert m["p95_response_s"] == pytest.approx(np.percentile(resp, 95))
    assert m["mean_quality"] == pytest.approx(np.mean([r["quality"] for r in log]))
    assert m["reload_rate"] == pytest.approx(np.mean([r["reload"] for r in log]))
    assert m["efficiency"] == pytest.approx(m["mean_quality"] / m["mean_response_s"])
    assert m["reward"] == pytest.approx(sum(rewards))
    for r in log:
        assert r["response_s"] == pytest.approx(r["wait_s"] + r["init_s"] + r["exec_s"])


def test_time_limit_truncates_with_unfinished_tasks():
    env = EATEnv(nodes=1, patch_choices=(1,), rate=1.0, time_limit=50.0)
    env.reset(seed=0)
    wait = np.full(env.action_space.shape, -1.0, np.float32)
    while True:  # never launch anything
        _, r, term, trunc, info = env.step(wait)
        assert r == 0.0
        if term or trunc:
            break
    assert trunc and not term
    assert info["time"] == 50.0
    assert info["episode"]["tasks_completed"] == 0


def test_event_mode_jumps_to_next_event_after_a_noop():
    env = EATEnv(nodes=2, patch_choices=(1,), rate=0.5, mode="event")
    env.reset(seed=0)
    t0 = env.now
    next_arrival = env.workload.arrival[env.workload.arrival > t0].min()
    env.step(np.full(env.action_space.shape, -1.0, np.float32))
    assert env.now == pytest.approx(next_arrival)
    tick = EATEnv(nodes=2, patch_choices=(1,), rate=0.5)
    tick.reset(seed=0)
    tick.step(np.full(env.action_space.shape, -1.0, np.float32))
    assert tick.now == pytest.approx(t0 + 0.1)


def test_launch_does_not_advance_time_and_jumps_land_on_events():
    env = EATEnv(nodes=4, rate=0.1)
    obs, info = env.reset(seed=5)
    a = np.ones(env.action_space.shape, np.float32)
    t = info["time"]
    for _ in range(500):
        obs, r, term, trunc, info = env.step(a)
        tasks = env.episode_tasks()
        events = set(tasks["arrival"].tolist()) | set(tasks["finish"][tasks["order"] >= 0].tolist())
        # a launch never moves the clock by itself: it stays, or jumps to an arrival/completion
        assert info["time"] == t or info["time"] in events
        if term or trunc:
            break
        assert info["action_mask"].any()  # every decision point has a startable task
        t = info["time"]
    assert term


def test_trace_replay(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival,patches,prompt\n0.5,2,a cat\n0.5,1,a dog\n3.0,4,a red barn\n")
    env = EATEnv(nodes=4, arrival="trace", trace_path=str(trace))
    term, trunc, *_ = rollout(env, 0)
    assert term
    log = env.task_log()
    assert [r["patches"] for r in log] == [2, 1, 4]
    assert [r["prompt"] for r in log] == ["a cat", "a dog", "a red barn"]
    assert check_schedule(env.episode_tasks(), env.config, terminated=True) == []


def test_bursty_arrivals_keep_the_mean_rate():
    # long-run rate of the Markov-modulated process equals the configured rate; gaps are burstier
    env = EATEnv(arrival="bursty", rate=0.1, tasks_per_episode=20_000)
    env.reset(seed=0)
    gaps = np.diff(env.workload.arrival)
    assert len(gaps) / env.workload.arrival[-1] == pytest.approx(0.1, rel=0.1)
    assert gaps.std() / gaps.mean() > 1.2  # Poisson gaps have coefficient of variation 1


configs = st.fixed_dictionaries({
    "nodes": st.integers(1, 12),
    "rate": st.floats(0.01, 2.0),
    "queue_len": st.integers(1, 12),
    "s_min": st.integers(1, 10),
    "s_span": st.integers(0, 30),
    "mode": st.sampled_from(["tick", "event"]),
    "paper_literal": st.booleans(),
    "n_models": st.integers(1, 3),
    "hetero": st.booleans(),
    "regroup": st.sampled_from([None, 2.0]),
    "profile": st.sampled_from(["reference", "paper-4090"]),
    "tasks": st.integers(1, 40),
    "seed": st.integers(0, 2**31),
})


def build(c):
    ks = tuple(k for k in (1, 2, 4, 8) if k <= c["nodes"])
    speeds = None
    if c["hetero"]:
        speeds = tuple(0.5 + (j * 7919 % 13) / 8 for j in range(c["nodes"]))
    return EATConfig(nodes=c["nodes"], rate=c["rate"], queue_len=c["queue_len"], s_min=c["s_min"],
                     s_max=c["s_min"] + c["s_span"], mode=c["mode"], paper_literal=c["paper_literal"],
                     n_models=c["n_models"], speeds=speeds, regroup_time=c["regroup"], profile=c["profile"],
                     patch_choices=ks, tasks_per_episode=c["tasks"], time_limit=4000.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_property_random_configs_and_actions_give_feasible_schedules(c):
    cfg = build(c)
    env = EATEnv(cfg)
    term, trunc, times, rewards, info = rollout(env, c["seed"] % 1000, action_seed=c["seed"])
    assert all(b >= a for a, b in zip(times, times[1:], strict=False)), "time went backwards"
    tasks = env.episode_tasks()
    errors = check_schedule(tasks, cfg, terminated=term)
    assert errors == []
    if term:
        log = task_log(tasks, len(tasks))
        assert all(r["finished"] for r in log)
        assert info["episode"]["tasks_completed"] == len(tasks)
        assert max(r["finish"] for r in log) == pytest.approx(info["time"])


def test_invariant_checker_catches_violations():
    env = EATEnv(nodes=4, rate=0.2)
    rollout(env, 1)
    tasks = env.episode_tasks()
    assert check_schedule(tasks, env.config, terminated=True) == []
    bad = tasks.copy()
    j = int(np.argmax(bad["order"] == 1))
    bad[j]["reload"] = 1 - bad[j]["reload"]
    assert any("reload" in e for e in check_schedule(bad, env.config))
    bad = tasks.copy()
    i0, i1 = int(np.argmax(bad["order"] == 0)), int(np.argmax(bad["order"] == 1))
    bad[i1]["servers"] = bad[i0]["servers"] | bad[i1]["servers"]
    assert check_schedule(bad, env.config)  # wrong server count and/or a busy server
    bad = tasks.copy()
    bad[i0]["finish"] += 1.0
    assert any("response" in e for e in check_schedule(bad, env.config))
