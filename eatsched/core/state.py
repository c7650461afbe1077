"""Scheduler state as structured NumPy arrays, shared by the simulator and the serving host.

State lives in three record arrays with a leading batch axis B (B = 1 for one env or the host, B = n for
the batched simulator), so one compiled core (``core.kernel``) serves all of them:

``servers[b, j]`` (``SERVER``)  one row per edge server j
``tasks[b, i]``   (``TASK``)    one row per task of the episode, in arrival order
``clock[b]``      (``CLOCK``)   episode counters and the current time

Who writes what: the simulator's ``reset`` fills ``tasks`` with a workload and zeroes the rest; the
kernel's ``launch``/``advance`` are the only writers afterwards. The host writes arrivals and measured
completions itself and calls the same ``launch``.
"""

from __future__ import annotations

import numpy as np

from .config import EATConfig
from .profiles import PATCH_COUNTS

# task states
FUTURE, QUEUED, RUNNING, DONE = 0, 1, 2, 3
# episode status
ACTIVE, TERMINATED, TRUNCATED = 0, 1, 2

NO_MODEL = -1
NO_GROUP = -1

SERVER = np.dtype(
    [
        ("busy_until", "f8"),  # time the server's current task ends (idle iff busy_until <= time)
        ("speed", "f8"),  # speed factor c_j
        ("model", "i4"),  # loaded model type, NO_MODEL at start
        ("group", "i4"),  # id of the group it belongs to, NO_GROUP when ungrouped
        ("group_size", "i4"),  # size of that group, 0 when ungrouped
        ("up", "i4"),  # 1 if usable (the host marks failed workers 0; always 1 in the simulator)
    ],
    align=True,
)

# narrow integer fields keep a task row at 80 bytes with no padding (padding bytes would be left undefined):
# the batched simulator is bound by memory traffic
TASK = np.dtype(
    [
        ("arrival", "f8"),
        ("start", "f8"),
        ("finish", "f8"),
        ("init", "f8"),
        ("exec", "f8"),
        ("quality", "f8"),
        ("reward", "f8"),
        ("servers", "i8"),  # bitmask of the server set S_i
        ("order", "i4"),  # launch sequence number (several tasks may start at one instant)
        ("model", "i4"),
        ("steps", "i2"),
        ("patches", "i2"),
        ("state", "i2"),  # FUTURE / QUEUED / RUNNING / DONE
        ("reload", "i2"),
    ],
    align=True,
)

CLOCK = np.dtype(
    [
        ("time", "f8"),
        ("n_tasks", "i8"),  # tasks in this episode (rows of ``tasks`` beyond it are unused)
        ("n_arrived", "i8"),  # tasks [0, n_arrived) have arrived
        ("head", "i8"),  # every task before it has been launched (queue scans start here)
        ("first_open", "i8"),  # every task before it is done (completion scans start here)
        ("n_launched", "i8"),
        ("n_done", "i8"),
        ("n_reload", "i8"),
        ("next_group", "i8"),  # next group id to hand out
        ("status", "i8"),  # ACTIVE / TERMINATED / TRUNCATED
        ("decisions", "i8"),  # env steps taken this episode
    ],
    align=True,
)

PARAMS = np.dtype(
    [
        ("tick", "f8"),
        ("time_limit", "f8"),
        ("time_scale", "f8"),
        ("q_max", "f8"),
        ("q_min", "f8"),
        ("w_t", "f8"),
        ("w_w", "f8"),
        ("w_q", "f8"),
        ("w_p", "f8"),
        ("r_max", "f8"),
        ("w_r", "f8"),
        ("regroup_time", "f8"),  # < 0: extension off
        ("speed_max", "f8"),
        ("clock_start", "f8"),  # time of an episode's first decision (0 for a trace)
        ("s_min", "i8"),
        ("s_max", "i8"),
        ("queue_len", "i8"),
        ("event_mode", "i8"),
        ("paper_literal", "i8"),
        ("response_reward", "i8"),
        ("n_models", "i8"),
        # the authors' simulator, one switch each (0 = SPEC; see EATConfig)
        ("grid_mode", "i8"),  # mode == "grid"
        ("first_idle", "i8"),  # selector == "first-idle"
        ("steps_32u", "i8"),  # step_decoding == "32u"
        ("float32", "i8"),  # float32_durations
        ("quality_dip", "i8"),
        ("empty_slots_win", "i8"),
        ("greedy_slot_defect", "i8"),
        ("greedy_unpriced", "i8"),
    ],
    align=True,
)

N_FEATURES = 7
"""Columns of the token matrix: the kind column, then six features whose meaning depends on the row's kind. Code
names them by the constants below, never by number."""

TOKEN_KIND = 0
"""0 for a task row (and an empty task slot), 1 for a server row"""
KIND_TASK, KIND_SERVER = 0.0, 1.0

# task rows (the first queue_len rows, oldest visible task first; an empty slot is all zeros)
TASK_PRESENT = 1
"""1 for a visible task"""
TASK_WAIT = 2
"""time waited so far / time_scale (capped at time_limit / time_scale)"""
TASK_PATCHES = 3
"""patch count k / MAX_PATCHES"""
TASK_MODEL = 4
"""(model + 1) / n_models"""
TASK_CAN_START = 5
"""1 if enough servers are idle to start it now (the action mask)"""
TASK_READY = 6
"""1 if it can start now without a cold start: an idle group of exactly k servers holds its model"""

# server rows (the last N rows, one per server)
SERVER_IDLE = 1
"""1 if up and not busy"""
SERVER_BUSY_FOR = 2
"""remaining busy time / time_scale"""
SERVER_MODEL = 3
"""(loaded model + 1) / n_models (0: none)"""
SERVER_GROUP = 4
"""size of its group / N (0: ungrouped)"""
SERVER_SPEED = 5
"""speed / fastest speed"""
SERVER_UP = 6
"""1 if the server is up"""


def observation_high(cfg: EATConfig) -> np.ndarray:
    """Upper bound of every token-matrix entry (the lower bound is 0): 1, except the two time columns."""
    high = np.ones((cfg.token_rows, N_FEATURES), np.float32)
    high[: cfg.queue_len, TASK_WAIT] = cfg.time_limit / cfg.time_scale
    high[cfg.queue_len :, SERVER_BUSY_FOR] = cfg.time_limit / cfg.time_scale
    return high


def make_params(cfg: EATConfig) -> np.ndarray:
    p = np.zeros(1, PARAMS)
    r = p[0]
    for name in ("tick", "time_limit", "time_scale", "q_max", "q_min", "w_t", "w_w", "w_q", "w_p", "r_max", "w_r",
                 "s_min", "s_max", "queue_len", "n_models"):
        r[name] = getattr(cfg, name)
    r["regroup_time"] = -1.0 if cfg.regroup_time is None else cfg.regroup_time
    r["speed_max"] = max(cfg.server_speeds)
    r["event_mode"] = int(cfg.mode == "event")
    r["paper_literal"] = int(cfg.paper_literal)
    r["response_reward"] = int(cfg.reward == "response")
    r["clock_start"] = 0.0 if cfg.arrival == "trace" else cfg.clock_start  # a trace holds its own times
    r["grid_mode"] = int(cfg.mode == "grid")
    r["first_idle"] = int(cfg.selector == "first-idle")
    r["steps_32u"] = int(cfg.step_decoding == "32u")
    for name in ("quality_dip", "empty_slots_win", "greedy_slot_defect", "greedy_unpriced"):
        r[name] = int(getattr(cfg, name))
    r["float32"] = int(cfg.float32_durations)
    return p


def make_time_tables(cfg: EATConfig) -> tuple[np.ndarray, np.ndarray]:
    """step_time[k] and init_time[k] indexed by patch count (NaN where the profile has no entry)."""
    prof = cfg.time_profile
    step = np.full(max(PATCH_COUNTS) + 1, np.nan)
    init = np.full(max(PATCH_COUNTS) + 1, np.nan)
    for k in prof.patch_counts:
        step[k] = prof.step_time[k]
        init[k] = prof.init_time[k]
    return step, init


def allocate(cfg: EATConfig, batch: int = 1, max_tasks: int | None = None):
    """Zeroed (servers, tasks, clock) arrays for ``batch`` independent clusters."""
    t = max_tasks or cfg.tasks_per_episode
    servers = np.zeros((batch, cfg.nodes), SERVER)
    tasks = np.zeros((batch, t), TASK)
    clock = np.zeros(batch, CLOCK)
    return servers, tasks, clock
