"""The offline optimum at realistic sizes: a CP-SAT model (OR-Tools) of the problem ``optimal``'s branch and bound
solves (``docs/optimal.md`` explains the model).

The instance, the feasibility rules and the objectives are the branch and bound's: every task gets a start
``t_i >= a_i``, a set of ``k_i`` servers that run nothing else meanwhile and a number of steps in [s_min, s_max]; it
runs without init iff its set is exactly the set of the task that ran last on each of those servers, with the same
model (an intact group). Objectives: ``reward`` maximizes R0 (the simulator's reward without its queue term Wbar),
``response`` minimizes the mean response.

The model, on integer time (``TIME_UNITS`` per second) and integer reward (``REWARD_UNITS`` per unit):

* ``x[i, j]``: task i runs on server j, ``sum_j x[i, j] = k_i``; ``s_i``: its steps; ``exec_i = s_i * e(k_i, v)``
  where v is the speed of its slowest server (one Boolean per speed class when speeds differ);
* per server j, a circuit (``AddCircuit``) through the tasks on it from a depot: arc ``p -> i`` means i runs next
  after p on j, and forces ``t_i >= t_p + init_p + exec_p`` (this is the no-overlap constraint, and it names each
  task's predecessor on every server);
* ``reuse_i`` may be true only if some task p of the same size and model precedes i directly on every server of i
  (then the two sets are equal: same size, and i's set is inside p's); ``init_i = init(k_i) (1 - reuse_i)``;
* R0's time term ``min(r_max, w_t / R_i)`` with ``R_i = t_i + init_i + exec_i - a_i`` through an integer division,
  the quality term through a table of ``s_i``.

Every rounding goes the relaxing way -- arrivals rounded down to the time unit, durations down, the time term and
the quality term up -- so the objective bound CP-SAT proves is a valid bound on the exact optimum. The schedule it
returns is then replayed exactly (the same server sets, per-server order and steps, each task started as early as
its arrival and servers allow, reuse recomputed from the sequences), checked by ``core.invariants.check_schedule``,
and scored exactly; the gap is the distance between that exact value and the proven bound. A result is labelled
optimal only when the gap is below ``OPTIMAL_GAP``; otherwise it is the best schedule found, with bound and gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..core import kernel
from ..core.config import EATConfig
from ..core.invariants import check_schedule
from ..core.state import DONE, TASK
from ..core.workload import Workload
from .schedules import Solution, mean_response, reward_r0

TIME_UNITS = 100_000
"""Model time units per second (10 us): the reference profile's step times (0.315, 0.15625, 0.14, 0.1 s) and init
times are whole numbers of them, so on servers of speed 1 only the arrivals are rounded."""
REWARD_UNITS = 1_000_000
"""Objective units per unit of reward."""
OPTIMAL_GAP = 1e-5
"""Relative gap between the exact value of the schedule found and the proven bound under which it is called optimal
(the discretization alone leaves a few 1e-7; docs/optimal.md)."""


def check_model_config(cfg: EATConfig) -> None:
    """The optimum is of SPEC's problem model: refuse settings the model does not describe."""
    if cfg.regroup_time is not None:
        raise ValueError("the exact solvers do not model the regroup_time extension")
    spec = EATConfig()
    for name in ("step_decoding", "float32_durations", "quality_dip", "mode"):
        if name == "mode" and cfg.mode != "grid":
            continue
        if getattr(cfg, name) != getattr(spec, name):
            raise ValueError(f"the exact solvers model SPEC's problem; {name}={getattr(cfg, name)!r} (the authors' "
                             f"setting) is not modelled")


def _saturation(cfg: EATConfig) -> int:
    """Fewest steps at which SPEC's q(s) is at its maximum over [s_min, s_max] (with the penalty)."""
    best = max(kernel.quality(s, cfg.q_max) for s in range(cfg.s_min, cfg.s_max + 1))
    return next(s for s in range(cfg.s_min, cfg.s_max + 1) if kernel.quality(s, cfg.q_max) >= best)


def _term_caps(cfg: EATConfig, k: int, speed: float, s_hi: int, horizon: int) -> list[tuple[int, int]]:
    """(G, cap) in model units: for wait + init >= G seconds (G on a grid of 1 s to 2 min, then 10 s), no step
    count gives a task of k patches on servers of ``speed`` more than ``cap`` (rounded up)."""
    U, Z = TIME_UNITS, REWARD_UNITS
    e = cfg.time_profile.step_time[k] / speed
    steps = np.arange(cfg.s_min, s_hi + 1)
    q = np.array([kernel.quality(int(x), cfg.q_max) for x in steps])
    qterm = cfg.w_q * q - cfg.w_p * (q < cfg.q_min)
    out = []
    g = 1.0
    while g * U < horizon:
        best = float(np.max(np.minimum(cfg.r_max, cfg.w_t / (g - 1e-4 + steps * e)) + qterm))
        out.append((int(math.floor(g * U)), math.ceil(best * Z + 1e-6)))
        g += 1.0 if g < 120 else 10.0
    return out


def _quality_table(cfg: EATConfig, objective: str) -> list[int]:
    """Scaled quality term per step count s_min..s_max, rounded up (0 for the response objective)."""
    if objective == "response":
        return [0] * (cfg.s_max - cfg.s_min + 1)
    out = []
    for s in range(cfg.s_min, cfg.s_max + 1):
        q = kernel.quality(s, cfg.q_max)
        out.append(math.ceil(REWARD_UNITS * (cfg.w_q * q - (cfg.w_p if q < cfg.q_min else 0.0)) - 1e-9))
    return out


def solve_cpsat(cfg: EATConfig, w: Workload, objective: str = "reward", *, time_limit: float = 60.0,
                workers: int = 2, incumbent: np.ndarray | None = None, seed: int = 0,
                other_bound: Callable[[], float] | None = None, log: bool = False) -> Solution:
    """Solve the instance ``w`` with CP-SAT for ``objective`` ("reward": max R0; "response": min mean response).

    ``incumbent``: TASK records of a known schedule (e.g. the best scheduler's) given to CP-SAT as a hint, and
    returned if CP-SAT finds nothing within ``time_limit`` seconds. ``workers``: CP-SAT search threads. The result's
    ``optimal`` is True only if the exact value is within ``OPTIMAL_GAP`` of a proven bound; ``upper_bound`` is that
    bound (for "response": a lower bound on the mean response). When CP-SAT does not prove optimality and
    ``other_bound`` is given, it is called for another proven bound in the same units (``optimal`` passes its
    ``block_bound``) and the better of the two is used."""
    from ortools.sat.python import cp_model  # noqa: PLC0415 - optional dependency (the `exact` extra)

    if objective not in ("reward", "response"):
        raise ValueError(f"objective must be 'reward' or 'response', got {objective!r}")
    check_model_config(cfg)
    t0 = time.perf_counter()
    n, N, U, Z = len(w), cfg.nodes, TIME_UNITS, REWARD_UNITS
    a = np.asarray(w.arrival, np.float64)
    ks = [int(x) for x in w.patches]
    ms = [int(x) for x in w.models]
    prof = cfg.time_profile
    speeds = [float(c) for c in cfg.server_speeds]
    classes = sorted(set(speeds))
    A = [math.floor(x * U) for x in a]
    init_u = {k: math.floor(prof.init_time[k] * U + 1e-6) for k in set(ks)}
    step_u = {(k, v): math.floor(prof.step_time[k] / v * U + 1e-6) for k in set(ks) for v in classes}
    longest = [init_u[k] + cfg.s_max * step_u[(k, classes[0])] for k in ks]
    horizon = max(A) + sum(longest) + 1

    md = cp_model.CpModel()
    x = [[md.new_bool_var(f"x{i}_{j}") for j in range(N)] for i in range(n)]
    # more steps than where q(s) saturates only lengthen a task (its quality term is flat), and for the response
    # objective the fewest steps are best: neither changes the optimum
    s_hi = cfg.s_min if objective == "response" else _saturation(cfg)
    s = [md.new_int_var(cfg.s_min, s_hi, f"s{i}") for i in range(n)]
    ex = [md.new_int_var(0, cfg.s_max * step_u[(ks[i], classes[0])], f"exec{i}") for i in range(n)]
    reuse = [md.new_bool_var(f"reuse{i}") for i in range(n)]
    t = [md.new_int_var(A[i], horizon, f"t{i}") for i in range(n)]
    end = [md.new_int_var(A[i], horizon, f"end{i}") for i in range(n)]
    for i in range(n):
        md.add(end[i] == t[i] + init_u[ks[i]] * (1 - reuse[i]) + ex[i])
    for i in range(n):
        md.add(sum(x[i]) == ks[i])
        if len(classes) == 1:
            md.add(ex[i] == s[i] * step_u[(ks[i], classes[0])])
        else:  # one Boolean per speed class: the slowest chosen server's
            z = {v: md.new_bool_var(f"slowest{i}_{v}") for v in classes}
            md.add_exactly_one(z.values())
            for v, zv in z.items():
                for j in range(N):
                    if speeds[j] < v:
                        md.add_implication(zv, ~x[i][j])
                md.add_bool_or([x[i][j] for j in range(N) if speeds[j] == v]).only_enforce_if(zv)
                md.add(ex[i] == s[i] * step_u[(ks[i], v)]).only_enforce_if(zv)
    # per-server sequences (circuits through a depot, node 0) and the precedence they imply
    arc: dict[tuple[int, int, int], cp_model.IntVar] = {}
    for j in range(N):
        arcs = [(0, 0, md.new_bool_var(f"unused{j}"))]
        for i in range(n):
            arcs.append((i + 1, i + 1, ~x[i][j]))
            arcs.append((0, i + 1, md.new_bool_var(f"first{j}_{i}")))
            arcs.append((i + 1, 0, md.new_bool_var(f"last{j}_{i}")))
            for p in range(n):
                if p != i:
                    lit = md.new_bool_var(f"arc{j}_{p}_{i}")
                    arcs.append((p + 1, i + 1, lit))
                    md.add(t[i] >= end[p]).only_enforce_if(lit)
                    arc[(j, p, i)] = lit
        md.add_circuit(arcs)
    # every (size, model) class opens its first group with a reload
    for key in set(zip(ks, ms, strict=True)):
        members = [i for i in range(n) if (ks[i], ms[i]) == key]
        md.add(sum(reuse[i] for i in members) <= len(members) - 1)
    # reuse: some p of the same size and model runs directly before i on every server of i
    for i in range(n):
        pairs = []
        for p in range(n):
            if p == i or ks[p] != ks[i] or ms[p] != ms[i]:
                continue
            pr = md.new_bool_var(f"pair{p}_{i}")
            for j in range(N):
                md.add_bool_or([arc[(j, p, i)], ~x[i][j]]).only_enforce_if(pr)
            pairs.append(pr)
        if pairs:
            md.add_bool_or(pairs).only_enforce_if(reuse[i])
        else:
            md.add(reuse[i] == 0)
    # identical servers are interchangeable: order them by the lowest-numbered task each runs
    for j in range(N - 1):
        if speeds[j] == speeds[j + 1]:
            f = [md.new_int_var(0, n, f"firsttask{j + d}") for d in (0, 1)]
            for d in (0, 1):
                md.add_min_equality(f[d], [i * x[i][j + d] + n * (1 - x[i][j + d]) for i in range(n)])
            md.add(f[0] <= f[1])

    qtab = _quality_table(cfg, objective)[: s_hi - cfg.s_min + 1]
    if objective == "reward":
        W = int(round(cfg.w_t * U * Z))
        cap = math.ceil(cfg.r_max * Z)
        terms = []
        for i in range(n):
            R = md.new_int_var(1, horizon, f"resp{i}")
            md.add(R == end[i] - A[i] - 1)  # one unit less: never above the exact response (rounding)
            d = md.new_int_var(0, W, f"div{i}")
            md.add_division_equality(d, R + (W - 1), R)  # ceil(W / R)
            tt = md.new_int_var(0, cap, f"time{i}")
            md.add_min_equality(tt, [d, cap])
            q = md.new_int_var(min(qtab), max(qtab), f"q{i}")
            md.add_element(s[i] - cfg.s_min, qtab, q)
            terms += [tt, q]
            # redundant, for the bound: the best term any step count reaches once wait + init >= G is at most
            # best(G); levels of W = t - a + init switch these caps on as the search raises W's lower bound
            wvar = md.new_int_var(-1, horizon, f"waitinit{i}")
            md.add(wvar == t[i] - A[i] - 1 + init_u[ks[i]] * (1 - reuse[i]))
            prev_lit = None
            for g, cap_g in _term_caps(cfg, ks[i], max(speeds), s_hi, horizon):
                lit = md.new_bool_var(f"w{i}_{g}")
                md.add(wvar >= g).only_enforce_if(lit)
                md.add(wvar < g).only_enforce_if(~lit)
                md.add(tt + q <= cap_g).only_enforce_if(lit)
                if prev_lit is not None:
                    md.add_implication(lit, prev_lit)
                prev_lit = lit
        obj = sum(terms)
        md.maximize(obj)
    else:
        obj = sum(end[i] - A[i] - 1 for i in range(n))  # never above the exact total (rounding)
        md.minimize(obj)

    if incumbent is not None:
        _hint(md, incumbent, x, s, t, reuse, arc, A, U)
        inc_value = reward_r0(incumbent, cfg) if objective == "reward" else float(
            (incumbent["finish"] - incumbent["arrival"]).sum())
        if objective == "reward":  # the relaxed value of any schedule is >= its exact value
            md.add(obj >= math.floor(inc_value * Z) - n)
        else:
            md.add(obj <= math.ceil(inc_value * U) + n)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    solver.parameters.log_search_progress = bool(log)
    status = solver.solve(md)
    proved = status == cp_model.OPTIMAL
    scale = Z if objective == "reward" else U
    bound = solver.best_objective_bound / scale
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        servers = [[j for j in range(N) if solver.value(x[i][j])] for i in range(n)]
        steps = [int(solver.value(s[i])) for i in range(n)]
        starts = [int(solver.value(t[i])) for i in range(n)]
        recs = replay(cfg, w, servers, steps, sorted(range(n), key=lambda i: (starts[i], i)))
        if incumbent is not None and _value(incumbent, cfg, objective) > _value(recs, cfg, objective) + 1e-12:
            recs = incumbent.copy()
    elif incumbent is not None:
        recs = incumbent.copy()
    else:
        raise ValueError(f"CP-SAT found no schedule within {time_limit:g} s ({solver.status_name(status)}); raise "
                         "the time limit or pass an incumbent")
    errors = check_schedule(recs, cfg, terminated=True)
    if errors:
        raise AssertionError(f"CP-SAT schedule infeasible: {errors[:3]}")
    if objective != "reward":
        bound = bound / n
    how = solver.status_name(status)
    if not proved and other_bound is not None:
        other = other_bound()
        if (other < bound) if objective == "reward" else (other > bound):
            bound, how = other, f"{how}; tighter bound from blocks of arrivals"
    if objective == "reward":
        value = reward_r0(recs, cfg)
        gap = (bound - value) / max(abs(value), 1e-12)
    else:
        value = mean_response(recs)
        gap = (value - bound) / max(abs(value), 1e-12)
    optimal = gap <= OPTIMAL_GAP  # both bounds are proven; the gap alone decides
    return Solution(objective, value, optimal, int(solver.num_branches), time.perf_counter() - t0, recs,
                    value if optimal else bound, solver="cp-sat", status=how, bound=bound)


def _value(recs: np.ndarray, cfg: EATConfig, objective: str) -> float:
    """Higher is better: R0, or minus the mean response."""
    return reward_r0(recs, cfg) if objective == "reward" else -mean_response(recs)


def replay(cfg: EATConfig, w: Workload, servers: list[list[int]], steps: list[int], order: list[int]) -> np.ndarray:
    """TASK records of the schedule that gives task i the servers ``servers[i]`` and ``steps[i]`` steps, placed
    in ``order`` (consistent with every server's sequence), each as early as its arrival and its servers allow
    (semi-active), with reuse decided by the group rule on the resulting per-server sequences; launch numbers
    follow the start times."""
    prof = cfg.time_profile
    speeds = cfg.server_speeds
    recs = np.zeros(len(w), TASK)
    recs["order"] = -1
    recs["arrival"] = w.arrival
    recs["patches"] = w.patches
    recs["model"] = w.models
    free = [0.0] * cfg.nodes
    last = [-1] * cfg.nodes  # the task that ran last on each server
    for pos, i in enumerate(order):
        S = sorted(servers[i])
        k, m = int(w.patches[i]), int(w.models[i])
        p = last[S[0]]
        reuse = (p >= 0 and all(last[j] == p for j in S) and int(recs["servers"][p]) == _mask(S)
                 and int(w.models[p]) == m)
        start = max(float(w.arrival[i]), max(free[j] for j in S))
        init = 0.0 if reuse else prof.init_time[k]
        ex = steps[i] * prof.step_time[k] / min(speeds[j] for j in S)
        r = recs[i]
        r["start"], r["init"], r["exec"], r["finish"] = start, init, ex, start + init + ex
        r["steps"], r["quality"], r["reload"] = steps[i], kernel.quality(int(steps[i]), cfg.q_max), int(not reuse)
        r["servers"], r["order"], r["state"] = _mask(S), pos, DONE
        r["reward"] = kernel.launch_reward(start - float(w.arrival[i]), init, ex, 0.0, float(r["quality"]), cfg.w_t,
                                           cfg.w_w, cfg.w_q, cfg.w_p, cfg.q_min, cfg.r_max)
        for j in S:
            free[j] = float(r["finish"])
            last[j] = i
    # launches in time order: shifting every task as early as it can go may pass a task on other servers that
    # started earlier in ``order``; each server's own sequence (and so every reuse) is unchanged
    by_start = sorted(order, key=lambda i: (float(recs[i]["start"]), int(recs[i]["order"])))
    for pos, i in enumerate(by_start):
        recs[i]["order"] = pos
    return recs


def _mask(S) -> int:
    out = 0
    for j in S:
        out |= 1 << int(j)
    return out


def _hint(md, inc: np.ndarray, x, s, t, reuse, arc, A, U) -> None:
    """A known schedule as CP-SAT's starting point (x, steps, starts, reuse and the per-server arcs)."""
    n, N = len(x), len(x[0])
    on = [[bool((int(inc[i]["servers"]) >> j) & 1) for j in range(N)] for i in range(n)]
    for i in range(n):
        for j in range(N):
            md.add_hint(x[i][j], on[i][j])
        md.add_hint(s[i], int(inc[i]["steps"]))
        md.add_hint(t[i], max(A[i], math.floor(float(inc[i]["start"]) * U)))
        md.add_hint(reuse[i], not bool(inc[i]["reload"]))
    order = sorted(range(n), key=lambda i: (float(inc[i]["start"]), int(inc[i]["order"])))
    for j in range(N):
        seq = [i for i in order if on[i][j]]
        nxt = dict(zip(seq, seq[1:], strict=False))
        for (jj, p, i), lit in arc.items():
            if jj == j:
                md.add_hint(lit, nxt.get(p) == i)
