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

import numpy as np

from ..algos import registry
from ..core import kernel
from ..core.config import EATConfig
from ..core.invariants import check_schedule
from ..core.seeds import HELD_OUT_SEED0
from ..core.state import DONE, TASK
from ..core.workload import Workload
from .schedules import Solution, mean_response, reward_r0

__all__ = ["Solution", "instance", "reward_r0", "mean_response", "solve", "block_bound", "response_lower_bound",
           "run_scheduler", "compare_on_instance", "gap_study", "gap_table_markdown", "SOLVERS", "OPTIMAL_SIZES"]

EPS = 1e-9


def instance(cfg: EATConfig, seed: int) -> Workload:
    """The workload the simulator draws for ``reset(seed=seed)`` (the same arrivals every scheduler sees)."""
    from ..sim.env import EATEnv  # noqa: PLC0415

    env = EATEnv(cfg)
    env.reset(seed=seed)
    return env.workload


class _Search:
    """Depth-first branch-and-bound over semi-active schedules generated in start order."""

    def __init__(self, cfg: EATConfig, w: Workload, objective: str, node_limit: int, incumbent: float,
                 warm_start: bool = False):
        if cfg.regroup_time is not None:
            raise ValueError("the exact solver does not model the regroup_time extension")
        self.warm_start = warm_start  # relaxation: a task first on all its servers may reuse a group left before
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
        self.open_bound = -math.inf  # the best bound of any subtree the node limit left unexplored
        self.stopped = False
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
            if key not in has_group and not self.warm_start:
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
        intact = self._intact(prev, masks)
        node_bound = acc + self.bound_rest(done_mask, last_start, free, intact, masks)
        if self._stop():  # not expanded: its subtree stays open
            self.open_bound = max(self.open_bound, node_bound)
            return
        if node_bound <= self.best + 1e-9:
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
                         and all(prev[j] == p for j in S)) or (self.warm_start and all(prev[j] < 0 for j in S))
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
        # most promising subtree first: by the child's bound (its term plus the optimistic value of the rest after
        # it), which prices the delay a launch causes the others. Ordering by the immediate term alone started
        # late-arriving tasks first and stalled some 6-task instances for millions of nodes (issue 19)
        scored = sorted(((self._child_bound(acc, done_mask, free, prev, masks, c), c) for c in children),
                        key=lambda bc: (-bc[0], bc[1][4]))
        self.nodes += len(children)  # each child's bound is a node's worth of work: the limit stays a time budget
        for bound, (term, i, S, mask, start, init, s, st) in scored:
            if bound <= self.best + 1e-9:  # sorted by bound: neither this child nor any after can do better
                return
            if self._stop():  # the children not explored stay open
                self.open_bound = max(self.open_bound, bound)
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

    def _stop(self) -> bool:
        """The node limit is reached (once some schedule is known: the first dive always reaches a leaf)."""
        if self.nodes >= self.node_limit and (self.best_plan is not None or self.best > -math.inf):
            self.stopped = True
        return self.stopped

    def _child_bound(self, acc, done_mask, free, prev, masks, child) -> float:
        """Optimistic value of every schedule below ``child`` (a launch not explored)."""
        term, i, S, mask, start, init, s, st = child
        nfree, nprev = list(free), list(prev)
        for j in S:
            nfree[j] = start + init + s * st
            nprev[j] = i
        old = masks[i]
        masks[i] = mask
        b = acc + term + self.bound_rest(done_mask | (1 << i), start, nfree, self._intact(nprev, masks), masks)
        masks[i] = old
        return b

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
    srch.run()
    optimal = not srch.stopped
    if srch.best_plan is not None:
        recs = srch.records()
    elif incumbent is not None:
        recs = incumbent.copy()
    else:
        raise ValueError("no schedule found within the node limit; raise node_limit or pass an incumbent")
    value = reward_r0(recs, cfg) if objective == "reward" else mean_response(recs)
    # not finished: the optimum is the best schedule seen or lies in a subtree the limit left open
    found = reward_r0(recs, cfg) if objective == "reward" else -float((recs["finish"] - recs["arrival"]).sum())
    bound = max(found, srch.open_bound)
    ub = value if optimal else (bound if objective == "reward" else -bound / len(w))
    return Solution(objective, value, optimal, srch.nodes, time.perf_counter() - t0, recs, ub,
                    status="finished" if optimal else "node limit hit", bound=ub)


def block_bound(cfg: EATConfig, w: Workload, objective: str = "reward", *, block: int = 5,
                node_limit: int = 300_000) -> tuple[float, bool]:
    """A proven bound on the optimum of ``w`` from independent blocks of consecutive arrivals (R0: an upper bound;
    "response": a lower bound on the mean response), and whether every block was solved to the end.

    The tasks are cut into runs of at most ``block`` consecutive arrivals (at the widest arrival gaps) and each run
    is solved alone with an optimistic start: every server free, and any task that is the first of the run on all
    its servers may reuse a group left there before. Any schedule of the whole instance, restricted to one run, is
    a schedule of that relaxed run with the same value (the others' tasks only take servers away and break groups),
    so the sum of the runs' optima bounds the whole. A run whose search hits ``node_limit`` contributes its bound."""
    n = len(w)
    a = np.asarray(w.arrival, np.float64)
    cuts = _block_cuts(a, block)
    total, exact = 0.0, True
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        sub = Workload(w.arrival[lo:hi], w.patches[lo:hi], w.models[lo:hi])
        srch = _Search(cfg, sub, objective, node_limit, -math.inf, warm_start=True)
        srch.run()
        done = not srch.stopped
        exact &= done
        part = srch.best if done else max(srch.best, srch.open_bound)
        total += part
    return (total, exact) if objective == "reward" else (-total / n, exact)


def _block_cuts(a: np.ndarray, block: int) -> list[int]:
    """Cut points (task indices) splitting arrivals ``a`` into runs of at most ``block`` tasks, at the widest gaps."""
    n = len(a)
    if n <= block:
        return []
    cuts: list[int] = []
    lo = 0
    while n - lo > block:
        # the widest gap among the cut positions lo+1..lo+block
        best = max(range(lo + 1, lo + block + 1), key=lambda c: (a[c] - a[c - 1], c))
        cuts.append(best)
        lo = best
    return cuts


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


SOLVERS = ("cp-sat", "bnb")
"""Exact solvers: the CP-SAT model (``experiments.cpsat``, the default) and the branch and bound above (kept to
cross-check it on small instances)."""


def _solve_with(solver: str, cfg: EATConfig, w: Workload, objective: str, incumbent, *, node_limit: int,
                time_limit: float, workers: int) -> Solution:
    if solver == "cp-sat":
        from .cpsat import solve_cpsat  # noqa: PLC0415

        return solve_cpsat(cfg, w, objective, time_limit=time_limit, workers=workers, incumbent=incumbent,
                           other_bound=lambda: block_bound(cfg, w, objective)[0])
    if solver == "bnb":
        return solve(cfg, w, objective, node_limit=node_limit, incumbent=incumbent)
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")


def compare_on_instance(cfg: EATConfig, seed: int, names: Sequence[str], *, solver: str = "cp-sat",
                        node_limit: int = 2_000_000, time_limit: float = 60.0, workers: int = 2,
                        warn: Callable[[str], None] | None = None, checkpoints=None) -> dict:
    """Solve the instance of ``seed`` for both objectives and measure every scheduler's gap to it.
    ``checkpoints``: a ``--checkpoints`` folder for learned schedulers (None: the shipped ones).

    The first row is the solver's schedule, named ``optimum`` only when proven optimal and ``best found``
    otherwise (``best_found_by`` names the scheduler whose schedule it is when the solver found nothing better).
    Each scheduler's ``gap_pct`` is measured against that schedule and ``gap_bound_pct`` against the proven bound:
    the true gap lies between the two (they are equal when the optimum is proven)."""

    w = instance(cfg, seed)
    runs = {}
    for name in names:
        try:
            runs[name] = run_scheduler(name, cfg, seed, registry.checkpoint_in(name, cfg.nodes, checkpoints))
        except (ImportError, ValueError, FileNotFoundError, OSError) as e:
            if warn is None:
                raise
            warn(f"skipping {name}: {e}")
    done = {n: t for n, (t, _) in runs.items() if (t["state"] == DONE).all()}
    best_r0 = max(done, key=lambda n: reward_r0(done[n], cfg), default=None)
    best_resp = min(done, key=lambda n: mean_response(done[n]), default=None)
    kw = dict(node_limit=node_limit, time_limit=time_limit, workers=workers)
    opt = _solve_with(solver, cfg, w, "reward", done.get(best_r0), **kw)
    fast = _solve_with(solver, cfg, w, "response", done.get(best_resp), **kw)
    for sol in (opt, fast):
        errors = check_schedule(sol.tasks, cfg, terminated=True)
        if errors:
            raise AssertionError(f"solver schedule infeasible: {errors[:3]}")
    found_by = None
    if best_r0 is not None and opt.value <= reward_r0(done[best_r0], cfg) + 1e-9:
        found_by = best_r0  # the solver found nothing better than this scheduler's schedule
    ub, lb_resp = opt.upper_bound, fast.upper_bound
    rows = [{"name": "optimum" if opt.optimal else "best found", "objective": opt.value, "gap_pct": 0.0,
             "gap_bound_pct": 100.0 * (ub - opt.value) / abs(ub), "mean_response_s": mean_response(opt.tasks),
             "response_excess_pct": math.nan, "sim_reward": math.nan}]
    for name, (tasks, sim_reward) in runs.items():
        r0, resp = reward_r0(tasks, cfg), mean_response(tasks)
        rows.append({"name": name, "objective": r0, "gap_pct": 100.0 * (opt.value - r0) / abs(opt.value),
                     "gap_bound_pct": 100.0 * (ub - r0) / abs(ub),
                     "mean_response_s": resp, "response_excess_pct": 100.0 * (resp - fast.value) / fast.value,
                     "response_excess_bound_pct": 100.0 * (resp - lb_resp) / lb_resp, "sim_reward": sim_reward})
    return {"nodes": cfg.nodes, "tasks": len(w), "rate": cfg.rate, "seed": seed, "rows": rows, "solver": opt.solver,
            "status": "optimal" if opt.optimal else "best found", "solver_status": opt.status,
            "best_found_by": found_by, "nodes_explored": opt.nodes, "upper_bound": ub, "optimal": opt.optimal,
            "gap_pct": 100.0 * opt.gap, "solve_s": opt.solve_s + fast.solve_s, "reward_solve_s": opt.solve_s,
            "min_mean_response_s": fast.value, "response_bound_s": lb_resp,
            "response_status": "optimal" if fast.optimal else "best found",
            "response_lower_bound_s": response_lower_bound(cfg, w)}


OPTIMAL_SIZES = ((4, 12, 0.05), (8, 8, 0.10))
"""``eat evaluate --optimal K``: instance sizes (nodes, tasks, rate) solved K times each."""


def gap_study(names: Sequence[str], *, instances: int = 5, nodes: int = 4, tasks: int = 12, rate: float = 0.05,
              seed0: int = HELD_OUT_SEED0, solver: str = "cp-sat", node_limit: int = 2_000_000,
              time_limit: float = 60.0, workers: int = 2, warn: Callable[[str], None] | None = None,
              checkpoints=None) -> dict:
    """Every scheduler's gaps over ``instances`` instances (seeds seed0..): per instance the solver's status, time,
    value and bound; per scheduler the mean and largest gap to the best schedule found (the gap to the optimum
    where it is proven) and the mean gap to the proven bound."""
    cfg = EATConfig(nodes=nodes, rate=rate, tasks_per_episode=tasks)
    per: dict[str, list[tuple[float, float, float]]] = {}
    inst = []
    names = list(names)
    for s in range(seed0, seed0 + instances):
        res = compare_on_instance(cfg, s, names, solver=solver, node_limit=node_limit, time_limit=time_limit,
                                  workers=workers, warn=warn, checkpoints=checkpoints)
        names = [r["name"] for r in res["rows"][1:]]  # a scheduler that failed once is not tried again
        keys = ("seed", "status", "solver_status", "best_found_by", "solve_s", "reward_solve_s", "upper_bound",
                "gap_pct", "min_mean_response_s", "response_status", "response_bound_s")
        inst.append({k: res[k] for k in keys} | {"value": res["rows"][0]["objective"]})
        for r in res["rows"][1:]:
            per.setdefault(r["name"], []).append((r["gap_pct"], r["gap_bound_pct"], r["response_excess_pct"]))
    rows = [{"name": n, "instances": len(v), "gap_pct": float(np.mean([g for g, _, _ in v])),
             "max_gap_pct": float(np.max([g for g, _, _ in v])), "gap_bound_pct": float(np.mean([b for _, b, _ in v])),
             "response_excess_pct": float(np.mean([e for _, _, e in v]))} for n, v in per.items()]
    return {"nodes": nodes, "tasks": tasks, "rate": rate, "seed0": seed0, "solver": solver, "time_limit": time_limit,
            "instances": inst, "rows": rows, "proven": sum(i["status"] == "optimal" for i in inst)}


def gap_table_markdown(studies: list[dict]) -> str:
    """``optimality.md``: per size, the solver's results per instance and every scheduler's gaps."""
    lines = ["### Optimality gaps", "",
             "R0: the simulator's reward without its queue term Wbar (docs/optimal.md), higher is better. Per "
             "instance: "
             "*optimal* only when proven; otherwise *best found*, with the proven bound and the gap between them. "
             "A scheduler's gap is measured to the best schedule found (its gap to the optimum where that is proven, "
             "else a lower bound on it) and to the proven bound (an upper bound on it); response excess: how far its "
             "mean response is above the smallest mean response found.", ""]
    for st in studies:
        lines += [f"#### {st['nodes']} nodes, {st['tasks']} tasks, rate {st['rate']:g}: {st['proven']} of "
                  f"{len(st['instances'])} instances proven optimal ({st['solver']}, {st['time_limit']:g} s per solve)",
                  "", "| seed | R0 status | R0 (best found) | proven bound | gap % | solve s (R0 + response) "
                  "| min mean response s (status) |", "|---|---|---|---|---|---|---|"]
        for i in st["instances"]:
            who = f" (= {i['best_found_by']}'s)" if i["best_found_by"] and i["status"] != "optimal" else ""
            lines.append(f"| {i['seed']} | {i['status']}{who} | {i['value']:.3f} | {i['upper_bound']:.3f} | "
                         f"{i['gap_pct']:.2f} | {i['solve_s']:.1f} | {i['min_mean_response_s']:.2f} "
                         f"({i['response_status']}) |")
        lines += ["", "| scheduler | mean R0 gap % to best found (lower is better) | max (lower is better) "
                  "| mean R0 gap % to bound (lower is better) | mean response excess % (lower is better) |",
                  "|---|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['name']} | {r['gap_pct']:.1f} | {r['max_gap_pct']:.1f} | {r['gap_bound_pct']:.1f} | "
                         f"{r['response_excess_pct']:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"
