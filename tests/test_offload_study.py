"""The DEdgeAI offloading study (``experiments.offload_study``, ``eat offload-study``) on a tiny setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from eatsched.algos.offload_learn import load_offload_learner
from eatsched.cli import app
from eatsched.experiments import offload_study
from eatsched.experiments.offload_study import CLAIMS, converge_episode, final_value, mean_ci, moving_average, run_study


def test_convergence_definition():
    assert moving_average([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    assert final_value([9, 9, 9, 9, 9, 9, 9, 9, 2, 4], 0.2) == 3.0
    curve = [10.0] * 5 + [5.0] * 15  # drops at episode 6; window 2: the average is 7.5 there, 5 from episode 7
    assert converge_episode(curve, window=2, tolerance=0.05, final_fraction=0.1) == (7, True)
    assert converge_episode([5.0] * 10, window=3) == (1, True)
    assert converge_episode([1.0] * 9 + [100.0], window=3, final_fraction=0.1) == (10, False)  # never in band
    s = mean_ci([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["ci95"][0] == pytest.approx(2.0 - 4.303 * 1.0 / np.sqrt(3), rel=1e-3)


def test_tiny_study_writes_everything_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "study"
    summary = run_study("tiny", out, seeds=2)
    for name in ("curves.png", "summary.json", "summary.md", "baselines.json", "grid/grid.md", "grid/grid.csv"):
        assert (out / name).stat().st_size > 0, name
    stored = json.loads((out / "summary.json").read_text())
    assert [c["id"] for c in stored["claims"]] == [c[0] for c in CLAIMS] + ["near-optimal"]
    assert all(c["verdict"] in ("confirmed", "refuted") for c in stored["claims"])
    for m in ("dqn-ts", "sac-ts", "d2sac-ts", "lad-ts"):
        v = stored["methods"][m]
        assert v["eval_delay_s"]["n"] == 2 and 1 <= v["episodes_to_converge"]["mean"] <= 3
        assert len(json.loads((out / "runs" / f"{m}-s1" / "result.json").read_text())["eval_delay_s"]) == 2
    assert {r["method"] for r in stored["grid"]} == {"local", "random", "opt-ts"} and len(stored["grid"]) == 12
    assert "| LAD-TS needs 60-80% fewer episodes" in (out / "summary.md").read_text()

    # a finished run is not trained again; one without result.json (killed mid-way) is
    (out / "runs" / "sac-ts-s1" / "result.json").unlink()
    trained = []
    real = offload_study.train_offload
    monkeypatch.setattr(offload_study, "train_offload", lambda m, *a, **k: trained.append(m) or real(m, *a, **k))
    again = run_study("tiny", out, seeds=2)
    assert trained == ["sac-ts"]
    assert again["methods"]["lad-ts"] == summary["methods"]["lad-ts"]
    assert again["claims"][0] == summary["claims"][0]

    # another setting in the same folder is refused
    with pytest.raises(ValueError, match="another setting"):
        run_study(offload_study.SETTINGS["tiny"].__class__(**{**offload_study.SETTINGS["tiny"].__dict__,
                                                                "episodes": 4}), out, seeds=2)


def test_greedy_evaluation_is_repeatable(tmp_path):
    run_study("tiny", tmp_path, seeds=1, methods=("lad-ts",), baselines=("opt-ts",), grid=False)
    learner = load_offload_learner(tmp_path / "runs" / "lad-ts-s0" / "agent.pt")
    memory = learner.memory.copy()
    assert learner.greedy_episode(7) == learner.greedy_episode(7)
    assert np.array_equal(learner.memory, memory)  # evaluation leaves the latent action memory alone
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["claims"][0]["verdict"] == "not measured" and summary["claims"][-1]["verdict"] in (
        "confirmed", "refuted")


@pytest.mark.parametrize(("args", "message"), [
    (["--setting", "huge"], "--setting: unknown setting 'huge'"),
    (["--methods", "lad-ts,ppo"], "--methods: unknown method(s) ppo"),
    (["--seeds", "0"], "--seeds: must be >= 1"),
])
def test_cli_bad_input_is_one_line(args, message, tmp_path):
    res = CliRunner().invoke(app, ["offload-study", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2
    text = res.output.strip()
    assert message in text and len(text.splitlines()) == 1


def test_evaluate_grid_dedgeai_is_the_study(tmp_path):
    """``eat evaluate --grid dedgeai`` runs the offload study (here stopped at its option check)."""
    res = CliRunner().invoke(app, ["evaluate", "--grid", "dedgeai", "--algos", "lad-ts,ppo", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown method(s) ppo" in res.output and len(res.output.strip().splitlines()) == 1
