"""Offline optimum for small instances: the whole arrival sequence is known, every decision is free.

Formulation (``docs/optimal.md`` has the argument): a schedule gives every task a start time, a server set of
its size and a number of steps. A task reuses (no init) iff its set is exactly the set of the task that ran
last on each of those servers (an intact group, same model) -- the simulator's group rule. Two objectives:

* ``R0``: the simulator's launch reward without its queue-coupling term Wbar (``w_w = 0``), summed over tasks:
  ``sum_i min(r_max, w_t / (wait_i + init_i + exec_i)) + w_q q(s_i) - w_p [q(s_i) < Q_min]`` (maximize);
* mean response latency (minimize).

Both are *regular*: each task's term only gets worse when it finishes later. So with the per-server task
sequences fixed, starting every task as early as possible (semi-active) is never worse, and reuse flags
depend only on those sequences. Branch-and-bound therefore enumerates semi-active schedules in start order:
(next task, server set up to symmetry, steps), each task starting at max(arrival, its servers' release).
Steps that some fewer steps match or beat are dominated (less or equal reward, later release) and skipped.
Any schedule any policy produces -- in tick or event mode, with the paper's selector or not -- is one of the
schedules searched (after left-shifting), so the optimum is never worse than any scheduler's value.

For instances too large to solve, ``response_lower_bound`` relaxes the cluster to one preemptive machine of
the cluster's total speed (SRPT is optimal there) for a valid lower bound on mean response latency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..algos import registry
from ..core import kernel
from ..core.config import EATConfig
from ..core.invariants import check_schedule
from ..core.seeds import HELD_OUT_SEED0
from ..core.state import DONE, TASK
from ..core.workload import Workload

EPS = 1e-9


@dataclass
class Solution:
    objective: str  # "reward" (R0, maximized) or "response" (total response s, minimized)
    value: float  # R0 sum, or mean response s
    optimal: bool  # False: the node limit was hit; value is the best found
    nodes: int
    solve_s: float
    tasks: np.ndarray  # TASK records of the schedule (order = launch order)
    upper_bound: float  # a bound on the optimum: = value when optimal (for "response": a lower bound on it)


def instance(cfg: EATConfig, seed: int) -> Workload:
    """The workload the simulator draws for ``reset(seed=seed)`` (the same arrivals every scheduler sees)."""
    from ..sim.env import EATEnv  # noqa: PLC0415

    env = EATEnv(cfg)
    env.reset(seed=seed)
    return env.workload


def reward_r0(tasks: np.ndarray, cfg: EATConfig) -> float:
    """R0 of a schedule given as TASK records (a scheduler's ``episode_tasks()`` or a ``Solution``)."""
    total = 0.0
    for t in tasks:
        if int(t["order"]) < 0:
            continue
        total += kernel.launch_reward(float(t["start"] - t["arrival"]), float(t["init"]), float(t["exec"]), 0.0,
                                      float(t["quality"]), cfg.w_t, cfg.w_w, cfg.w_q, cfg.w_p, cfg.q_min, cfg.r_max)
    return total


def mean_response(tasks: np.ndarray) -> float:
    done = tasks["state"] == DONE
    return float((tasks["finish"] - tasks["arrival"])[done].mean()) if done.any() else math.nan


class _Search:
    """Depth-first branch-and-bound over semi-active schedules generated in start order."""

    def __init__(self, cfg: EATConfig, w: Workload, objective: str, node_limit: int, incumbent: float):
        if cfg.regroup_time is not None:
            raise ValueError("the exact solver does not model the regroup_time extension")
        self.cfg = cfg
        self.obj = objective
        self.n = len(w)
        self.N = cfg.nodes
        self.a = np.asarray(w.arrival, np.float64)
        self.k = np.asarray(w.patches, np.int64)
        self.m = np.asarray(w.models, np.int64)
        prof = cfg.time_profile
        self.speed = np.asarray(cfg.server_speeds, np.float64)
        self.step_s = {k: prof.step_time[k] for k in set(self.k.tolist())}
        self.init_s = {k: prof.init_time[k] for k in set(self.k.tolist())}
        self.steps = np.arange(cfg.s_min, cfg.s_max + 1)
        self.qual = np.array([kernel.quality(int(s), cfg.q_max) for s in self.steps])
        self.node_limit = node_limit
        self.nodes = 0
        self.best = incumbent
        self.best_plan: list | None = None
        # the optimistic per-task term as a function of (wait + init), on the fastest server
        self.cmax = float(self.speed.max())
        self._best_cache: dict[tuple[float, int], float] = {}  # exact memo: the same waits recur across nodes
        self._cand_cache: dict[tuple[float, float], list[tuple[int, float]]] = {}

    # --- per-task terms -------------------------------------------------------------------------------------
    def _terms(self, W: float, st: float) -> np.ndarray:
        """Term of every step count for fixed wait + init = W and seconds per step st."""
        c = self.cfg
        if self.obj == "response":
            return -(W + self.steps * st)
        r = np.minimum(c.r_max, c.w_t / (W + self.steps * st)) + c.w_q * self.qual
        return r - c.w_p * (self.qual < c.q_min)

    def candidates(self, W: float, st: float) -> list[tuple[int, float]]:
        """Non-dominated (steps, term): each strictly better than every smaller step count."""
        if self.obj == "response":
            return [(self.cfg.s_min, -(W + self.cfg.s_min * st))]
        key = (W, st)
        hit = self._cand_cache.get(key)
        if hit is not None:
            return hit
        f = self._terms(W, st)
        out, best = [], -math.inf
        for s, v in zip(self.steps.tolist(), f.tolist(), strict=True):
            if v > best + 1e-12:
                out.append((s, v))
                best = v
        out.reverse()  # most promising (highest term) first
        self._cand_cache[key] = out
        return out

    def best_term(self, W: float, k: int) -> float:
        key = (W, k)
        v = self._best_cache.get(key)
        if v is None:
            v = self._best_cache[key] = float(self._terms(W, self.step_s[k] / self.cmax).max())
        return v

    # --- state helpers ------------------------------------------------------------------------------------------
    def _intact(self, prev, masks) -> list[int]:
        """For each server, the task whose group it still forms (-1: not in an intact group)."""
        count: dict[int, int] = {}
        for p in prev:
            count[p] = count.get(p, 0) + 1
        # p's group is intact iff every one of its k_p servers still has p as its last task
        return [p if p >= 0 and count[p] == self.k[p] else -1 for p in prev]

    def _sets(self, k: int, free, prev, masks, intact) -> list[tuple[int, ...]]:
        """Server sets of size k up to symmetry: servers with equal release time, speed, model and group
        are interchangeable, so only the lowest-indexed ones of each class are taken."""
        classes: dict[tuple, list[int]] = {}
        for j in range(self.N):
            g = intact[j]
            model = -1 if prev[j] < 0 else int(self.m[prev[j]])
            classes.setdefault((free[j], self.speed[j], model, g), []).append(j)
        groups = list(classes.values())
        out: list[tuple[int, ...]] = []

        def rec(ci: int, left: int, acc: list[int]) -> None:
            if left == 0:
                out.append(tuple(acc))
                return
            if ci == len(groups):
                return
            members = groups[ci]
            for take in range(min(left, len(members)), -1, -1):
                rec(ci + 1, left - take, acc + members[:take])

        rec(0, k, [])
        return out

    def bound_rest(self, done_mask: int, last_start: float, free, intact, masks) -> float:
        """Optimistic value of the unscheduled tasks: each starts no earlier than the last start and the
        k-th earliest server release, on the fastest servers, without init -- except that in every
        (size, model) class with no intact group to reuse, at least one task must initialize, so the
        smallest such loss in the class is subtracted."""
        rel = sorted(free)
        has_group = set()
        for j in range(self.N):
            p = intact[j]
            if p >= 0:
                has_group.add((int(self.k[p]), int(self.m[p])))
        total = 0.0
        loss: dict[tuple[int, int], float] = {}
        for i in range(self.n):
            if (done_mask >> i) & 1:
                continue
            k = int(self.k[i])
            key = (k, int(self.m[i]))
            wait = max(self.a[i], last_start, rel[k - 1]) - self.a[i]
            best = self.best_term(wait, k)
            total += best
            if key not in has_group:
                d = best - self.best_term(wait + self.init_s[k], k)
                loss[key] = min(loss.get(key, math.inf), d)
        return total - sum(loss.values())

    # --- search -------------------------------------------------------------------------------------------------
    def run(self) -> None:
        free = [0.0] * self.N
        prev = [-1] * self.N
        masks = [0] * self.n
        self._dfs(0, 0.0, -math.inf, -1, free, prev, masks, [])

    def _dfs(self, done_mask, acc, last_start, last_i, free, prev, masks, plan) -> None:
        self.nodes += 1
        if done_mask == (1 << self.n) - 1:
            if acc > self.best + 1e-9 or self.best_plan is None and acc >= self.best - 1e-9:
                self.best, self.best_plan = acc, list(plan)
            return
        if self.nodes >= self.node_limit:
            return
        intact = self._intact(prev, masks)
        if acc + self.bound_rest(done_mask, last_start, free, intact, masks) <= self.best + 1e-9:
            return
        children = []
        rest = [i for i in range(self.n) if not (done_mask >> i) & 1]
        for i in rest:
            k = int(self.k[i])
            for S in self._sets(k, free, prev, masks, intact):
                start = max(self.a[i], max(free[j] for j in S))
                if start < last_start - EPS or (abs(start - last_start) <= EPS and i < last_i):
                    continue  # the same schedule is generated in start order elsewhere
                mask = 0
                for j in S:
                    mask |= 1 << j
                p = prev[S[0]]
                reuse = (p >= 0 and masks[p] == mask and int(self.m[p]) == int(self.m[i])
                         and all(prev[j] == p for j in S))
                init = 0.0 if reuse else self.init_s[k]
                st = self.step_s[k] / float(min(self.speed[j] for j in S))
                # releases before every other unscheduled arrival cannot delay anyone: of the step counts
                # that release that early, only the best (the largest, candidates being increasing) matters
                horizon = min((self.a[j] for j in rest if j != i), default=math.inf)
                early_taken = False
                for s, term in self.candidates(start - self.a[i] + init, st):
                    if start + init + s * st <= horizon:
                        if early_taken:
                            continue
                        early_taken = True
                    children.append((term, i, S, mask, start, init, s, st))
        children.sort(key=lambda c: (-c[0], c[4]))
        for term, i, S, mask, start, init, s, st in children:
            if self.nodes >= self.node_limit:
                return
            finish = start + init + s * st
            nfree, nprev = list(free), list(prev)
            for j in S:
                nfree[j] = finish
                nprev[j] = i
            old_mask = masks[i]
            masks[i] = mask
            plan.append((i, S, mask, start, init, s, st, finish))
            self._dfs(done_mask | (1 << i), acc + term, start, i, nfree, nprev, masks, plan)
            plan.pop()
            masks[i] = old_mask

    def records(self) -> np.ndarray:
        recs = np.zeros(self.n, TASK)
        recs["order"] = -1
        recs["arrival"] = self.a
        recs["patches"] = self.k
        recs["model"] = self.m
        for order, (i, _S, mask, start, init, s, st, finish) in enumerate(self.best_plan or []):
            r = recs[i]
            r["start"], r["finish"], r["init"], r["exec"] = start, finish, init, s * st
            r["steps"], r["quality"] = s, kernel.quality(int(s), self.cfg.q_max)
            r["reload"], r["servers"], r["order"], r["state"] = int(init > 0), mask, order, DONE
        for r in recs:
            if r["order"] >= 0:
                r["reward"] = kernel.launch_reward(float(r["start"] - r["arrival"]), float(r["init"]),
                                                   float(r["exec"]), 0.0, float(r["quality"]), self.cfg.w_t,
                                                   self.cfg.w_w, self.cfg.w_q, self.cfg.w_p, self.cfg.q_min,
                                                   self.cfg.r_max)
        return recs


def solve(cfg: EATConfig, w: Workload, objective: str = "reward", *, node_limit: int = 2_000_000,
          incumbent: np.ndarray | None = None) -> Solution:
    """Offline optimum of ``objective`` ("reward": max R0; "response": min mean response) on workload ``w``.

    ``incumbent``: TASK records of a known schedule of ``w`` (e.g. the best heuristic's); the search only
    looks for strictly better ones and returns the incumbent if there are none. ``optimal`` is True when the
    search finished within ``node_limit`` nodes; otherwise ``upper_bound`` still bounds the optimum."""
    if objective not in ("reward", "response"):
        raise ValueError(f"objective must be 'reward' or 'response', got {objective!r}")
    if len(w) > 16:
        raise ValueError(f"{len(w)} tasks is too many to solve exactly; use response_lower_bound")
    t0 = time.perf_counter()
    inc_value = -math.inf
    if incumbent is not None:
        inc_value = reward_r0(incumbent, cfg) if objective == "reward" else -float(
            (incumbent["finish"] - incumbent["arrival"]).sum())
    srch = _Search(cfg, w, objective, node_limit, inc_value - 1e-7)
    root_bound = srch.bound_rest(0, -math.inf, [0.0] * cfg.nodes, [-1] * cfg.nodes, [0] * len(w))
    srch.run()
    optimal = srch.nodes < node_limit
    if srch.best_plan is not None:
        recs = srch.records()
    elif incumbent is not None:
        recs = incumbent.copy()
    else:
        raise ValueError("no schedule found within the node limit; raise node_limit or pass an incumbent")
    value = reward_r0(recs, cfg) if objective == "reward" else mean_response(recs)
    ub = value if optimal else (root_bound if objective == "reward" else -root_bound / len(w))
    return Solution(objective, value, optimal, srch.nodes, time.perf_counter() - t0, recs, ub)


def response_lower_bound(cfg: EATConfig, w: Workload) -> float:
    """A valid lower bound on mean response latency for any schedule of ``w`` (any size).

    Relaxation: the cluster becomes one preemptive machine of speed sum(c_j); task i is k_i * s_min *
    step_time(k_i) seconds of work (a real run does at least that much, at no more than its servers' speed),
    so SRPT's total completion time bounds every schedule's. Second bound, per task: it either initializes, or
    reuses a group of its size and model that another task j formed by a reload, which is idle no earlier than
    a_j + init + p_j; so response_i >= p_i + min(init_i, earliest such time - a_i). The larger mean is returned."""
    prof = cfg.time_profile
    speeds = np.asarray(cfg.server_speeds, np.float64)
    cap, cmax = float(speeds.sum()), float(speeds.max())
    a = np.asarray(w.arrival, np.float64)
    k = np.asarray(w.patches, np.int64)
    p = np.array([cfg.s_min * prof.step_time[int(x)] / cmax for x in k])
    work = np.array([int(x) * cfg.s_min * prof.step_time[int(x)] for x in k])
    # SRPT on one machine with release dates
    order = np.argsort(a, kind="stable")
    remaining = {}
    t, nxt, total_c = 0.0, 0, 0.0
    while nxt < len(order) or remaining:
        if not remaining:
            t = max(t, a[order[nxt]])
        while nxt < len(order) and a[order[nxt]] <= t + EPS:
            remaining[int(order[nxt])] = work[order[nxt]] / cap
            nxt += 1
        i = min(remaining, key=remaining.get)
        t_next = a[order[nxt]] if nxt < len(order) else math.inf
        if t + remaining[i] <= t_next + EPS:
            t += remaining.pop(i)
            total_c += t
        else:
            remaining[i] -= t_next - t
            t = t_next
    srpt = total_c - a.sum()
    # per task: either it initializes, or it reuses a group of its size and model that another task j created
    # by a reload, which cannot be idle before a_j + init + p_j
    m = np.asarray(w.models, np.int64)
    init = np.array([prof.init_time[int(x)] for x in k])
    ready = a + init + p
    per_task = 0.0
    for i in range(len(a)):
        same = (k == k[i]) & (m == m[i])
        same[i] = False
        earliest = ready[same].min() if same.any() else math.inf
        per_task += p[i] + min(init[i], max(0.0, earliest - a[i]))
    return max(srpt, per_task) / len(a)


# --- comparisons ----------------------------------------------------------------------------------------------
def run_scheduler(name: str, cfg: EATConfig, seed: int, checkpoint: str | None = None) -> tuple[np.ndarray, float]:
    """(task records, simulator episode reward) of scheduler ``name`` on the instance of ``seed``."""
    from ..sim.rollout import simulate  # noqa: PLC0415

    res = simulate(registry.make_policy(name, cfg, checkpoint=checkpoint, seed=seed), cfg, 1, seed)
    return res.task_records[0], float(res.episodes[0]["reward"])


def compare_on_instance(cfg: EATConfig, seed: int, names: Sequence[str], *, node_limit: int = 2_000_000,
                        warn: Callable[[str], None] | None = None, checkpoints=None) -> dict:
    """Solve the instance of ``seed`` for both objectives and measure every scheduler's gap to it.
    ``checkpoints``: a ``--checkpoints`` folder for learned schedulers (None: the shipped ones)."""

    w = instance(cfg, seed)
    runs = {}
    for name in names:
        try:
            runs[name] = run_scheduler(name, cfg, seed, registry.checkpoint_in(name, cfg.nodes, checkpoints))
        except (ImportError, ValueError, FileNotFoundError, OSError) as e:
            if warn is None:
                raise
            warn(f"skipping {name}: {e}")
    done = [t for t, _ in runs.values() if (t["state"] == DONE).all()]
    best_r0 = max(done, key=lambda t: reward_r0(t, cfg), default=None)
    best_resp = min(done, key=mean_response, default=None)
    opt = solve(cfg, w, "reward", node_limit=node_limit, incumbent=best_r0)
    fast = solve(cfg, w, "response", node_limit=node_limit, incumbent=best_resp)
    for sol in (opt, fast):
        errors = check_schedule(sol.tasks, cfg, terminated=True)
        if errors:
            raise AssertionError(f"solver schedule infeasible: {errors[:3]}")
    rows = [{"name": "optimum", "objective": opt.value, "gap_pct": 0.0, "mean_response_s": mean_response(opt.tasks),
             "response_excess_pct": math.nan, "sim_reward": math.nan}]
    for name, (tasks, sim_reward) in runs.items():
        r0, resp = reward_r0(tasks, cfg), mean_response(tasks)
        rows.append({"name": name, "objective": r0, "gap_pct": 100.0 * (opt.value - r0) / abs(opt.value),
                     "mean_response_s": resp, "response_excess_pct": 100.0 * (resp - fast.value) / fast.value,
                     "sim_reward": sim_reward})
    return {"nodes": cfg.nodes, "tasks": len(w), "rate": cfg.rate, "seed": seed, "rows": rows,
            "status": "optimal" if opt.optimal else "node limit hit (best found)", "nodes_explored": opt.nodes,
            "upper_bound": opt.upper_bound, "optimal": opt.optimal,
            "solve_s": opt.solve_s + fast.solve_s, "min_mean_response_s": fast.value,
            "response_status": "optimal" if fast.optimal else "node limit hit (best found)",
            "response_lower_bound_s": response_lower_bound(cfg, w)}


def gap_study(names: Sequence[str], *, instances: int = 5, nodes: int = 4, tasks: int = 5, rate: float = 0.05,
              seed0: int = HELD_OUT_SEED0, node_limit: int = 2_000_000,
              warn: Callable[[str], None] | None = None, checkpoints=None) -> list[dict]:
    """Mean optimality gaps of every scheduler over ``instances`` small instances (seeds seed0..)."""
    cfg = EATConfig(nodes=nodes, rate=rate, tasks_per_episode=tasks)
    per: dict[str, list[tuple[float, float]]] = {}
    solved = 0
    names = list(names)
    for s in range(seed0, seed0 + instances):
        res = compare_on_instance(cfg, s, names, node_limit=node_limit, warn=warn, checkpoints=checkpoints)
        names = [r["name"] for r in res["rows"][1:]]  # a scheduler that failed once is not tried again
        if res["status"] != "optimal" or res["response_status"] != "optimal":
            if warn is not None:
                warn(f"instance seed {s}: node limit hit; left out of the gap table")
            continue
        solved += 1
        for r in res["rows"][1:]:
            per.setdefault(r["name"], []).append((r["gap_pct"], r["response_excess_pct"]))
    return [{"name": n, "instances": len(v), "gap_pct": float(np.mean([g for g, _ in v])),
             "max_gap_pct": float(np.max([g for g, _ in v])),
             "response_excess_pct": float(np.mean([e for _, e in v])), "nodes": nodes, "tasks": tasks,
             "rate": rate, "seed0": seed0, "solved": solved} for n, v in per.items()]


def gap_table_markdown(rows: list[dict]) -> str:
    if not rows:
        return "### Optimality gaps\n\nNo instance was solved within the node limit.\n"
    r0 = rows[0]
    lines = ["### Optimality gaps on small instances", "",
             f"{r0['solved']} instances ({r0['nodes']} nodes, {r0['tasks']} tasks, rate {r0['rate']}, seeds "
             f"{r0['seed0']}..), solved exactly. Gap: how far below the offline optimum of R0 (the simulator reward "
             f"without the Wbar term; docs/optimal.md) a scheduler's schedule scores; response excess: how far its "
             f"mean response is above the minimum possible.", "",
             "| scheduler | mean R0 gap % (lower is better) | max R0 gap % (lower is better) "
             "| mean response excess % (lower is better) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['gap_pct']:.1f} | {r['max_gap_pct']:.1f} | {r['response_excess_pct']:.1f} |")
    return "\n".join(lines) + "\n"
