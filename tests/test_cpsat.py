"""The CP-SAT model of the offline problem (``experiments.cpsat``) against the branch and bound, the invariant
checker and every scheduler; and the branch and bound's labels when it stops early (issue 19)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from eatsched.cli import app
from eatsched.core.config import EATConfig
from eatsched.core.invariants import check_schedule
from eatsched.experiments import optimal

pytest.importorskip("ortools")
from eatsched.experiments import cpsat  # noqa: E402

SCHEDULERS = ("random", "fifo", "greedy", "adaptive", "hol")
BOTH = [(4, 4, 0.09, 2), (4, 5, 0.09, 2), (4, 5, 0.03, 3), (4, 6, 0.05, 3), (8, 4, 0.1, 0), (8, 5, 0.2, 1)]
"""Small instances (nodes, tasks, rate, seed) that both solvers solve to the end."""


def best_scheduler(cfg, seed, key):
    runs = [optimal.run_scheduler(n, cfg, seed)[0] for n in SCHEDULERS]
    return max(runs, key=key)


@pytest.mark.parametrize(("nodes", "tasks", "rate", "seed"), BOTH)
def test_cpsat_agrees_with_the_branch_and_bound(nodes, tasks, rate, seed):
    cfg = EATConfig(nodes=nodes, rate=rate, tasks_per_episode=tasks)
    w = optimal.instance(cfg, seed)
    inc = best_scheduler(cfg, seed, lambda t: optimal.reward_r0(t, cfg))
    for objective in ("reward", "response"):
        bnb = optimal.solve(cfg, w, objective)
        cp = cpsat.solve_cpsat(cfg, w, objective, time_limit=300, workers=2,
                               incumbent=inc if objective == "reward" else None)
        assert bnb.optimal and cp.optimal, (objective, bnb.status, cp.status)
        assert cp.value == pytest.approx(bnb.value, rel=1e-7, abs=1e-7), objective
        assert check_schedule(cp.tasks, cfg, terminated=True) == []
        # the proven bound is on the right side of the optimum
        if objective == "reward":
            assert cp.bound >= bnb.value - 1e-9
        else:
            assert cp.bound <= bnb.value + 1e-9


def test_cpsat_at_realistic_size_is_feasible_and_never_worse_than_any_scheduler():
    """8 nodes and 8 tasks: out of the branch and bound's reach, solved by CP-SAT."""
    cfg = EATConfig(nodes=8, rate=0.1, tasks_per_episode=8)
    seed = 2_000_000
    w = optimal.instance(cfg, seed)
    runs = {n: optimal.run_scheduler(n, cfg, seed)[0] for n in SCHEDULERS}
    inc = max(runs.values(), key=lambda t: optimal.reward_r0(t, cfg))
    best = cpsat.solve_cpsat(cfg, w, "reward", time_limit=240, incumbent=inc)
    fast = cpsat.solve_cpsat(cfg, w, "response", time_limit=240)
    assert best.solver == "cp-sat" and best.label in ("optimal", "best found")
    for sol in (best, fast):
        assert check_schedule(sol.tasks, cfg, terminated=True) == []
    assert best.upper_bound >= best.value - 1e-9 and fast.upper_bound <= fast.value + 1e-9
    for name, tasks in runs.items():
        assert optimal.reward_r0(tasks, cfg) <= best.value + 1e-9, name
        if fast.optimal:
            assert optimal.mean_response(tasks) >= fast.value - 1e-9, name


def test_replay_launches_in_time_order_whatever_order_it_is_given():
    """A task placed first but arriving later must not be launched before a task that starts earlier elsewhere."""
    import numpy as np

    from eatsched.core.workload import Workload

    cfg = EATConfig(nodes=4, tasks_per_episode=3)
    w = Workload(np.array([10.0, 0.0, 1.0]), np.array([2, 2, 2]), np.zeros(3, np.int64))
    recs = cpsat.replay(cfg, w, [[0, 1], [2, 3], [0, 1]], [10, 10, 10], [0, 1, 2])
    assert check_schedule(recs, cfg, terminated=True) == []
    assert list(np.argsort(recs["order"])) == [1, 0, 2] and recs["start"][1] == 0.0
    assert recs["reload"].tolist() == [1, 1, 0]  # task 2 reuses task 0's group


def test_block_bound_is_a_valid_bound():
    for nodes, tasks, rate, seed in ((4, 6, 0.05, 3), (4, 5, 0.09, 2)):
        cfg = EATConfig(nodes=nodes, rate=rate, tasks_per_episode=tasks)
        w = optimal.instance(cfg, seed)
        ub, exact = optimal.block_bound(cfg, w, "reward", block=3)
        lb, _ = optimal.block_bound(cfg, w, "response", block=3)
        assert exact
        assert ub >= optimal.solve(cfg, w, "reward").value - 1e-9
        assert lb <= optimal.solve(cfg, w, "response").value + 1e-9


def test_branch_and_bound_stopped_early_says_best_found_with_a_valid_bound():
    """Issue 19: at the node limit the first row was labelled the optimum (a heuristic's schedule, its gap 0.0%) and
    the upper bound was the root's, the same for every seed."""
    bounds = []
    for rate, seed in ((0.05, 3), (0.03, 1)):
        cfg = EATConfig(nodes=4, rate=rate, tasks_per_episode=6)
        w = optimal.instance(cfg, seed)
        full = optimal.solve(cfg, w, "reward")
        early = optimal.solve(cfg, w, "reward", node_limit=200)
        assert full.optimal and not early.optimal and early.label == "best found"
        assert early.value <= full.value + 1e-9 <= early.upper_bound + 2e-9
        bounds.append(early.upper_bound)
        res = optimal.compare_on_instance(cfg, seed, ("fifo", "greedy"), solver="bnb", node_limit=200)
        assert res["rows"][0]["name"] == "best found" and res["status"] == "best found" and not res["optimal"]
        for r in res["rows"][1:]:  # the true gap lies between the two
            true_gap = 100.0 * (full.value - r["objective"]) / full.value
            assert r["gap_pct"] - 1e-9 <= true_gap <= r["gap_bound_pct"] + 1e-9
    assert bounds[0] != bounds[1]


def test_eat_optimal_command_labels_and_solvers():
    res = CliRunner().invoke(app, ["optimal", "--tasks", "4", "--seed", "1", "--solver", "bnb", "--node-limit", "50",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["solver"] == "branch-and-bound" and out["rows"][0]["name"] in ("optimum", "best found")
    assert (out["rows"][0]["name"] == "optimum") == out["optimal"]
    res = CliRunner().invoke(app, ["optimal", "--tasks", "5", "--seed", "1", "--nodes", "8", "--rate", "0.2"])
    assert res.exit_code == 0, res.output
    assert "cp-sat" in res.output and "proven bound" in res.output
    res = CliRunner().invoke(app, ["optimal", "--solver", "gurobi"])
    assert res.exit_code == 2 and "choose from cp-sat, bnb" in res.output


def test_cpsat_refuses_settings_it_does_not_model():
    cfg = EATConfig.preset("authors", nodes=4, tasks_per_episode=12)
    with pytest.raises(ValueError, match="not modelled"):
        cpsat.solve_cpsat(cfg, optimal.instance(cfg, 0))
    assert math.isfinite(cpsat.TIME_UNITS)
