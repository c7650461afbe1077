"""``patient``: adaptive that waits for a warm group instead of a cold start, on hand-made states and in episodes."""

import numpy as np
import pytest

from eatsched.algos import registry
from eatsched.algos.heuristics import AdaptivePolicy, PatientPolicy, with_steps
from eatsched.core.config import EATConfig
from eatsched.core.kernel import MAX_PATCHES, decode_steps
from eatsched.core.state import (
    SERVER_BUSY_FOR,
    SERVER_GROUP,
    SERVER_IDLE,
    SERVER_MODEL,
    SERVER_UP,
    TASK_CAN_START,
    TASK_MODEL,
    TASK_PATCHES,
    TASK_PRESENT,
    TASK_READY,
    TOKEN_KIND,
)
from eatsched.sim.rollout import simulate

CFG = EATConfig(nodes=4, queue_len=4)


def state(tasks, servers):
    """Token matrix and mask from tasks [(k, ready)] (all can start) and servers [(idle, busy_for_s, group_size)]."""
    tok = np.zeros((CFG.token_rows, 7), np.float32)
    for q, (k, ready) in enumerate(tasks):
        tok[q, [TASK_PRESENT, TASK_CAN_START]] = 1.0
        tok[q, TASK_PATCHES] = k / MAX_PATCHES
        tok[q, TASK_MODEL] = 1.0
        tok[q, TASK_READY] = float(ready)
    for j, (idle, busy_for, size) in enumerate(servers):
        row = tok[CFG.queue_len + j]
        row[TOKEN_KIND] = 1.0
        row[[SERVER_IDLE, SERVER_UP]] = float(idle), 1.0
        row[SERVER_BUSY_FOR] = busy_for / CFG.time_scale
        row[SERVER_GROUP] = size / CFG.nodes
        row[SERVER_MODEL] = 1.0 if size else 0.0
    mask = np.zeros(CFG.queue_len, bool)
    mask[: len(tasks)] = True
    return tok, {"action_mask": mask}


def decision(action):
    """(None for a no-op, else (slot, steps))."""
    if action[0] < 0:
        return None
    return int(np.argmax(action[2:])), decode_steps(action[1], CFG.s_min, CFG.s_max)


def test_a_task_that_starts_warm_goes_first_as_in_adaptive():
    obs, info = state([(1, False), (2, True)], [(True, 0, 2), (True, 0, 2), (True, 0, 0), (False, 5, 1)])
    assert decision(PatientPolicy(CFG).act(obs, info)) == decision(AdaptivePolicy(CFG).act(obs, info)) == (1, 16)


def test_waits_for_a_group_of_its_size_that_frees_soon():
    servers = [(True, 0, 0), (True, 0, 0), (False, 10, 2), (False, 10, 2)]
    obs, info = state([(2, False)], servers)
    assert decision(PatientPolicy(CFG).act(obs, info)) is None
    assert decision(AdaptivePolicy(CFG).act(obs, info)) == (0, 16)  # adaptive pays the cold start now


def test_starts_cold_when_the_group_is_far_off_or_of_another_size():
    far = [(True, 0, 0), (True, 0, 0), (False, 40, 2), (False, 40, 2)]
    assert decision(PatientPolicy(CFG).act(*state([(2, False)], far))) == (0, 16)
    other_size = [(True, 0, 0), (True, 0, 0), (False, 10, 1), (False, 10, 1)]
    assert decision(PatientPolicy(CFG).act(*state([(2, False)], other_size))) == (0, 16)
    assert decision(PatientPolicy(CFG, wait_s=50).act(*state([(2, False)], far))) is None


def test_a_younger_task_with_nothing_to_wait_for_starts_meanwhile():
    servers = [(True, 0, 0), (True, 0, 0), (False, 10, 2), (False, 10, 2)]
    obs, info = state([(2, False), (1, False)], servers)
    assert decision(PatientPolicy(CFG).act(obs, info)) == (1, 16)


def test_in_episodes_it_reloads_less_than_adaptive_and_finishes_every_task():
    cfg = EATConfig(nodes=8, rate=0.5)
    reloads = {}
    for name in ("adaptive", "patient"):
        res = simulate(registry.make_policy(name, cfg), cfg, 5, seed=2_000_000)
        assert all(m["completed_fraction"] == 1.0 for m in res.episodes)  # waiting never strands a task
        recs = np.concatenate(res.task_records)
        reloads[name] = int(recs["reload"].sum())
    assert reloads["patient"] < reloads["adaptive"]


def test_options_are_checked():
    with pytest.raises(ValueError, match="wait_s"):
        PatientPolicy(CFG, wait_s=-1)
    assert with_steps("patient", CFG, 20).high == 20
