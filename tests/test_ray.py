"""Evaluation grids and training sweeps on Ray (issue 16): a local Ray instance with 2 CPUs, started once for the
module and always shut down."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]"): the Ray tests need it')
tune = pytest.importorskip("ray.tune", reason='Ray Tune is not installed (pip install -e ".[cluster]")')

from eatsched.cli import app  # noqa: E402
from eatsched.experiments.evaluate import EvalSettings, evaluate  # noqa: E402
from eatsched.experiments.sweep import MARKER, SweepError, load_sweep, plan_runs  # noqa: E402

runner = CliRunner()
TINY = """
[params]
hidden = 16
critic_hidden = 16
d_model = 8
heads = 2
time_dim = 8
batch_size = 32
num_envs = 4
learning_starts = 64
log_every = 64
eval_every = 200
eval_episodes = 1
checkpoint_every = 10000
utd = 1.0
diffusion_steps = 4

[config]
patch_choices = [1, 2]
tasks_per_episode = 6
"""
"""tests/test_learned.py's TINY hyperparameters and 2-node cluster, as a sweep config's tables"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a running cluster
    try:
        yield ray
    finally:
        ray.shutdown()


def _timeless(obj):
    """A stored cell without what depends on the machine's speed (wall times, decision milliseconds)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if "decision_ms" not in k and k != "wall_s"}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def test_ray_grid_gives_the_process_pools_cells_and_resumes(local_ray, tmp_path):
    base = dict(grid="small", algos=("fifo", "eat"), seeds=2, jobs=2)
    pool = evaluate(EvalSettings(**base), tmp_path / "pool", warn=pytest.fail)
    on_ray = evaluate(EvalSettings(**base, ray="local"), tmp_path / "ray", warn=pytest.fail)
    assert len(pool.records) == len(on_ray.records) == 4 and len(on_ray.computed) == 4
    for cell, rec in pool.records.items():
        assert _timeless(on_ray.records[cell]) == _timeless(rec), cell.key
    for name in ("settings.json", "skipped.json", "response_bound.json", "quality.csv", "response.md",
                 "reload.md", "efficiency.csv"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "pool" / name).read_text(), name
    again = evaluate(EvalSettings(**base, ray="local"), tmp_path / "ray", warn=pytest.fail)
    assert again.computed == [] and set(again.records) == set(pool.records)  # every cell stored, none recomputed


def _write_sweep(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def test_sweep_trains_resumes_and_its_checkpoints_simulate(local_ray, tmp_path):
    out = tmp_path / "runs"
    cfg = _write_sweep(tmp_path, "tiny", f'out = "{out}"\nalgos = ["eat-da"]\nnodes = [2]\nrates = 0.05\n'
                                         f'seeds = [0, 1]\nsteps = 320\n{TINY}')
    r = runner.invoke(app, ["sweep", str(cfg)])
    assert r.exit_code == 0, r.output
    runs = [out / "eat-da-n2-s0", out / "eat-da-n2-s1"]
    for d in runs:
        assert json.loads((d / MARKER).read_text())["status"] == "finished"
        assert (d / "train_log.csv").is_file() and (d / "eval_log.csv").is_file() and (d / "tb").is_dir()
        s = runner.invoke(app, ["simulate", "--policy", "eat-da", "--nodes", "2", "--rate", "0.05", "--set",
                                "patch_choices=1,2", "--set", "tasks_per_episode=6", "--episodes", "1",
                                "--checkpoint", str(d / "policy.pt"), "--json"])
        assert s.exit_code == 0, s.output
        assert json.loads(s.stdout)["tasks_completed"] == 6
    assert (out / "summary.md").read_text().count("| trained |") == 2

    # interrupted after its first run: the second run's folder is gone; the rerun keeps the first, trains the second
    first = {p.name: p.stat().st_mtime_ns for p in runs[0].iterdir() if p.is_file()}
    shutil.rmtree(runs[1])
    assert plan_runs(load_sweep(cfg)) == {"eat-da-n2-s0": "stored", "eat-da-n2-s1": "new"}
    r = runner.invoke(app, ["sweep", str(cfg)])
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in runs[0].iterdir() if p.is_file()} == first
    assert (runs[1] / "policy.pt").is_file()
    summary = (out / "summary.md").read_text()
    assert "| eat-da-n2-s0 | stored |" in summary and "| eat-da-n2-s1 | trained |" in summary

    # an `eat train` folder that used its budget but has no marker (killed before writing it) is not redone
    (runs[0] / MARKER).unlink()
    assert plan_runs(load_sweep(cfg))["eat-da-n2-s0"] == "stored" and (runs[0] / MARKER).is_file()


@pytest.mark.parametrize("body, key", [
    ('algos = ["eat", "eat-x"]\nnodes = [4]\nrates = 0.05\n', "algos: unknown algorithm 'eat-x'"),
    ('algos = ["eat-da"]\nnodes = [4]\nrates = 0.05\n[params]\nhiden = 16\n', "params.hiden: not a hyperparameter"),
    ('algos = ["eat-da"]\nnodes = []\nrates = 0.05\n', "nodes: empty grid"),
    ('algos = ["eat-da"]\nnodes = [4]\nrates = 0.05\n[params]\nutd = []\n', "params.utd: empty grid"),
], ids=["unknown-algorithm", "unknown-hyperparameter", "empty-grid", "empty-hyperparameter-grid"])
def test_bad_sweep_config_is_one_line_naming_the_key_before_any_run(tmp_path, body, key):
    out = tmp_path / "runs"
    cfg = _write_sweep(tmp_path, "bad", f'out = "{out}"\n' + body)
    with pytest.raises(SweepError, match=key):
        load_sweep(cfg)
    r = runner.invoke(app, ["sweep", str(cfg)])
    assert r.exit_code == 2 and key in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()  # nothing started


def test_sweep_rate_range_reaches_the_runs_config(tmp_path):
    cfg = _write_sweep(tmp_path, "range", f'out = "{tmp_path / "runs"}"\nalgos = ["eat"]\nnodes = [4, 8]\n'
                                          'rates = {4 = "0.04:0.3", 8 = [0.1, "0.08:0.6"]}\n')
    sweep = load_sweep(cfg)
    runs = {r.name: r for r in sweep.runs}
    assert set(runs) == {"eat-n4", "eat-n8-r0.1", "eat-n8-r0.08-0.6"}  # the range shows where rates vary
    assert (runs["eat-n4"].eat_config().rate, runs["eat-n4"].eat_config().rate_max) == (0.04, 0.3)
    assert (runs["eat-n8-r0.08-0.6"].eat_config().rate, runs["eat-n8-r0.08-0.6"].eat_config().rate_max) == (0.08, 0.6)
    assert runs["eat-n8-r0.1"].eat_config().rate_max is None
    assert plan_runs(sweep) == dict.fromkeys(runs, "new")
    shipped = load_sweep(_write_sweep(tmp_path, "shipped-range", 'algos = ["eat"]\nnodes = [4, 8, 12]\n'
                                                                 'rates = "shipped-range"\n'))
    assert {r.nodes: (r.eat_config().rate, r.eat_config().rate_max) for r in shipped.runs} == {
        4: (0.04, 0.3), 8: (0.08, 0.6), 12: (0.12, 0.9)}


@pytest.mark.parametrize("rates, key", [
    ('"0.5:0.1"', "rates: a range"), ('"a:b"', "rates: a range"), ('"0:1"', "rates: a range"),
    ('{4 = [0.1, "0.3:0.3"]}', "rates.4: a range"),
], ids=["reversed", "not-numbers", "zero-low", "empty-range-per-size"])
def test_bad_sweep_rate_range_is_one_line_naming_the_key(tmp_path, rates, key):
    cfg = _write_sweep(tmp_path, "bad", f'out = "{tmp_path / "runs"}"\nalgos = ["eat"]\nnodes = [4]\nrates = {rates}\n')
    with pytest.raises(SweepError, match=key) as e:
        load_sweep(cfg)
    assert len(str(e.value).splitlines()) == 1, e.value


def test_ray_options_without_ray_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    r = runner.invoke(app, ["evaluate", "--grid", "small", "--algos", "fifo", "--seeds", "1", "--ray",
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and 'pip install -e ".[cluster]"' in r.output and len(r.output.strip().splitlines()) == 1
