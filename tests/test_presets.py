"""The authors' setting as switches (issue 19): every difference from SPEC is a named ``EATConfig`` field with
SPEC's behaviour as default, ``--preset authors`` sets them all, and each behaves as the authors' code does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from eatsched.algos import make_policy
from eatsched.algos.heuristics import HolPolicy, with_steps
from eatsched.cli import app
from eatsched.core import kernel
from eatsched.core.config import AUTHORS_FIXES, PRESETS, SWITCH_VALUES, ConfigError, EATConfig
from eatsched.core.state import NO_GROUP, SERVER, make_params
from eatsched.core.workload import Workload
from eatsched.sim.env import EATEnv
from eatsched.sim.rollout import simulate


def test_spec_is_the_default_and_authors_plus_every_fix_is_spec():
    assert EATConfig.preset("spec") == EATConfig()
    for name, values in SWITCH_VALUES.items():
        assert getattr(EATConfig(), name) == values[0], name
    fixed = dict(PRESETS["authors"])
    for changes in AUTHORS_FIXES.values():
        fixed.update(changes)
    assert EATConfig(**fixed) == EATConfig()
    authors = EATConfig.preset("authors")
    assert all(getattr(authors, k) == v for k, v in PRESETS["authors"].items())
    # each fix changes the authors' setting
    for fix, changes in AUTHORS_FIXES.items():
        assert authors.replace(**changes) != authors, fix


def test_unknown_preset_or_switch_value_names_the_allowed_values():
    with pytest.raises(ConfigError, match="unknown preset 'paper'; choose from spec, authors"):
        EATConfig.preset("paper")
    with pytest.raises(ConfigError, match="selector: must be 'least-fragmentation' or 'first-idle', got 'random'"):
        EATConfig(selector="random")
    with pytest.raises(ConfigError, match="step_decoding: must be 'rounded' or '32u'"):
        EATConfig(step_decoding="64u")
    with pytest.raises(ConfigError, match="mode: must be 'tick', 'event' or 'grid'"):
        EATConfig(mode="ticks")
    with pytest.raises(ConfigError, match="prequeued"):
        EATConfig(prequeued=40)
    for args, words in ((["--preset", "paper"], "--preset: unknown preset 'paper'; choose from spec, authors"),
                        (["--set", "selector=first"], "selector: must be 'least-fragmentation' or 'first-idle'"),
                        (["--set", "quality_dip=maybe"], "quality_dip: cannot read 'maybe'")):
        res = CliRunner().invoke(app, ["simulate", "--episodes", "1", *args])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and words in res.output, res.output
    res = CliRunner().invoke(app, ["evaluate", "--preset", "paper"])
    assert res.exit_code == 2 and "choose from spec, authors" in res.output


def test_prequeued_tasks_wait_at_zero_and_the_clock_starts_later():
    cfg = EATConfig.preset("authors", nodes=8, rate=0.1)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=3)
    a = env.workload.arrival
    assert (a[:10] == 0.0).all() and (a[10:] > 1.0).all() and len(a) == 32
    assert info["time"] == 1.0 and info["queued"] == 10
    # SPEC draws exactly the workload it drew before the switch existed: one Poisson process from 0
    spec = EATEnv(EATConfig(nodes=8, rate=0.1))
    spec.reset(seed=3)
    gaps = np.diff(np.concatenate([[0.0], spec.workload.arrival]))
    assert (gaps > 0).all() and spec.now == spec.workload.arrival[0]
    # the authors' later arrivals are SPEC's first 22, shifted by the clock start
    np.testing.assert_allclose(a[10:], spec.workload.arrival[:22] + 1.0)


def _servers(groups, busy=()):
    """Idle servers with the given group of each (None: ungrouped), model 0; ``busy`` ones busy until t=100."""
    s = np.zeros(len(groups), SERVER)
    s["speed"], s["up"], s["model"] = 1.0, 1, 0
    sizes = {g: sum(1 for x in groups if x == g) for g in groups if g is not None}
    for j, g in enumerate(groups):
        s[j]["group"] = NO_GROUP if g is None else g
        s[j]["group_size"] = 0 if g is None else sizes[g]
        if j in busy:
            s[j]["busy_until"] = 100.0
    return s


def test_first_idle_selector_takes_an_exact_group_else_the_first_idle_servers():
    out = np.zeros(8, np.int64)
    work = np.zeros(16, np.int64)
    # groups {0,1} (size 2) and {2,3,4,5} (size 4), servers 6, 7 free
    s = _servers([0, 0, 1, 1, 1, 1, None, None])
    assert kernel.select_first_idle(s, 0.0, 2, 0, out) == (2, True) and list(out[:2]) == [0, 1]
    # no idle group of exactly 1: the first idle server by index, breaking the group of 2
    assert kernel.select_first_idle(s, 0.0, 1, 0, out) == (1, False) and out[0] == 0
    # SPEC instead takes an ungrouped server first
    assert kernel.select_servers(s, 0.0, 1, 0, out, work) == (1, False) and out[0] == 6
    # busy servers are skipped
    s = _servers([0, 0, 1, 1, 1, 1, None, None], busy=(0, 1))
    assert kernel.select_first_idle(s, 0.0, 2, 0, out) == (2, False) and list(out[:2]) == [2, 3]


def test_step_decoding_32u_quality_dip_and_float32_durations():
    p = make_params(EATConfig.preset("authors"))[0]
    spec = make_params(EATConfig())[0]
    assert kernel._decode_steps_p(p, np.float32(0.25)) == 20.0  # 32 * (0.25 + 1) / 2
    assert kernel._decode_steps_p(p, np.float32(-1.0)) == 0.0  # no s_min: q = 0 below 5 steps
    assert kernel._decode_steps_p(spec, 0.25) == 22.0  # round(5 + 27 * 0.625)
    u = np.float32(0.123)
    assert kernel._decode_steps_p(p, u) == float(np.float32(np.float32(u + np.float32(1)) / 2) * np.float32(32))
    assert kernel.quality_dip(30, 0.27) == pytest.approx(0.16 * math.log(30) / math.log(6) - 0.02)
    assert kernel.quality_dip(31, 0.27) == 0.27 < kernel.quality_dip(30, 0.27)  # the dip
    assert kernel.quality(31, 0.27) == kernel.quality(30, 0.27) == 0.27  # SPEC: capped, monotone
    assert kernel.quality_dip(4.99, 0.27) == 0.0
    # float32: 0.14 s/step x 20 steps + 32 s init = float32(34.8)
    assert kernel._exec_seconds(p, 20.0, 32.0, 0.14) + 32.0 == pytest.approx(float(np.float32(34.8)), abs=1e-12)
    assert kernel._exec_seconds(spec, 20.0, 32.0, 0.14) == pytest.approx(2.8, abs=1e-15)


def test_grid_mode_frees_servers_after_the_authors_float32_countdown():
    p = make_params(EATConfig.preset("authors"))[0]
    # 2.8 s in float32 takes 29 ticks of 0.1 s to count down to <= 0 (28 in exact arithmetic)
    t = kernel._grid_release(p, 0.0, float(np.float32(np.float32(0.14) * np.float32(20.0))))
    assert t == pytest.approx(2.9, abs=1e-9)
    exact = make_params(EATConfig.preset("authors", float32_durations=False))[0]
    assert kernel._grid_release(exact, 0.0, 2.8) == pytest.approx(2.8, abs=1e-9)
    assert kernel._grid_release(p, 0.0, 0.0) == pytest.approx(0.1)  # at least one tick


def test_authors_episode_times_lie_on_the_grid():
    cfg = EATConfig.preset("authors", nodes=4, rate=0.07)
    res = simulate(make_policy("random", cfg, seed=1), cfg, 2, seed=1)
    starts = np.array([t["start"] for t in res.tasks if t["start"] == t["start"]])
    ticks = (starts - 1.0) / 0.1
    assert np.allclose(ticks, np.round(ticks), atol=1e-6) and len(starts) > 20


def test_empty_slots_win_makes_a_no_op():
    cfg = EATConfig.preset("authors", nodes=4, rate=0.1)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=0)
    a = np.full(cfg.action_dim, -1.0, np.float32)
    a[0] = 1.0
    a[2 + 9] = 1.0  # the last slot; with 10 tasks queued at reset it holds a task
    env.step(a)
    assert env.episode_tasks()["order"].max() == 0  # launched the task in slot 9
    obs, info = env.reset(seed=0)
    for _ in range(10):  # run the queue down below 10 tasks with launches of slot 0
        a = np.full(cfg.action_dim, -1.0, np.float32)
        a[0], a[2] = 1.0, 1.0
        obs, r, term, trunc, info = env.step(a)
    queued = info["queued"]
    assert queued < 10
    empty = np.full(cfg.action_dim, -1.0, np.float32)
    empty[0], empty[2 + 9] = 1.0, 1.0  # an empty slot scores highest: the authors' argmax lands on it
    before = env.episode_tasks()["order"].max()
    _, r, _, _, _ = env.step(empty)
    assert r == 0.0 and env.episode_tasks()["order"].max() == before
    spec = EATEnv(EATConfig(nodes=4, rate=0.1))
    spec.reset(seed=0)
    _, r, _, _, _ = spec.step(empty)  # SPEC: empty slots never win, the best startable task is launched
    assert r > 0


def test_greedy_switches_reproduce_the_authors_greedy_agent():
    cfg = EATConfig.preset("authors", nodes=8, rate=0.1)
    res = simulate(make_policy("greedy", cfg), cfg, 2, seed=0)
    assert {t["steps"] for t in res.tasks} == {32}  # the slot defect: always the most steps (q = 0.27)
    assert res.summary()["mean_quality"] == pytest.approx(0.27)
    # unpriced: of the tasks that can start, the one that waited least wins unless the time term is capped
    cfg = EATConfig.preset("authors", nodes=4, rate=0.1)
    env = EATEnv(cfg)
    g = make_policy("greedy", cfg)
    g.attach(env.state_arrays)
    w = Workload(np.array([0.0, 0.0, 30.0]), np.array([4, 4, 4]), np.zeros(3, np.int64))
    obs, info = env.reset(options={"workload": w})
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(g.act(obs, info))
        done = term or trunc
    order = np.argsort(env.episode_tasks()["order"])
    assert list(order) == [0, 2, 1]  # task 2 (waited 7.5 s) passes task 1 (waited 37.5 s)


def test_double_tanh_squashes_the_sac_family_only():
    pytest.importorskip("torch")
    cfg = EATConfig(nodes=4, rate=0.05)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=0)
    once = make_policy("eat", cfg).act(obs, info)
    twice = make_policy("eat", cfg.replace(sac_double_tanh=True)).act(obs, info)
    np.testing.assert_allclose(twice, np.tanh(once), rtol=1e-6)
    assert np.abs(twice).max() <= np.tanh(1.0) + 1e-6
    r1 = make_policy("random", cfg, seed=1).act(obs, info)
    r2 = make_policy("random", cfg.replace(sac_double_tanh=True), seed=1).act(obs, info)
    np.testing.assert_array_equal(r1, r2)  # their RandomAgent applied no tanh


def test_training_rate_replaces_the_configured_rate():
    cfg = EATConfig.preset("authors", rate=0.1)
    assert cfg.training_config().rate == 0.5 and cfg.rate == 0.1
    assert EATConfig(rate=0.1).training_config() == EATConfig(rate=0.1)


def test_hol_waits_for_the_oldest_task_and_steps_apply_to_fixed_step_heuristics():
    cfg = EATConfig(nodes=4, rate=0.2)
    res = simulate(HolPolicy(cfg, steps=12), cfg, 2, seed=0)
    for ep in range(2):
        tasks = sorted((t for t in res.tasks if t["episode"] == ep), key=lambda t: t["task_id"])
        starts = [t["start"] for t in tasks]
        assert starts == sorted(starts)  # head of line: never a younger task before an older one
    assert {t["steps"] for t in res.tasks} == {12}
    assert with_steps("fifo", cfg, 9).steps == 9 and with_steps("adaptive", cfg, 9).high == 9
    with pytest.raises(ValueError, match="fixed-step schedulers fifo, hol, adaptive"):
        with_steps("greedy", cfg, 9)
    authors = EATConfig.preset("authors", nodes=4)
    assert with_steps("hol", authors, 2).steps == 2  # 32u decodes any of 0..32 steps
    res = CliRunner().invoke(app, ["simulate", "--policy", "fifo", "--steps", "10", "--episodes", "1", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["mean_quality"] == pytest.approx(kernel.quality(10, 0.27))


def test_preset_authors_runs_on_simulate_evaluate_and_reports(tmp_path):
    res = CliRunner().invoke(app, ["simulate", "--preset", "authors", "--policy", "random", "--nodes", "4",
                                   "--episodes", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["preset"] == "authors" and out["mean_quality"] < 0.23  # 5/32 of draws score 0
    res = CliRunner().invoke(app, ["evaluate", "--grid", "small", "--preset", "authors", "--algos", "fifo",
                                   "--seeds", "2", "--jobs", "1", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "ev" / "settings.json").read_text())
    assert settings["base_config"]["selector"] == "first-idle" and settings["base_config"]["prequeued"] == 10


def test_ablation_runs_each_fix_and_report_writes_its_section(tmp_path):
    from eatsched.experiments.evaluate import EvalSettings, evaluate_ablation
    from eatsched.experiments.report import ABLATION_BEGIN, ABLATION_END, write_report

    s = EvalSettings(grid="test", algos=("fifo", "greedy"), seeds=2, cells=((4, (0.05,)),))
    summary = evaluate_ablation(s, tmp_path / "abl", verdict_algos=("random", "greedy"), warn=lambda m: None)
    names = [v["name"] for v in summary["variants"]]
    assert names[0] == "authors" and names[-1] == "spec" and "selector" in names and "double-tanh" not in names
    rows = {v["name"]: v["rows"] for v in summary["variants"]}
    assert rows["greedy-slot"]["fifo"]["as_authors"] and not rows["greedy-slot"]["greedy"]["as_authors"]
    assert rows["authors"]["greedy"]["values"]["quality"][0] == pytest.approx(0.27)  # every launch at 32 steps
    assert rows["greedy-slot"]["greedy"]["values"]["quality"][0] != pytest.approx(0.27)
    assert [c["claim"].split()[0] for c in summary["verdict"]] == ["EAT", "Greedy", "EAT", "EAT"]
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nhand-written\n")
    write_report(tmp_path / "abl", results)
    write_report(tmp_path / "abl", results)  # regenerated in place, not appended twice
    text = results.read_text()
    assert text.count(ABLATION_BEGIN) == 1 and text.count(ABLATION_END) == 1 and "hand-written" in text
    assert "+ selector" in text and "The paper's claims under each setting" in text
