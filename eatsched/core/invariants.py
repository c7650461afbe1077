"""An independent checker of a finished schedule (pure Python, no shared code with the kernel).

Used by the simulator's property tests and by anything else that produces schedules (the exact solver,
the serving host's logs). ``check_schedule`` returns a list of violations; empty means feasible.
"""

from __future__ import annotations

import math

import numpy as np

from .config import EATConfig
from .state import DONE

TOL = 1e-6


def check_schedule(tasks: np.ndarray, cfg: EATConfig, *, terminated: bool | None = None) -> list[str]:
    """Check one episode's task records (``core.state.TASK`` rows) against the problem model:

    * every launched task has exactly k_i distinct servers, all idle at its start (no server runs two
      tasks at once), and starts no earlier than it arrived;
    * launches happen in non-decreasing time (time never goes backwards);
    * reload is true exactly when the server set was not an idle group of size k_i holding the task's
      model, replaying groups from scratch (a reload dissolves the groups of its members and forms one);
    * init and exec follow the time model; response = wait + init + exec; quality = q(steps);
    * if the episode terminated, every task finished exactly once.
    """
    errors: list[str] = []
    prof = cfg.time_profile
    speeds = cfg.server_speeds
    launched = [i for i in range(len(tasks)) if tasks[i]["order"] >= 0]
    launched.sort(key=lambda i: tasks[i]["order"])
    orders = [int(tasks[i]["order"]) for i in launched]
    if orders != list(range(len(orders))):
        errors.append(f"launch order numbers are not 0..{len(orders) - 1}: {orders}")

    busy_until = [0.0] * cfg.nodes
    group_of: list[int | None] = [None] * cfg.nodes
    model_of: list[int | None] = [None] * cfg.nodes
    groups: dict[int, set[int]] = {}
    next_gid = 0
    last_start = -math.inf
    for i in launched:
        t = tasks[i]
        k, m, start = int(t["patches"]), int(t["model"]), float(t["start"])
        servers = [j for j in range(cfg.nodes) if (int(t["servers"]) >> j) & 1]
        if int(t["servers"]) >> cfg.nodes:
            errors.append(f"task {i}: server mask names servers beyond the cluster")
        if len(servers) != k:
            errors.append(f"task {i}: {len(servers)} servers for {k} patches")
        if start < last_start - TOL:
            errors.append(f"task {i}: starts at {start} before the previous launch at {last_start}")
        last_start = max(last_start, start)
        if start < float(t["arrival"]) - TOL:
            errors.append(f"task {i}: starts before it arrives")
        for j in servers:
            if busy_until[j] > start + TOL:
                errors.append(f"task {i}: server {j} busy until {busy_until[j]:.6f} at start {start:.6f}")
        # reuse iff the set is exactly one group of this model and size
        gids = {group_of[j] for j in servers}
        reuse = (len(gids) == 1 and None not in gids and groups.get(next(iter(gids))) == set(servers)
                 and all(model_of[j] == m for j in servers))
        if bool(t["reload"]) == reuse:
            errors.append(f"task {i}: reload={bool(t['reload'])} but the server set "
                          f"{'was' if reuse else 'was not'} an idle group of its model")
        all_hold = all(model_of[j] == m for j in servers)
        if not reuse:
            for g in gids:
                if g is not None:
                    for j in groups.pop(g, set()):
                        group_of[j] = None
            groups[next_gid] = set(servers)
            for j in servers:
                group_of[j] = next_gid
            next_gid += 1
        for j in servers:
            model_of[j] = m
        # timings
        if reuse:
            expect_init = 0.0
        elif cfg.regroup_time is not None and all_hold:
            expect_init = cfg.regroup_time
        else:
            expect_init = prof.init_time[k]
        slowest = min(speeds[j] for j in servers) if servers else 1.0
        expect_exec = int(t["steps"]) * prof.step_time[k] / slowest
        if abs(float(t["init"]) - expect_init) > TOL:
            errors.append(f"task {i}: init {float(t['init'])} != {expect_init}")
        if abs(float(t["exec"]) - expect_exec) > TOL * max(1.0, expect_exec):
            errors.append(f"task {i}: exec {float(t['exec'])} != {expect_exec}")
        wait = start - float(t["arrival"])
        resp = float(t["finish"]) - float(t["arrival"])
        if abs(resp - (wait + float(t["init"]) + float(t["exec"]))) > TOL * max(1.0, resp):
            errors.append(f"task {i}: response {resp} != wait + init + exec")
        if not (cfg.s_min <= int(t["steps"]) <= cfg.s_max):
            errors.append(f"task {i}: steps {int(t['steps'])} outside [{cfg.s_min}, {cfg.s_max}]")
        q = 0.0 if t["steps"] < 5 else min(cfg.q_max, 0.16 * math.log(t["steps"]) / math.log(6) - 0.02)
        if abs(float(t["quality"]) - q) > TOL:
            errors.append(f"task {i}: quality {float(t['quality'])} != q({int(t['steps'])}) = {q}")
        for j in servers:
            busy_until[j] = float(t["finish"])

    if terminated:
        not_done = [i for i in range(len(tasks)) if tasks[i]["state"] != DONE]
        if not_done:
            errors.append(f"episode terminated with unfinished tasks {not_done}")
        if len(launched) != len(tasks):
            errors.append("episode terminated but not every task was launched exactly once")
    return errors
