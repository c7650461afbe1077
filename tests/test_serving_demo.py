"""Smoke test of ``eat demo`` with tiny settings (host + 2 simulated workers per policy, real HTTP)."""

import io
import json
import re

import pytest
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


def test_demo_prints_directions_units_efficiency_and_writes_the_timeline(tmp_path):
    """Off a terminal: plain progress lines, a summary line per episode, a table whose every metric says its unit
    and which direction is better, the definition of efficiency, and OUT/timeline.png."""
    r = CliRunner().invoke(app, ["demo", "--tasks", "5", "--nodes", "2", "--rate", "1.0", "--time-scale", "0.005",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert re.search(r"^eat: +[\d.]+ wall s \(\d+ model s\): submitted \d/5", out, re.M), out
    assert re.search(r"^adaptive: 5/5 tasks finished in [\d.]+ wall s \(\d+ model s\); mean response [\d.]+ model s "
                     r"\([\d.]+ wall s\)", out, re.M), out
    body = [line for line in out.splitlines() if line.startswith("│")]
    assert len(body) >= 8
    assert all(re.search(r"\((.+, )?(lower|higher) is better\)", line) for line in body), body
    assert all(re.search(r"\((count|model s|wall s|wall ms|CLIP score q\(s\)|reloads / launched task|"
                         r"quality / model s)[,)]", line) for line in body), body
    assert "efficiency = mean quality / mean response" in out
    assert "model s = wall s / 0.005" in out
    for path in (tmp_path / "timeline.png", tmp_path / "adaptive" / "timeline.png"):
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_demo_sized_episode_logs_its_first_decision_and_no_stall(tmp_path):
    """The default demo's cluster and workload (8 workers, 64 tasks at 0.5 per model s), faster clock: the host
    logs the first decision after ready, and no stall. The figure is reported, not compared with the goal."""
    from rich.console import Console

    from eatsched.serving.demo import DemoSettings, run_episode

    s = DemoSettings(time_scale=0.02, out=tmp_path)
    m = run_episode("eat", s, Console(file=io.StringIO(), width=160))
    assert m["tasks_completed"] == m["tasks"] == 64
    log = (tmp_path / "eat" / "logs" / "host.log").read_text()
    found = re.search(r"first decision after ready: ([\d.]+) wall ms to decide, ([\d.]+) wall ms with dispatch", log)
    assert found, log
    assert m["first_decision_wall_ms"] == pytest.approx(float(found.group(2)), abs=0.01)
    print(f"first decision after ready: {found.group(2)} wall ms (goal < 100); warm-up {m['warmup_wall_s']:.2f} s")
    assert "stalled" not in log and m["host_stall_warnings"] == 0
