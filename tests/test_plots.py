"""The plots read at every grid size (issue 17, item 7) and the schedule timeline (item 4), checked from the
figures' artists: one colour and one marker per algorithm, points not stacked, one bar per (task, server)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from matplotlib.colors import to_hex

from eatsched.algos import make_policy
from eatsched.core.config import EATConfig
from eatsched.core.metrics import server_ids
from eatsched.experiments.evaluate import (
    ALGO_COLOURS,
    DEFAULT_ALGOS,
    GRIDS,
    Cell,
    EvalSettings,
    Evaluation,
    algo_styles,
    plot_efficiency,
    plot_training,
)
from eatsched.sim.rollout import simulate
from eatsched.sim.timeline import draw_timeline


def fake_evaluation(grid: str, algos=DEFAULT_ALGOS) -> Evaluation:
    """Records with only what the plot reads; every algorithm gets nearly the same efficiency (the worst case for
    telling them apart)."""
    settings = EvalSettings(grid=grid, algos=tuple(algos), seeds=3)
    rng = np.random.default_rng(0)
    records = {Cell(a, n, float(r)): {"summary": {"efficiency": 0.01 + 1e-4 * rng.random()},
                                      "ci95": {"efficiency": 1e-3}}
               for a in algos for n, rates in settings.grid_cells() for r in rates}
    return Evaluation(settings, records, {}, [], 0.0)


def lines_by_gid(fig, prefix: str):
    out = defaultdict(list)
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid.startswith(prefix):
                out[ax].append((gid[len(prefix):], line))
    return out


@pytest.mark.parametrize("grid", ["small", "paper"])
def test_efficiency_plot_has_a_colour_and_marker_per_algorithm_and_no_stacks(grid, tmp_path):
    ev = fake_evaluation(grid)
    fig = plot_efficiency(ev, tmp_path / "efficiency.png")
    assert (tmp_path / "efficiency.png").stat().st_size > 10_000
    panels = lines_by_gid(fig, "efficiency/")
    assert len(panels) == len(GRIDS[grid])
    colours, markers = {}, {}
    for ax, lines in panels.items():
        assert [a for a, _ in lines] == list(DEFAULT_ALGOS)
        for algo, line in lines:
            colours.setdefault(algo, set()).add(to_hex(line.get_color()))
            markers.setdefault(algo, set()).add(line.get_marker())
        # at every rate, the twelve algorithms' points sit at twelve different x positions
        xs = np.array([line.get_xdata() for _, line in lines], dtype=float)  # (algos, rates)
        for col in xs.T:
            assert len(set(np.round(col, 9))) == len(DEFAULT_ALGOS)
        assert ax.get_ylabel() and ("tasks/s" in ax.get_xlabel() + ax.get_title())
    assert all(len(c) == 1 for c in colours.values())  # one colour per algorithm in every panel
    assert len({next(iter(c)) for c in colours.values()}) == len(DEFAULT_ALGOS)
    assert len({next(iter(m)) for m in markers.values()}) == len(DEFAULT_ALGOS)
    assert {a: next(iter(c)) for a, c in colours.items()} == {a: ALGO_COLOURS[a].lower() for a in DEFAULT_ALGOS}
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(DEFAULT_ALGOS)


def test_styles_are_fixed_per_name_and_distinct_for_unknown_names():
    assert algo_styles(["fifo", "eat"]) == {"fifo": algo_styles(list(DEFAULT_ALGOS))["fifo"],
                                            "eat": algo_styles(list(DEFAULT_ALGOS))["eat"]}
    assert algo_styles(["eat"])["eat"]["color"] != algo_styles(["fifo"])["fifo"]["color"]
    names = [*DEFAULT_ALGOS, "new-a", "new-b", "new-c"]
    styles = algo_styles(names)
    assert len({s["color"] for s in styles.values()}) == len(names)
    assert len({s["marker"] for s in styles.values()}) == len(names)


@pytest.mark.parametrize("sizes", [(4,), (4, 8, 12)])
def test_training_plot_colours_by_algorithm_and_styles_by_size(tmp_path, sizes):
    algos = ("eat", "eat-da", "ppo", "genetic", "harmony", "lad-ts")
    for a in algos:
        for n in sizes:
            run = tmp_path / "logs" / f"{a}-n{n}"
            run.mkdir(parents=True)
            rows = ["step,episodes,episode_reward,episode_length,loss_actor,loss_critic,alpha,wall_s"]
            rows += [f"{1000 * i},{i},{10 + i + n},{200 - i},{-i},{1 / i},,{i}" for i in range(1, 12)]
            (run / "train_log.csv").write_text("\n".join(rows) + "\n")
    fig = plot_training(tmp_path / "logs", tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 10_000
    reward = lines_by_gid(fig, "training/")[fig.axes[0]]
    assert len(reward) == len(algos) * len(sizes)
    colour = {name: to_hex(line.get_color()) for name, line in reward}
    style = {name: line.get_linestyle() for name, line in reward}
    for a in algos:
        assert len({colour[f"{a}-n{n}"] for n in sizes}) == 1
    assert len({colour[f"{a}-n{sizes[0]}"] for a in algos}) == len(algos)
    assert len({style[f"eat-n{n}"] for n in sizes}) == len(sizes)
    assert all(ax.get_xlabel() == "env steps" and ax.get_ylabel() for ax in fig.axes)
    assert plot_training(tmp_path / "empty", tmp_path / "none.png") is None


# --- the schedule ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def episode():
    cfg = EATConfig(nodes=4, rate=0.08)
    res = simulate(make_policy("fifo", cfg), cfg, 1, 3)
    return cfg, res.task_records[0], res.tasks


def bars(ax) -> dict[str, tuple[float, float, float, float]]:
    """gid -> (x0, x1, y centre, height) of every rectangle that carries a gid."""
    out = {}
    for p in ax.patches:
        if p.get_gid():
            x, y = p.get_xy()
            out[p.get_gid()] = (x, x + p.get_width(), y + p.get_height() / 2, p.get_height())
    return out


def check_timeline(fig, records) -> None:
    drawn = bars(fig.axes[0])
    expect = set()
    cold = reused = 0
    for i, t in enumerate(records):
        if t["order"] < 0:
            continue
        start, init, finish = float(t["start"]), float(t["init"]), float(t["finish"])
        for j in server_ids(t["servers"]):
            ex = drawn[f"task{i}/server{j}/exec"]
            assert ex[2] == j and math.isclose(ex[0], start + init) and math.isclose(ex[1], finish)
            expect.add(f"task{i}/server{j}/exec")
            if init > 0:
                it = drawn[f"task{i}/server{j}/init"]
                assert it[2] == j and math.isclose(it[0], start) and math.isclose(it[1], start + init)
                expect.add(f"task{i}/server{j}/init")
        cold += init > 0
        reused += init == 0
    assert set(drawn) == expect  # nothing on a server the task does not hold
    n_exec = sum(1 for g in drawn if g.endswith("/exec"))
    assert n_exec == sum(int(t["patches"]) for t in records if t["order"] >= 0)
    assert cold and reused  # the episode shows both cold starts and reused groups


def test_timeline_draws_each_task_on_exactly_its_servers_over_start_to_finish(episode, tmp_path):
    cfg, records, _ = episode
    fig = draw_timeline(records, nodes=cfg.nodes, path=tmp_path / "timeline.png", title="fifo")
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    check_timeline(fig, records)
    assert fig.axes[0].get_yticklabels()[0].get_text() == "server 0" and len(fig.axes[0].get_yticks()) == cfg.nodes
    assert "model s" in fig.axes[-1].get_xlabel()
    # the task panel: every task's wait runs from its arrival to its start
    waits = {line.get_gid(): line.get_xdata() for line in fig.axes[1].get_lines() if line.get_gid()}
    for i, t in enumerate(records):
        x = waits[f"task{i}/wait"]
        assert math.isclose(x[0], t["arrival"]) and math.isclose(x[1], t["start"])
    assert any(t["start"] > t["arrival"] for t in records)  # some waiting to see


def test_timeline_reads_plain_task_dicts_the_same(episode):
    cfg, records, task_dicts = episode
    fig = draw_timeline(task_dicts, nodes=cfg.nodes, time_unit="wall s", tasks_panel=False)
    check_timeline(fig, records)
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "time (wall s)"
