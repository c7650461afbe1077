"""The DEdgeAI offloading problem (``sim.offload``), its baselines and its learned methods."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import eatsched  # noqa: F401 - registers the envs
from eatsched.algos.nets import mlp
from eatsched.algos.offload_baselines import evaluate_baseline
from eatsched.algos.offload_learn import LOG_COLUMNS, METHODS, OffloadLearner, Stations, train_offload
from eatsched.core.config import ConfigError
from eatsched.sim.offload import PARTS, OffloadConfig, OffloadSim, OffloadWorkload


def test_check_env_and_an_episode():
    env = gym.make("eatsched/Offload-v0", preset="small")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    steps, terminated, delays = 0, False, []
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert not truncated and reward == -info["delay"]
        delays.append(info["delay"])
        steps += 1
    assert steps == len(env.unwrapped.sim.workload)
    assert np.allclose(delays, env.unwrapped.sim.delays)


@pytest.mark.parametrize(("field", "value"), [("stations", 0), ("tasks_max", 0), ("steps", (5, 2)),
                                              ("capacities", (10.0,)), ("task_profile", "x"), ("slot_s", -1.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        OffloadConfig(**{field: value})
    with pytest.raises(ConfigError, match="^preset: "):
        OffloadConfig.preset("nope")


def _reference(cfg: OffloadConfig, sim: OffloadSim, actions) -> np.ndarray:
    """The delay model written out task by task, independent of the simulator's vectorized code."""
    w, f, rate = sim.workload, sim.capacity, sim.rate
    backlog, before, slot, out = np.zeros(cfg.stations), np.zeros(cfg.stations), 0, []
    for i in range(len(w)):
        while w.slot[i] > slot:  # end of a slot: drain
            backlog = np.maximum(backlog + before - f * cfg.slot_s, 0.0)
            before[:], slot = 0.0, slot + 1
        a, work = actions[i], w.density[i] * w.steps[i]
        up = w.size[i] / rate[a] if a != w.station[i] else 0.0
        out.append((up, work / f[a], w.result[i] / rate[a], (backlog[a] + before[a]) / f[a]))
        before[a] += work
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(stations=st.integers(1, 4), slots=st.integers(1, 4), tasks_max=st.integers(1, 5),
       caps=st.lists(st.floats(0.5, 8.0), min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1),
       batched=st.lists(st.booleans(), min_size=4, max_size=4), profile=st.sampled_from(["per_task", "per_index"]))
def test_conservation(stations, slots, tasks_max, caps, seed, batched, profile):
    cfg = OffloadConfig(stations=stations, slots=slots, tasks_max=tasks_max, capacities=tuple(caps[:stations]),
                        task_profile=profile)
    sim, rng = OffloadSim(cfg), np.random.default_rng(seed)
    sim.reset(seed=seed)
    decided = []
    while not sim.done:
        idx = sim.pending()
        if batched[sim.slot]:  # the whole slot in one call
            sim.step_slot(rng.integers(0, stations, len(idx)))
            decided += idx.tolist()
        else:  # one task at a time
            decided.append(int(idx[0]))
            sim.step_task(int(rng.integers(0, stations)))
        assert (sim.backlog >= 0).all() and (sim.added >= 0).all()
    n = len(sim.workload)
    assert sorted(decided) == list(range(n)) and len(decided) == n  # every arrived task decided exactly once
    assert (sim.target >= 0).all()
    assert sim.drained.sum() + sim.backlog.sum() == pytest.approx(sim.work.sum())  # every Gcycle processed or queued
    assert np.allclose(sim.parts, _reference(cfg, sim, sim.target))
    assert np.allclose(sim.delays, sim.parts.sum(axis=1))

    env = gym.make("eatsched/Offload-v0", config=cfg).unwrapped  # the same tasks and actions through the env
    env.reset(options={"workload": sim.workload})
    for i, a in enumerate(sim.target):
        _, reward, terminated, _, info = env.step(a)
        assert info["delay"] == pytest.approx(sum(info[p] for p in PARTS)) == pytest.approx(-reward)
        assert np.allclose([info[p] for p in PARTS], sim.parts[i])
        assert terminated == (i == len(sim.target) - 1)


def test_hand_computed_delays():
    """2 stations (f = 2, 4 GHz; R = 400, 500 Mbit/s), 2 slots, 6 tasks, every number written out."""
    cfg = OffloadConfig(stations=2, slots=2, capacities=(2.0, 4.0), rates=(400.0, 500.0))
    w = OffloadWorkload(slot=[0, 0, 0, 1, 1, 1], station=[0, 0, 1, 0, 1, 1], index=[0, 1, 0, 0, 0, 1],
                        size=[4, 2, 5, 3, 2.5, 2], steps=[10, 5, 14, 2, 4, 12],
                        density=[0.2, 0.3, 0.25, 0.5, 0.25, 0.25], result=[0.8, 1.0, 0.6, 0.9, 0.7, 0.6])
    # work (Gcycles): 2, 1.5, 3.5 | 1, 1, 3
    env = gym.make("eatsched/Offload-v0", config=cfg).unwrapped
    obs, _ = env.reset(options={"workload": w})
    assert env.sim.candidate_delays() == pytest.approx([1.002, 4 / 500 + 2 / 4 + 0.8 / 500])
    expected = [  # (target, upload, compute, download, wait)
        (0, 0.0, 2 / 2, 0.8 / 400, 0.0),  # A: local at 0
        (1, 2 / 500, 1.5 / 4, 1.0 / 500, 0.0),  # B: offloaded to 1
        (1, 0.0, 3.5 / 4, 0.6 / 500, 1.5 / 4),  # C: local at 1, behind B's 1.5 Gcycles
        # end of slot 0: server 0 holds max(2 - 2, 0) = 0, server 1 max(5 - 4, 0) = 1 Gcycle
        (1, 3 / 500, 1 / 4, 0.9 / 500, 1.0 / 4),  # D: offloaded to 1, behind the carried 1 Gcycle
        (0, 2.5 / 400, 1 / 2, 0.7 / 400, 0.0),  # E: offloaded to 0
        (1, 0.0, 3 / 4, 0.6 / 500, 2.0 / 4),  # F: local at 1, behind 1 carried + D's 1
    ]
    totals = [1.002, 0.381, 1.2512, 0.5078, 0.508, 1.2512]
    for i, ((target, *parts), total) in enumerate(zip(expected, totals, strict=True)):
        if i == 3:  # slot 1's observation shows the slot-start backlogs
            assert obs[4 + 2:4 + 4].tolist() == [0.0, 1.0]
        obs, reward, terminated, _, info = env.step(target)
        assert [info[p] for p in PARTS] == pytest.approx(parts)
        assert info["delay"] == pytest.approx(total) and reward == pytest.approx(-total)
    assert terminated
    assert env.sim.backlog.tolist() == pytest.approx([0.0, 1.0])  # server 1: 1 + 1 + 3 - 4


def test_opt_ts_beats_random_paired_by_seed():
    cfg = OffloadConfig.preset("small")
    seeds = range(5)
    opt, rnd = evaluate_baseline("opt-ts", cfg, seeds), evaluate_baseline("random", cfg, seeds)
    assert all(o <= r for o, r in zip(opt, rnd, strict=True)), (opt, rnd)
    assert evaluate_baseline("opt-ts", cfg, seeds) == opt  # seeded


def test_stations_match_separate_networks():
    torch.manual_seed(0)
    ens = Stations(lambda: mlp([5, 7, 3]), 4)
    x = torch.randn(4, 6, 5)
    out = ens(x)
    for i in range(4):
        net = mlp([5, 7, 3])
        net.load_state_dict({k: p[i] for k, p in zip(ens._names, ens.weights, strict=True)})
        assert torch.allclose(out[i], net(x[i]), atol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_learned_methods_train(method, tmp_path):
    cfg = OffloadConfig.preset("small")
    args = METHODS[method](learning_starts=5, batch_size=8)
    delays = train_offload(method, cfg, 2, seed=1, out=tmp_path, args=args)
    assert len(delays) == 2 and all(d > 0 for d in delays)
    with (tmp_path / "train_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LOG_COLUMNS and len(rows) == 2 and int(rows[-1]["updates"]) > 0
    assert (tmp_path / "agent.pt").exists()


def test_lad_memory_stores_each_decisions_probabilities():
    cfg = OffloadConfig.preset("small")
    sim = OffloadSim(cfg)
    learner = OffloadLearner("lad-ts", sim, METHODS["lad-ts"](learning_starts=5, batch_size=8), seed=0)
    learner.episode(np.random.default_rng(0))
    w = sim.workload
    stored = learner.memory[w.slot, w.station, w.index]
    assert np.allclose(stored.sum(-1), 1.0) and (stored >= 0).all()  # probabilities, stored back
    untouched = np.ones(learner.memory.shape[:3], bool)
    untouched[w.slot, w.station, w.index] = False
    assert not np.allclose(learner.memory[untouched].sum(-1), 1.0)  # other contexts keep their start noise
