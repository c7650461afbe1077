"""Issue 17, outside the serving system: what a new user meets first on the command line.

Bad input is one line naming the option, exit code 2; every metrics table says its units and which direction is
better; trace mode says what it replayed; ``eat simulate --out`` draws the schedule; ``eat train`` off a terminal
prints one plain line per evaluation.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eatsched.algos.training import EvalLines, eval_line
from eatsched.cli import app
from eatsched.core.metrics import EFFICIENCY_DEFINITION, METRIC_INFO

runner = CliRunner()
DIRECTION = re.compile(r"(lower|higher) is better")


def one_line_error(r) -> str:
    """The result is exit code 2 with exactly one non-empty line of output (stdout and stderr together)."""
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ")
    return lines[0]


# --- item 6: bad input ----------------------------------------------------------------------------------------
def test_trace_without_the_needed_columns_names_them(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,k\n1,2\n")
    msg = one_line_error(runner.invoke(app, ["simulate", "--arrival", "trace", "--trace", str(bad), "--episodes", "1"]))
    assert "--trace" in msg and "arrival, patches" in msg and "it has: time, k" in msg
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\xff\xfe\x01garbage")
    msg = one_line_error(runner.invoke(app, ["simulate", "--arrival", "trace", "--trace", str(binary)]))
    assert "--trace" in msg and "not a CSV" in msg
    short = tmp_path / "short.csv"
    short.write_text("arrival,patches\n1\n")  # a row with a missing value
    msg = one_line_error(runner.invoke(app, ["simulate", "--arrival", "trace", "--trace", str(short)]))
    assert "--trace" in msg and "line 2" in msg


def test_trace_arrival_without_trace_names_the_option_not_the_field(tmp_path):
    msg = one_line_error(runner.invoke(app, ["simulate", "--arrival", "trace", "--episodes", "1"]))
    assert "--trace" in msg and "--arrival trace" in msg and "trace_path" not in msg
    good = tmp_path / "t.csv"
    good.write_text("arrival,patches\n0,1\n")
    msg = one_line_error(runner.invoke(app, ["simulate", "--trace", str(good), "--episodes", "1"]))
    assert "--arrival trace" in msg


@pytest.mark.parametrize("policy,suffix", [("eat", "pt"), ("ppo", "zip"), ("genetic", "npz")])
def test_garbage_checkpoint_says_only_what_it_is_not(tmp_path, policy, suffix):
    junk = tmp_path / f"garbage.{suffix}"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    msg = one_line_error(runner.invoke(app, ["simulate", "--policy", policy, "--checkpoint", str(junk),
                                             "--episodes", "1"]))
    assert "garbage" in msg and "checkpoint" in msg and " not a" in msg
    assert "weights_only" not in msg and "allow_pickle" not in msg and "pickle" not in msg.lower()


def test_pickled_object_npz_and_pt_are_refused_without_advice_to_unpickle(tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, config=np.array([{"x": 1}], dtype=object))
    msg = one_line_error(runner.invoke(app, ["simulate", "--policy", "harmony", "--checkpoint", str(obj)]))
    assert "not a harmony checkpoint of this project" in msg and "allow_pickle" not in msg
    pt = tmp_path / "obj.pt"
    torch.save({"some": "dict"}, pt)
    msg = one_line_error(runner.invoke(app, ["simulate", "--policy", "eat", "--checkpoint", str(pt)]))
    assert "not an eatsched SAC-family checkpoint" in msg and "weights_only" not in msg


def test_optimal_tasks_out_of_range_names_the_option_and_range():
    msg = one_line_error(runner.invoke(app, ["optimal", "--tasks", "50"]))
    assert "--tasks" in msg and "1..16" in msg and "response_lower_bound" not in msg
    one_line_error(runner.invoke(app, ["optimal", "--tasks", "0"]))


@pytest.mark.parametrize("args,option", [(["--grid", "huge"], "--grid"), (["--algos", "fifo,nope"], "--algos"),
                                         (["--seeds", "0"], "--seeds"), (["--jobs", "0"], "--jobs")])
def test_evaluate_bad_option_is_the_error_alone(tmp_path, args, option):
    out = tmp_path / "ev"
    msg = one_line_error(runner.invoke(app, ["evaluate", *args, "--out", str(out)]))
    assert msg.startswith(f"error: {option}:")
    assert not out.exists()  # nothing started


# --- item 3: units and directions -------------------------------------------------------------------------------
def table_rows(text: str) -> list[list[str]]:
    """Body rows of the Rich tables in ``text`` (lines between the header rule and the bottom rule)."""
    rows, body = [], False
    for line in text.splitlines():
        if line.startswith("┡"):
            body = True
        elif line.startswith("└"):
            body = False
        elif body and line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
    return rows


def test_simulate_table_says_unit_and_direction_of_every_metric():
    r = runner.invoke(app, ["simulate", "--policy", "fifo", "--nodes", "4", "--rate", "0.05", "--episodes", "2"])
    assert r.exit_code == 0, r.output
    rows = table_rows(r.stdout)
    assert len(rows) >= 8
    for label, value, field in rows:
        assert DIRECTION.search(label), label
        assert field in METRIC_INFO and value
    fields = [row[2] for row in rows]
    assert "mean_response_s" in fields and "efficiency" in fields
    assert any("(model s, lower is better)" in row[0] for row in rows)
    assert EFFICIENCY_DEFINITION in " ".join(r.stdout.split())
    assert "Poisson arrivals 0.05 tasks/s" in r.stdout


def test_evaluate_tables_say_unit_and_direction(tmp_path):
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", "--grid", "small", "--algos", "fifo,adaptive", "--seeds", "1", "--jobs", "1",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    titles = [line for line in r.stdout.splitlines() if line.startswith("### ")]
    assert len(titles) == 5 and all(DIRECTION.search(t) for t in titles), titles
    assert any("model s" in t for t in titles) and any("wall ms" in t for t in titles)
    assert EFFICIENCY_DEFINITION in r.stdout
    for md in out.glob("*.md"):
        text = md.read_text()
        assert all(DIRECTION.search(line) for line in text.splitlines() if line.startswith("### ")), md
    assert "efficiency = mean quality / mean response" in (out / "efficiency.md").read_text()


def test_optimal_table_has_no_nan_and_explains_its_columns():
    r = runner.invoke(app, ["optimal", "--tasks", "3", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "nan" not in r.stdout.lower()
    text = " ".join(r.stdout.split())
    assert "vs min response %: how far" in text and "-: does not apply" in text
    rows = table_rows(r.stdout)
    assert rows[0][0] == "optimum" and rows[0][-1] == "-"
    header = r.stdout.split("┡")[0]  # the header cells may wrap between words
    assert header.count("better)") == 5 and "model s," in header


# --- item 8: trace mode -------------------------------------------------------------------------------------------
def test_trace_mode_says_the_trace_its_size_and_the_replays(tmp_path):
    trace = tmp_path / "four.csv"
    trace.write_text("arrival,patches,prompt\n0,2,a cat\n5,4,a dog\n7,1,x\n30,2,y\n")
    args = ["simulate", "--policy", "fifo", "--nodes", "4", "--arrival", "trace", "--trace", str(trace),
            "--episodes", "3"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    head = " ".join(r.stdout.split())
    assert "four.csv (4 tasks) replayed in each of 3 episodes" in head
    assert "tasks/s" not in head  # the rate does not apply to a trace
    d = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert (d["trace_tasks"], d["trace_replays"], d["tasks"]) == (4, 3, 12)
    r = runner.invoke(app, [*args[:-1], "1"])
    assert "replayed once" in " ".join(r.stdout.split())


# --- item 4: the schedule picture from the command line ------------------------------------------------------------
def test_simulate_out_writes_the_timeline_of_the_first_episode(tmp_path):
    r = runner.invoke(app, ["simulate", "--policy", "fifo", "--nodes", "4", "--rate", "0.05", "--episodes", "2",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    png = tmp_path / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "timeline.png" in r.stdout


# --- item 8: training off a terminal -------------------------------------------------------------------------------
def test_eval_line_is_one_line_with_units_and_directions():
    line = eval_line("eat", 12_000, {"step": 12_000, "mean_reward": 301.5, "mean_quality": 0.25,
                                     "mean_response_s": 20.0, "efficiency": 0.0125}, 3456.7)
    assert "\n" not in line
    assert line.startswith("eat eval at 12,000 env steps; 3,457 env steps/s: ")
    assert "mean reward (per episode, higher is better) 301.5" in line
    assert "efficiency (quality / model s, higher is better) 0.0125" in line
    assert "mean response (model s, lower is better) 20" in line


def test_eval_lines_print_only_without_a_progress_bar(capsys):
    row = {"mean_reward": 1.0, "mean_quality": 0.2, "mean_response_s": 10.0, "efficiency": 0.02}
    EvalLines("ppo", enabled=False)(100, row)
    assert capsys.readouterr().err == ""
    lines = EvalLines("ppo", enabled=True, start_step=0)
    lines(100, row)
    lines(300, row)
    err = capsys.readouterr().err.splitlines()
    assert [e.split(";")[0] for e in err] == ["ppo eval at 100 env steps", "ppo eval at 300 env steps"]
    assert all("env steps/s" in e for e in err)


def test_train_off_a_terminal_prints_a_line_per_evaluation(tmp_path):
    r = runner.invoke(app, ["train", "--algo", "eat-da", "--nodes", "4", "--rate", "0.05", "--steps", "64",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if " eval at " in line]
    assert lines and lines[-1].startswith("eat-da eval at 64 env steps; ")
    assert "mean reward (per episode, higher is better)" in lines[-1]
