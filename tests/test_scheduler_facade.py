"""The host's scheduler facade over the compiled core, the online time predictor and the task store,
driven by hand-written worker outcomes (no HTTP)."""

import numpy as np
import pytest

from eatsched.algos import make_policy
from eatsched.core.config import EATConfig
from eatsched.core.predictor import TimePredictor
from eatsched.core.profiles import get_profile
from eatsched.core.scheduler import ClusterScheduler
from eatsched.serving.store import TaskStore


def make(nodes=4, policy="fifo", workers=None):
    cfg = EATConfig(nodes=nodes, patch_choices=tuple(k for k in (1, 2, 4) if k <= nodes))
    s = ClusterScheduler(cfg, make_policy(policy, cfg))
    for j in range(nodes if workers is None else workers):
        s.add_server(f"w{j}")
    return s


def test_launches_oldest_first_until_nothing_fits_and_prices_with_the_profile():
    s = make()
    s.enqueue("a", 2, 0, 0.0)
    s.enqueue("b", 4, 0, 1.0)
    s.enqueue("c", 2, 0, 2.0)
    got = s.decide(5.0)
    # fifo takes the oldest task that can start: a (2 servers), then c (the 2 left); b needs 4
    assert [x.task_id for x in got] == ["a", "c"]
    assert not set(got[0].servers) & set(got[1].servers)
    prof = get_profile("reference")
    assert got[0].predicted_init == pytest.approx(prof.init_time[2]) and not got[0].reuse
    assert got[0].predicted_exec == pytest.approx(got[0].steps * prof.step_time[2])
    assert s.queued_ids() == ["b"]
    assert s.decide(5.5) == []  # every server still held by a running task


def test_finished_group_is_reused_and_taking_part_of_it_dissolves_it():
    s = make()
    s.enqueue("a", 2, 0, 0.0)
    (a,) = s.decide(0.0)
    s.finish("a", 100.0)  # workers reported long after the prediction
    s.enqueue("b", 2, 0, 100.0)
    (b,) = s.decide(100.0)
    assert b.reuse and b.servers == a.servers and b.predicted_init == 0.0
    s.finish("b", 120.0)
    s.enqueue("c", 4, 0, 120.0)  # needs every server: breaks the group
    (c,) = s.decide(120.0)
    assert not c.reuse and len(c.servers) == 4
    groups = set(s.servers[0]["group"])
    assert len(groups) == 1 and s.servers[0]["group_size"][0] == 4


def test_servers_stay_busy_past_the_prediction_until_reported():
    s = make(nodes=2)
    s.enqueue("a", 2, 0, 0.0)
    (a,) = s.decide(0.0)
    s.enqueue("b", 1, 0, 1.0)
    assert s.decide(a.predicted_init + a.predicted_exec + 50.0) == []  # overdue, but not reported yet
    s.finish("a", 300.0)
    assert [x.task_id for x in s.decide(300.0)] == ["b"]


def test_server_down_dissolves_group_and_abort_requeues_in_arrival_order():
    s = make()
    s.enqueue("a", 2, 0, 0.0)
    s.enqueue("late", 1, 0, 5.0)
    (a, late) = s.decide(10.0)
    j = a.servers[0]
    assert s.server_down(j) == ["a"]
    assert s.servers[0]["group"][a.servers[1]] == -1  # the survivor's group is gone
    s.enqueue("new", 1, 0, 20.0)
    s.abort("a", 20.0)
    assert s.queued_ids() == ["a", "new"]  # a keeps its place by arrival time
    got = s.decide(20.0)
    assert all(j not in x.servers for x in got)
    assert s.server_rows(20.0)[j]["up"] is False


def test_held_server_is_not_used_and_rejoin_gets_the_same_slot():
    s = make(nodes=2)
    s.hold(0, True, 0.0)
    s.enqueue("a", 1, 0, 0.0)
    (a,) = s.decide(0.0)
    assert a.servers == (1,)
    s.hold(0, False, 1.0)
    assert s.add_server("w0") == 0
    with pytest.raises(ValueError, match="full"):
        s.add_server("w-extra")


def test_greedy_policy_prices_on_the_facade_state():
    s = make(policy="greedy")
    for i in range(3):
        s.enqueue(f"t{i}", 1, 0, float(i))
    got = s.decide(3.0)
    assert len(got) == 3 and all(5 <= x.steps <= 32 for x in got)


def test_observation_matches_the_simulator_layout():
    s = make()
    s.enqueue("a", 2, 0, 0.0)
    obs, info = s.observe(10.0)
    assert obs.shape == (s.config.token_rows, 7)
    assert info["action_mask"].tolist()[:2] == [True, False]
    assert obs[0, 2] == pytest.approx(10.0 / s.config.time_scale)  # waiting time, normalized


def test_predictor_starts_at_the_profile_and_learns_measured_times():
    prof = get_profile("reference")
    p = TimePredictor(prof, prior_weight=3)
    assert p.step_time(0, 2) == pytest.approx(prof.step_time[2])
    assert p.init_time(0, 2) == pytest.approx(prof.init_time[2])
    rng = np.random.default_rng(0)
    for _ in range(200):  # the real cluster is twice as slow and loads in 10 s
        steps = int(rng.integers(5, 33))
        p.observe(model=0, k=2, steps=steps, speed=1.0, exec_s=steps * 0.3125 * rng.normal(1, 0.02), init_s=10.0)
    assert p.step_time(0, 2) == pytest.approx(0.3125, rel=0.02)
    assert p.init_time(0, 2) == pytest.approx(10.0, rel=0.1)
    step, init = np.zeros(9), np.zeros(9)
    p.fill_tables(step, init)
    assert step[2] == pytest.approx(p.step_time(0, 2)) and step[1] == pytest.approx(prof.step_time[1])
    assert np.isnan(step[3])
    # a faster server class is fitted on its own
    p.observe(model=0, k=2, steps=20, speed=2.0, exec_s=1.0, init_s=None, server_class="fast")
    assert p.runs(0, 2, "fast") == 1 and p.runs(0, 2) == 200


def test_store_finishes_once_and_recovers_running_tasks(tmp_path):
    st = TaskStore(tmp_path)
    st.add("t1", prompt="p", negative_prompt=None, patches=1, model="m", seed=1, width=64, height=64, client=None)
    st.add("t2", prompt="q", negative_prompt=None, patches=2, model="m", seed=2, width=64, height=64, client=None)
    a1 = st.start("t1", steps=10, servers=["w0"], reload=True, predicted_init_s=1, predicted_exec_s=2, quality_est=0.2)
    assert a1 == 1
    assert st.start("t1", steps=10, servers=["w0"], reload=True, predicted_init_s=1, predicted_exec_s=2,
                    quality_est=0.2) == 0  # not queued any more
    assert not st.finish("t1", 7, init_s=1, exec_s=2, image_png=None, clip_score=None)  # stale attempt
    assert st.finish("t1", a1, init_s=1, exec_s=2, image_png=b"png", clip_score=None)
    assert not st.finish("t1", a1, init_s=1, exec_s=2, image_png=b"png", clip_score=None)  # duplicate
    st.start("t2", steps=10, servers=["w0", "w1"], reload=True, predicted_init_s=1, predicted_exec_s=2,
             quality_est=0.2)
    st.close()
    st = TaskStore(tmp_path)  # "restart"
    assert [r["id"] for r in st.recover()] == ["t2"]
    assert [x["state"] for x in st.transitions("t2")] == ["queued", "running", "queued"]
    assert [x["state"] for x in st.transitions("t1")] == ["queued", "running", "finished"]
    assert st.counts() == {"queued": 1, "running": 0, "finished": 1, "cancelled": 0, "failed": 0}
    assert (tmp_path / "images" / "t1.png").read_bytes() == b"png"
