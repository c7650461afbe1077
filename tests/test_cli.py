import csv
import json

from typer.testing import CliRunner

from eatsched.cli import app
from eatsched.core.metrics import TASK_COLUMNS

runner = CliRunner()
KEYS = {"policy", "nodes", "rate", "episodes", "tasks", "tasks_completed", "mean_response_s", "p95_response_s",
        "mean_quality", "reload_rate", "efficiency", "mean_decision_ms"}


def test_simulate_json_and_task_csv(tmp_path):
    r = runner.invoke(app, ["simulate", "--policy", "greedy", "--nodes", "4", "--rate", "0.05", "--episodes", "3",
                            "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert KEYS <= set(d)
    assert d["policy"] == "greedy" and d["episodes"] == 3 and d["tasks"] == 96
    rows = list(csv.DictReader((tmp_path / "tasks.csv").open()))
    assert tuple(rows[0].keys()) == TASK_COLUMNS
    assert len(rows) == 96
    resp = [float(x["response_s"]) for x in rows]
    assert abs(sum(resp) / len(resp) - d["mean_response_s"]) < 1e-6
    for x in rows:
        assert len(x["servers"].split()) == int(x["patches"])
        assert abs(float(x["response_s"]) - float(x["wait_s"]) - float(x["init_s"]) - float(x["exec_s"])) < 1e-6


def test_simulate_table_output():
    r = runner.invoke(app, ["simulate", "--policy", "fifo", "--nodes", "4", "--rate", "0.05", "--episodes", "1"])
    assert r.exit_code == 0, r.output
    assert "mean_response_s" in r.stdout and "efficiency" in r.stdout


def test_simulate_bad_input_is_a_clear_error():
    r = runner.invoke(app, ["simulate", "--rate", "-1", "--episodes", "1"])
    assert r.exit_code == 2 and "rate" in r.output
    r = runner.invoke(app, ["simulate", "--policy", "nope", "--episodes", "1"])
    assert r.exit_code == 2 and "unknown policy" in r.output
    r = runner.invoke(app, ["simulate", "--nodes", "2", "--episodes", "1"])
    assert r.exit_code == 2 and "patch_choices" in r.output
    r = runner.invoke(app, ["simulate", "--profile", "nope", "--episodes", "1"])
    assert r.exit_code == 2 and "profile" in r.output


def test_bench_env_json():
    r = runner.invoke(app, ["bench", "env", "--seconds", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    envs = [x["env"] for x in d["results"]]
    assert envs == ["single", "batched-256", "batched-1024"]
    assert all(x["steps_per_s"] > 0 for x in d["results"])


def test_profiles_lists_builtins():
    r = runner.invoke(app, ["profiles"])
    assert r.exit_code == 0 and "paper-4090" in r.stdout and "h100-measured" in r.stdout


def test_simulate_set_changes_the_model():
    base = ["simulate", "--policy", "fifo", "--nodes", "4", "--rate", "0.05", "--episodes", "2", "--json"]
    capped = json.loads(runner.invoke(app, base).stdout)
    r = runner.invoke(app, [*base, "--set", "r_max=1e9"])
    assert r.exit_code == 0, r.output
    uncapped = json.loads(r.stdout)
    # same schedule (fifo ignores the reward), but launches faster than 25 s now earn more than the cap
    assert uncapped["mean_response_s"] == capped["mean_response_s"]
    assert uncapped["mean_reward"] > capped["mean_reward"]
    # a tuple field makes a 2-node cluster valid (the default patch choices need 4 servers)
    r = runner.invoke(app, ["simulate", "--nodes", "2", "--episodes", "1", "--set", "patch_choices=1,2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["tasks_completed"] == 32
    for bad, msg in (("nodes=4", "own option: --nodes"), ("r_max=abc", "cannot read"), ("foo=1", "not a configuration"),
                     ("q_min=-1", "q_min"), ("r_max", "KEY=VALUE")):
        r = runner.invoke(app, ["simulate", "--episodes", "1", "--set", bad])
        assert r.exit_code == 2 and msg in r.output, (bad, r.output)
