"""Pin the scheduler core's pieces against SPEC section 2: quality, reward, action decoding, selector."""

import math

import numpy as np
import pytest

from eatsched.core import kernel
from eatsched.core.config import EATConfig
from eatsched.core.state import NO_GROUP, NO_MODEL, QUEUED, allocate, make_params, make_time_tables


def q_spec(s, q_max=0.27):
    return 0.0 if s < 5 else min(q_max, 0.16 * math.log(s) / math.log(6) - 0.02)


def test_quality_curve_values():
    assert kernel.quality(4, 0.27) == 0.0
    assert kernel.quality(5, 0.27) == pytest.approx(0.16 * math.log(5) / math.log(6) - 0.02)
    assert kernel.quality(6, 0.27) == pytest.approx(0.14)
    assert kernel.quality(25, 0.27) < 0.27
    assert kernel.quality(26, 0.27) == 0.27
    for s in range(0, 60):
        assert kernel.quality(s, 0.27) == pytest.approx(q_spec(s))


def test_quality_is_monotone_without_the_dip_past_30():
    qs = [kernel.quality(s, 0.27) for s in range(1, 80)]
    assert all(b >= a for a, b in zip(qs, qs[1:], strict=False))
    assert kernel.quality(31, 0.27) >= kernel.quality(30, 0.27)


def test_reward_formula():
    # r = min(r_max, w_t / (w_w Wbar + wait + init + exec)) + w_q q - w_p [q < Q_min]
    r = kernel.launch_reward(10.0, 24.0, 6.0, 5.0, 0.2, 250.0, 1.0, 10.0, 1.0, 0.0, 10.0)
    assert r == pytest.approx(250 / (5 + 10 + 24 + 6) + 2.0)
    # the time term is capped at r_max
    assert kernel.launch_reward(0, 0, 1.0, 0, 0.27, 250, 1, 10, 1, 0, 10) == pytest.approx(10 + 2.7)
    # the quality penalty applies below Q_min only
    assert kernel.launch_reward(0, 0, 100, 0, 0.1, 250, 1, 10, 3, 0.15, 10) == pytest.approx(2.5 + 1.0 - 3)
    assert kernel.launch_reward(0, 0, 100, 0, 0.2, 250, 1, 10, 3, 0.15, 10) == pytest.approx(2.5 + 2.0)
    # w_w weighs the queue's mean wait
    assert kernel.launch_reward(0, 0, 10, 40, 0, 250, 0.5, 10, 1, 0, 10) == pytest.approx(250 / 30)


@pytest.mark.parametrize("a1, expected", [(-1.0, 5), (0.0, 19), (1.0, 32), (-2.0, 5), (3.0, 32), (float("nan"), 5)])
def test_decode_steps_boundaries(a1, expected):
    # u = (a + 1) / 2; s = round(5 + u * 27); a = 0 -> 18.5 rounds half up to 19; out of range clamps
    assert kernel.decode_steps(a1, 5, 32) == expected


def test_encode_inverts_decode():
    for s in range(5, 33):
        assert kernel.decode_steps(kernel.encode_steps(s, 5, 32), 5, 32) == s


class Cluster:
    """A hand-built single cluster state for selector and decision tests."""

    def __init__(self, nodes=8, **kw):
        self.cfg = EATConfig(nodes=nodes, **kw)
        self.servers, self.tasks, self.clock = allocate(self.cfg, 1)
        s = self.servers[0]
        s["speed"] = self.cfg.server_speeds
        s["model"] = NO_MODEL
        s["group"] = NO_GROUP
        s["up"] = 1
        self.params = make_params(self.cfg)
        self.step_time, self.init_time = make_time_tables(self.cfg)

    def group(self, gid, members, model=0, busy_until=0.0):
        s = self.servers[0]
        for j in members:
            s[j]["group"], s[j]["group_size"], s[j]["model"], s[j]["busy_until"] = gid, len(members), model, busy_until

    def select(self, k, model=0, t=1.0):
        out = np.zeros(self.cfg.nodes, np.int64)
        work = np.zeros(2 * self.cfg.nodes, np.int64)
        c, reuse = kernel.select_servers(self.servers[0], t, k, model, out, work)
        return sorted(out[:c].tolist()), bool(reuse)

    def queue(self, *patches, t=10.0):
        tk, c = self.tasks[0], self.clock[0]
        for i, k in enumerate(patches):
            tk[i]["arrival"], tk[i]["patches"], tk[i]["state"], tk[i]["order"] = float(i), k, QUEUED, -1
        c["n_tasks"] = c["n_arrived"] = len(patches)
        c["time"] = t


def test_selector_reuses_an_idle_group_of_the_right_size_and_model():
    c = Cluster()
    c.group(0, [0, 1], model=0)
    c.group(1, [2, 3, 4, 5], model=0)
    assert c.select(2) == ([0, 1], True)
    assert c.select(4) == ([2, 3, 4, 5], True)


def test_selector_does_not_reuse_a_busy_group_or_another_model():
    c = Cluster()
    c.group(0, [0, 1], model=0, busy_until=5.0)
    c.group(1, [2, 3], model=1)
    servers, reuse = c.select(2, model=0, t=1.0)
    assert not reuse and set(servers) & {0, 1} == set()
    assert servers == [4, 5]  # ungrouped idle servers first: group {2, 3} (model 1) is kept intact


def test_selector_breaks_the_fewest_grouped_servers():
    c = Cluster(nodes=8)
    c.group(0, [0], model=0)  # size 1
    c.group(1, [1, 2], model=0)  # size 2
    c.group(2, [3, 4, 5, 6], model=0)  # size 4
    # one ungrouped server (7); a 4-patch task of model 1 needs 3 more: groups {0} + {1,2} de-group 3
    # servers, group {3..6} alone would de-group 4 -> take the two small groups
    servers, reuse = c.select(4, model=1)
    assert not reuse and servers == [0, 1, 2, 7]
    # a 2-patch task of model 1 needs one more than server 7: the single size-1 group
    servers, reuse = c.select(2, model=1)
    assert servers == [0, 7]


def test_selector_prefers_faster_servers_and_fastest_group():
    c = Cluster(nodes=4, speeds=(1.0, 2.0, 1.5, 2.0))
    assert c.select(1) == ([1], False)  # fastest; ties -> lowest index
    assert c.select(2) == ([1, 3], False)
    c.group(0, [0, 1], model=0)
    c.group(1, [2, 3], model=0)
    assert c.select(2) == ([2, 3], True)  # slowest member 1.5 beats 1.0


def test_choose_takes_best_scored_task_that_can_start_and_paper_literal_does_not():
    c = Cluster(nodes=4)
    c.servers[0]["busy_until"][:2] = 50.0  # two idle servers
    c.queue(4, 1, 2)
    vis = np.zeros(10, np.int64)
    a = np.full(12, -1.0, np.float32)
    a[0] = 1.0
    a[1] = 1.0
    a[2:5] = [0.9, 0.1, 0.5]  # the 4-patch task scores highest but cannot start
    i, steps = kernel.choose(c.servers[0], c.tasks[0], c.clock[0], c.params[0], a, vis)
    assert (i, steps) == (2, 32)
    lit = Cluster(nodes=4, paper_literal=True)
    lit.servers[0]["busy_until"][:2] = 50.0
    lit.queue(4, 1, 2)
    assert kernel.choose(lit.servers[0], lit.tasks[0], lit.clock[0], lit.params[0], a, vis)[0] == -1
    # execute flag below 0.5 -> no-op; empty slots never win
    a[0] = -0.01
    assert kernel.choose(c.servers[0], c.tasks[0], c.clock[0], c.params[0], a, vis)[0] == -1
    a[0] = 0.0  # u = 0.5 executes
    a[2:5] = -1.0
    a[5:] = 1.0  # only empty slots score high
    assert kernel.choose(c.servers[0], c.tasks[0], c.clock[0], c.params[0], a, vis)[0] == 1  # ties -> older
