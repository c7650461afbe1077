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
