"""The paper-grid evaluation, its report, and the offline optimum (issue 4 acceptance)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from eatsched.algos import make_policy
from eatsched.cli import app
from eatsched.core.config import EATConfig
from eatsched.core.invariants import check_schedule
from eatsched.experiments import optimal
from eatsched.experiments.evaluate import METRICS, Cell, EvalSettings, ci95, evaluate, plot_training
from eatsched.experiments.report import BEGIN, END, write_report
from eatsched.sim.rollout import simulate

CELLS = ((4, (0.05,)), (8, (0.1,)))
ALGOS = ("fifo", "greedy", "eat")  # eat: skipped (empty --checkpoints dir), never a crash


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    empty = tmp_path_factory.mktemp("no-checkpoints")
    settings = EvalSettings(grid="test", algos=ALGOS, seeds=2, seed0=1000, jobs=1, checkpoints=empty, cells=CELLS)
    warnings: list[str] = []
    ev = evaluate(settings, out, warn=warnings.append)
    return settings, out, ev, warnings


def test_reduced_grid_tables_have_rows_columns_and_simulate_numbers(grid):
    settings, out, ev, warnings = grid
    assert set(ev.skipped) == {"eat-n4", "eat-n8"} and len(warnings) == 2
    assert json.loads((out / "skipped.json").read_text()).keys() == {"eat-n4", "eat-n8"}
    for metric, (key, _, _) in METRICS.items():
        md = (out / f"{metric}.md").read_text().splitlines()
        header = next(line for line in md if line.startswith("| algorithm"))
        assert header == "| algorithm | N4 0.05 | N8 0.1 |"
        body = [line for line in md if line.startswith("| ") and not line.startswith("| algorithm")]
        names = [line.split(" | ")[0][2:] for line in body]
        assert names == ["fifo", "greedy"] + (["*lower bound*"] if metric == "response" else [])
        assert "Skipped: eat-n4" in "\n".join(md)
        with (out / f"{metric}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [(r["algorithm"], r["nodes"], r["rate"]) for r in rows] == [
            ("fifo", "4", "0.05"), ("fifo", "8", "0.1"), ("greedy", "4", "0.05"), ("greedy", "8", "0.1")]
        for r in rows:
            cfg = EATConfig(nodes=int(r["nodes"]), rate=float(r["rate"]))
            expect = simulate(make_policy(r["algorithm"], cfg), cfg, 2, 1000).summary()
            if key != "mean_decision_ms":  # a measured time: only its presence is checked
                assert float(r[key]) == expect[key]
            assert float(r["ci95"]) >= 0 and r["seeds"] == "2"
    assert (out / "efficiency.png").stat().st_size > 1000
    # the response floor sits below every scheduler's mean response in each column
    bounds = json.loads((out / "response_bound.json").read_text())
    for cell, rec in ev.records.items():
        assert 0 < bounds[cell.column] <= rec["summary"]["mean_response_s"]


def test_cell_numbers_match_the_eat_simulate_command(grid):
    _, out, _, _ = grid
    res = CliRunner().invoke(app, ["simulate", "--policy", "greedy", "--nodes", "8", "--rate", "0.1",
                                   "--episodes", "2", "--seed", "1000", "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.output)
    rec = json.loads((out / "cells" / "greedy-n8-r0.1.json").read_text())
    for key in ("mean_quality", "mean_response_s", "p95_response_s", "reload_rate", "efficiency", "mean_reward"):
        assert rec["summary"][key] == cli[key]


def test_second_run_recomputes_nothing_and_changed_settings_recompute(grid, tmp_path):
    settings, out, ev, _ = grid
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = evaluate(settings, out, warn=lambda m: None)
    assert again.computed == [] and set(again.records) == set(ev.records)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps
    assert again.records[Cell("fifo", 4, 0.05)]["summary"] == ev.records[Cell("fifo", 4, 0.05)]["summary"]
    # a different number of seeds is a different experiment: every cell is recomputed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    more = EvalSettings(grid="test", algos=("fifo",), seeds=3, seed0=1000, jobs=1, cells=CELLS)
    assert len(evaluate(more, copy, warn=lambda m: None).computed) == 2


def test_report_markdown_html_and_results_section(grid, tmp_path):
    _, out, _, _ = grid
    results = tmp_path / "results.md"
    results.write_text(f"# Results\n\nhand-written intro\n\n{BEGIN}\nSTALE-TEXT\n{END}\n\nhand-written outro\n")
    md, html = write_report(out, results_md=results)
    text = md.read_text()
    assert "Table IX" in text and "Table XII" in text and '"base_config"' in text
    assert "data:image/png;base64," in html.read_text()
    doc = results.read_text()
    assert "hand-written intro" in doc and "hand-written outro" in doc and "STALE-TEXT" not in doc
    assert "(0.270)" in doc  # the paper's greedy quality beside ours
    assert "Ordering, best first" in doc


def test_training_plot_reads_the_training_log_contract(tmp_path):
    assert not plot_training(tmp_path, tmp_path / "training.png")
    run = tmp_path / "eat-n8"
    run.mkdir()
    rows = ["step,episodes,episode_reward,episode_length,loss_actor,loss_critic,alpha,wall_s"]
    rows += [f"{1000 * i},{i},{10 + i},{200 - i},{-1.0 * i},{0.5 / (i + 1)},,{i}" for i in range(1, 6)]
    (run / "train_log.csv").write_text("\n".join(rows) + "\n")
    assert plot_training(tmp_path, tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 1000


def test_ci95_is_t_based():
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(ci95([1.0]))


def test_unknown_algorithm_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown algorithm"):
        evaluate(EvalSettings(algos=("nope",), cells=CELLS), tmp_path)


# --- the offline optimum --------------------------------------------------------------------------------------
HEURISTICS = ("random", "fifo", "greedy", "adaptive")
INSTANCES = [(4, 0.05, 0), (4, 0.05, 1), (4, 0.09, 2), (4, 0.03, 3), (5, 0.05, 1)]


@pytest.mark.parametrize(("tasks", "rate", "seed"), INSTANCES)
def test_optimum_is_feasible_and_never_worse_than_any_scheduler(tasks, rate, seed):
    cfg = EATConfig(nodes=4, rate=rate, tasks_per_episode=tasks)
    w = optimal.instance(cfg, seed)
    best = optimal.solve(cfg, w, "reward")  # no incumbent: the search finds the optimum on its own
    fast = optimal.solve(cfg, w, "response")
    assert best.optimal and fast.optimal
    assert check_schedule(best.tasks, cfg, terminated=True) == []
    assert check_schedule(fast.tasks, cfg, terminated=True) == []
    lower = optimal.response_lower_bound(cfg, w)
    assert lower <= fast.value + 1e-9
    for name in HEURISTICS:
        tasks_rec, _ = optimal.run_scheduler(name, cfg, seed)
        assert optimal.reward_r0(tasks_rec, cfg) <= best.value + 1e-9, name
        assert optimal.mean_response(tasks_rec) >= fast.value - 1e-9, name


def test_r0_is_the_simulator_reward_without_the_queue_term():
    cfg = EATConfig(nodes=4, rate=0.07, tasks_per_episode=10, w_w=0.0)
    for name in HEURISTICS:
        res = simulate(make_policy(name, cfg, seed=5), cfg, 1, 5)
        assert optimal.reward_r0(res.task_records[0], cfg) == pytest.approx(res.episodes[0]["reward"], rel=1e-12)


def test_response_lower_bound_holds_on_full_episodes():
    cfg = EATConfig(nodes=8, rate=0.12)
    for seed in range(3):
        lower = optimal.response_lower_bound(cfg, optimal.instance(cfg, seed))
        for name in HEURISTICS:
            tasks_rec, _ = optimal.run_scheduler(name, cfg, seed)
            assert lower <= optimal.mean_response(tasks_rec)
        assert lower > 0


def test_eat_optimal_command():
    res = CliRunner().invoke(app, ["optimal", "--tasks", "4", "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["status"] == "optimal"
    gaps = {r["name"]: r["gap_pct"] for r in out["rows"]}
    assert set(gaps) == {"optimum", *HEURISTICS} and min(gaps.values()) >= -1e-9
    assert np.isfinite(out["response_lower_bound_s"])


def test_eat_evaluate_and_report_commands_in_parallel(grid, tmp_path):
    """The CLI end to end with a process pool; the cells equal the in-process run of the same settings."""
    _, serial_out, _, _ = grid
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["evaluate", "--grid", "small", "--algos", "fifo,greedy", "--seeds", "2",
                                   "--jobs", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Table IX" in res.output and "4 cells (4 computed, 0 stored)" in res.output
    settings = EvalSettings(grid="test", algos=("fifo",), seeds=2, seed0=2_000_000, jobs=1, cells=((8, (0.1,)),))
    serial = evaluate(settings, tmp_path / "serial", warn=lambda m: None)
    par = json.loads((out / "cells" / "fifo-n8-r0.1.json").read_text())
    assert par["summary"] | {"mean_decision_ms": 0} == serial.records[Cell("fifo", 8, 0.1)]["summary"] | {
        "mean_decision_ms": 0}
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    bad = CliRunner().invoke(app, ["evaluate", "--grid", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown grid" in bad.output
