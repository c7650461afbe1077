"""Smoke test of ``eat demo`` with tiny settings (host + 2 simulated workers per policy, real HTTP)."""

import json

from typer.testing import CliRunner

from eatsched.cli import app
from eatsched.serving.demo import load_prompts


def test_shipped_prompts_are_varied():
    prompts = load_prompts()
    assert len(prompts) >= 200 and len(set(prompts)) == len(prompts)


def test_demo_runs_both_policies_and_reports_metrics(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--tasks", "6", "--nodes", "2", "--rate", "1.0", "--time-scale", "0.005",
                                 "--baseline", "fifo", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["policy"].split()[0] for row in rows] == ["adaptive", "fifo"] or rows[0]["policy"] == "eat"
    for row in rows:
        assert row["tasks_completed"] == row["tasks"] == 6
        assert row["mean_response_s"] > 0 and 0 < row["mean_quality"] <= 0.27
    assert len(list((tmp_path / "fifo" / "images").glob("*.png"))) == 6
