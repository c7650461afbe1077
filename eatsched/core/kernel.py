"""The scheduler core, compiled with numba: one implementation for the simulator and the host.

Every function works on one cluster's rows of the ``core.state`` arrays (``servers[b]``, ``tasks[b]``,
``clock[b]``) and the ``PARAMS`` record ``p``. Who calls what:

* ``sim.EATEnv`` / ``sim.BatchedEATEnv``: ``step_batch`` (decide + launch or wait + jump ahead + observe)
  and ``reset_env`` to start an episode.
* ``serving`` host: ``build_obs`` to show the policy the cluster, ``choose`` to decode its action,
  ``plan`` + ``commit_launch`` to start a task at wall-clock time, ``advance`` is not used there (workers
  report completions).
* heuristics: ``greedy_choice`` (best immediate reward, evaluated without mutating the state).

Numba functions are also plain callables from Python, which is how the unit tests pin them.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.core.cpu import CPUTargetOptions

from .state import (
    ACTIVE,
    DONE,
    FUTURE,
    KIND_SERVER,
    KIND_TASK,
    NO_GROUP,
    NO_MODEL,
    QUEUED,
    RUNNING,
    SERVER_BUSY_FOR,
    SERVER_GROUP,
    SERVER_IDLE,
    SERVER_MODEL,
    SERVER_SPEED,
    SERVER_UP,
    TASK_CAN_START,
    TASK_MODEL,
    TASK_PATCHES,
    TASK_PRESENT,
    TASK_READY,
    TASK_WAIT,
    TERMINATED,
    TOKEN_KIND,
    TRUNCATED,
)

jit = nb.njit(cache=True, nogil=True, error_model="numpy")
jit_inline = nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
"""For the small functions on the per-step path: inlined at numba IR level into their callers, which saves
passing array structs through a call per use (still callable from Python like any njit function)."""
_NO_REFCOUNT = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}  # a numba option since 0.40
jit_no_refcount = nb.njit(cache=True, nogil=True, error_model="numpy", **_NO_REFCOUNT)
"""For the batch loops: compiled without numba's reference counting. Every array view made in a loop
(``servers[b]``, an observation row) otherwise costs atomic increments and decrements through the runtime,
about 200 indirect calls per env-step that numba's pruning cannot remove from a function this large
(measured: 800 -> 550 ns per env-step, same results). Such a function must not allocate; its callers pass
the scratch arrays in."""


def bind(fn, *args):
    """The compiled entry point of numba function ``fn`` for the types of ``args``.

    Calling it skips numba's per-call type dispatch (about half of a ~2 us call), which matters for a
    simulator stepping 100k+ times per second. Only call it with arguments of exactly these types."""
    sig = tuple(nb.typeof(a) for a in args)
    fn.compile(sig)
    return fn.overloads[sig].entry_point

QUALITY_MIN_STEPS = 5
"""q(s) = 0 below this many steps (SPEC quality model)."""
QUALITY_DIP_STEPS = 30
"""The authors' curve (``quality_dip``) drops to q_max past this many steps."""
MAX_PATCHES = 8.0
"""Patch counts are normalized by this in the observation."""

__all__ = [
    "quality", "launch_reward", "decode_steps", "encode_steps", "visible_queue", "idle_count",
    "find_reuse_group", "select_servers", "plan", "commit_launch", "mean_wait_after", "advance",
    "next_event_time", "settle", "choose", "build_obs", "step_batch", "reset_env",
    "greedy_choice", "collect_step", "harvest_ended",
]


# --- quality and reward ---------------------------------------------------------------------------------
@jit_inline
def quality(steps, q_max):
    """q(s) = 0 for s < 5, else min(q_max, 0.16 ln(s) / ln(6) - 0.02): monotone, no dip past 30 steps."""
    if steps < QUALITY_MIN_STEPS:
        return 0.0
    q = 0.16 * math.log(steps) / math.log(6.0) - 0.02
    return q if q < q_max else q_max


@jit_inline
def quality_dip(steps, q_max):
    """The authors' q(s): 0 below 5 steps, 0.16 ln(s) / ln(6) - 0.02 uncapped up to 30 steps, q_max past 30 (the
    dip SPEC removes: 30 steps score 0.284, 31 score 0.27). ``steps`` may be fractional (``step_decoding="32u"``)."""
    if steps < QUALITY_MIN_STEPS:
        return 0.0
    if steps > QUALITY_DIP_STEPS:
        return q_max
    return 0.16 * math.log(steps) / math.log(6.0) - 0.02


@jit_inline
def _quality_p(p, steps):
    """q(steps) under the config's quality curve."""
    if p.quality_dip == 1:
        return quality_dip(steps, p.q_max)
    return quality(steps, p.q_max)


@jit_inline
def launch_reward(wait, init, exec_s, wbar, q, w_t, w_w, w_q, w_p, q_min, r_max):
    """r = min(r_max, w_t / (w_w Wbar + wait + init + exec)) + w_q q - w_p [q < Q_min]."""
    r = w_t / (w_w * wbar + wait + init + exec_s)
    if r > r_max:
        r = r_max
    r += w_q * q
    if q < q_min:
        r -= w_p
    return r


@jit_inline
def _reward_p(p, wait, init, exec_s, wbar, q):
    return launch_reward(wait, init, exec_s, wbar, q, p.w_t, p.w_w, p.w_q, p.w_p, p.q_min, p.r_max)


# --- action decoding ------------------------------------------------------------------------------------
@jit_inline
def decode_steps(a1, s_min, s_max):
    """s = round(s_min + u (s_max - s_min)) with u = (a1 + 1) / 2 clipped to [0, 1]; halves round up."""
    u = (a1 + 1.0) * 0.5
    if not (u >= 0.0):  # also catches NaN
        u = 0.0
    if u > 1.0:
        u = 1.0
    return int(math.floor(s_min + u * (s_max - s_min) + 0.5))


@jit
def encode_steps(steps, s_min, s_max):
    """The action value a1 that decodes to ``steps`` (inverse of ``decode_steps``)."""
    if s_max == s_min:
        return 0.0
    return 2.0 * (steps - s_min) / (s_max - s_min) - 1.0


@jit
def encode_steps_32u(steps, s_max):
    """The action value a1 that ``step_decoding="32u"`` decodes to ``steps`` (``s_max u = steps``)."""
    return 2.0 * steps / s_max - 1.0


@jit_inline
def _decode_steps_p(p, a1):
    """Steps of action value ``a1`` under the config's decoding, as a float: SPEC's rounding into [s_min, s_max], or
    the authors' ``s_max u`` unrounded (in float32, as their float32 actions compute it, with ``float32``)."""
    if p.steps_32u == 0:
        return float(decode_steps(a1, p.s_min, p.s_max))
    if p.float32 == 1:
        u = np.float32(np.float32(np.float32(a1) + np.float32(1.0)) * np.float32(0.5))
        if not (u >= 0.0):
            u = np.float32(0.0)
        if u > 1.0:
            u = np.float32(1.0)
        return float(np.float32(u * np.float32(p.s_max)))
    u = (a1 + 1.0) * 0.5
    if not (u >= 0.0):
        u = 0.0
    if u > 1.0:
        u = 1.0
    return u * p.s_max


# --- queue and servers ----------------------------------------------------------------------------------
@jit_inline
def visible_queue(tasks, clock, queue_len, out):
    """Indices of the first ``queue_len`` queued tasks, oldest first, into ``out``; returns how many."""
    n = 0
    for i in range(clock.head, clock.n_arrived):
        if tasks[i].state == QUEUED:
            out[n] = i
            n += 1
            if n == queue_len:
                break
    return n


@jit_inline
def _idle(s, t):
    return s.up == 1 and s.busy_until <= t


@jit_inline
def idle_count(servers, t):
    n = 0
    for j in range(servers.shape[0]):
        if _idle(servers[j], t):
            n += 1
    return n


@jit_inline
def find_reuse_group(servers, t, k, model):
    """Id of an idle group of size k holding ``model`` (the one whose slowest member is fastest, then the
    lowest index), or -1 if there is none.

    Relies on the group invariant: a group's members are all idle or all busy (they start and finish one
    task together; the host dissolves the group of a worker that goes down)."""
    n = servers.shape[0]
    best_g = -1
    best_speed = -1.0
    for j in range(n):
        s = servers[j]
        if s.group == NO_GROUP or s.group_size != k or s.model != model or not _idle(s, t):
            continue
        g = s.group
        if g == best_g:
            continue
        slowest = s.speed
        for i in range(j + 1, n):
            if servers[i].group == g and servers[i].speed < slowest:
                slowest = servers[i].speed
        if slowest > best_speed:
            # a group already seen has its first member earlier, so a later match is a new group
            if best_g >= 0:
                seen = False
                for i in range(j):
                    if servers[i].group == g:
                        seen = True
                        break
                if seen:
                    continue
            best_speed = slowest
            best_g = g
    return best_g


@jit_inline
def _take_best(servers, cand, count, model, out, pos):
    """Move the ``count`` best servers of bitmask ``cand`` (fastest, then holding ``model``, then lowest
    index) into ``out[pos:]``. Returns (new position, remaining candidate mask)."""
    n = servers.shape[0]
    for _ in range(count):
        best = -1
        for j in range(n):
            if not (cand >> j) & 1:
                continue
            if best < 0:
                best = j
                continue
            sj = servers[j]
            sb = servers[best]
            if sj.speed > sb.speed or (sj.speed == sb.speed and sj.model == model and sb.model != model):
                best = j
        cand &= ~(np.int64(1) << np.int64(best))
        out[pos] = best
        pos += 1
    return pos, cand


@jit_inline
def _members(servers, t, g):
    """Bitmask of the idle members of group g."""
    m = np.int64(0)
    for j in range(servers.shape[0]):
        if servers[j].group == g and _idle(servers[j], t):
            m |= np.int64(1) << np.int64(j)
    return m


@jit_inline
def select_servers(servers, t, k, model, out, work):
    """Paper V-B4 server selector. Writes k server indices into ``out``; returns (k, reuse).

    1. An idle group of size k holding the model exists: take it (reuse, no init).
    2. Otherwise take idle ungrouped servers first; if more are needed, break the idle groups that
       de-group the fewest servers: the smallest single group that covers the shortfall, or the smallest
       groups in ascending size, whichever de-groups fewer servers (the single group on ties).
    The caller guarantees at least k idle servers. ``work`` is int64 scratch of length >= 2 N.
    """
    n = servers.shape[0]
    g = find_reuse_group(servers, t, k, model)
    if g >= 0:
        c = 0
        for j in range(n):
            if servers[j].group == g:
                out[c] = j
                c += 1
        return c, True

    free = np.int64(0)
    n_free = 0
    for j in range(n):
        if _idle(servers[j], t) and servers[j].group == NO_GROUP:
            free |= np.int64(1) << np.int64(j)
            n_free += 1
    pos, _ = _take_best(servers, free, k if n_free >= k else n_free, model, out, 0)
    need = k - pos
    if need == 0:
        return k, False

    # idle groups (id, size) in order of first member, then sorted by size (stable insertion sort)
    gid = work[:n]
    gsz = work[n : 2 * n]
    ng = 0
    for j in range(n):
        s = servers[j]
        if s.group == NO_GROUP or not _idle(s, t):
            continue
        seen = False
        for q in range(ng):
            if gid[q] == s.group:
                seen = True
                break
        if not seen:
            q = ng
            while q > 0 and gsz[q - 1] > s.group_size:
                gid[q] = gid[q - 1]
                gsz[q] = gsz[q - 1]
                q -= 1
            gid[q] = s.group
            gsz[q] = s.group_size
            ng += 1
    # option A: the smallest single group covering the shortfall (first such in the sorted order)
    a_idx = -1
    for q in range(ng):
        if gsz[q] >= need:
            a_idx = q
            break
    # option B: groups in ascending size until the shortfall is covered
    b_cost = 0
    b_count = 0
    while b_cost < need and b_count < ng:
        b_cost += gsz[b_count]
        b_count += 1
    if a_idx >= 0 and gsz[a_idx] <= b_cost:
        pos, _ = _take_best(servers, _members(servers, t, gid[a_idx]), need, model, out, pos)
    else:
        for q in range(b_count):
            m = gsz[q] if gsz[q] <= k - pos else k - pos
            pos, _ = _take_best(servers, _members(servers, t, gid[q]), m, model, out, pos)
    return pos, False


@jit_inline
def select_first_idle(servers, t, k, model, out):
    """The authors' selector (``selector="first-idle"``): the first idle group of exactly k servers holding the model
    (by its lowest server index), else the first k idle servers by index, grouped or not. Returns (k, reuse)."""
    n = servers.shape[0]
    for j in range(n):
        s = servers[j]
        if s.group == NO_GROUP or s.group_size != k or s.model != model or not _idle(s, t):
            continue
        g = s.group
        c = 0
        for i in range(j, n):
            if servers[i].group == g:
                out[c] = i
                c += 1
        return c, True
    c = 0
    for j in range(n):
        if _idle(servers[j], t):
            out[c] = j
            c += 1
            if c == k:
                break
    return c, False


@jit_inline
def plan(servers, t, k, model, p, step_time, init_time, out, work):
    """Choose servers for a task of k patches (into ``out``) and price it without changing anything.

    Returns (count, reuse, init_seconds, seconds_per_step). ``work``: int64 scratch of length >= 2 N."""
    if p.first_idle == 1:
        c, reuse = select_first_idle(servers, t, k, model, out)
    else:
        c, reuse = select_servers(servers, t, k, model, out, work)
    slowest = 1e300
    all_hold = True
    for q in range(c):
        s = servers[out[q]]
        if s.speed < slowest:
            slowest = s.speed
        if s.model != model:
            all_hold = False
    if reuse:
        init = 0.0
    elif p.regroup_time >= 0.0 and all_hold:
        init = p.regroup_time
    else:
        init = init_time[k]
    return c, reuse, init, step_time[k] / slowest


@jit_inline
def mean_wait_after(tasks, clock, queue_len, skip):
    """Wbar: mean waiting time of the visible queue once task ``skip`` has left it (0 if empty)."""
    n = 0
    total = 0.0
    t = clock.time
    for i in range(clock.head, clock.n_arrived):
        if i != skip and tasks[i].state == QUEUED:
            total += t - tasks[i].arrival
            n += 1
            if n == queue_len:
                break
    return total / n if n > 0 else 0.0


@jit_inline
def _dissolve(servers, g):
    for j in range(servers.shape[0]):
        if servers[j].group == g:
            servers[j].group = NO_GROUP
            servers[j].group_size = 0


@jit_inline
def _exec_seconds(p, steps, init, step_s):
    """Execution seconds of a launch; with ``float32`` the authors' float32 arithmetic: duration = f32(f32(f32(step
    time) x f32(steps)) + init), returned as duration - init."""
    if p.float32 == 0:
        return steps * step_s
    d = np.float32(np.float32(np.float32(step_s) * np.float32(steps)) + np.float32(init))
    return float(d) - init


@jit_inline
def _grid_release(p, t, duration):
    """``mode="grid"``: the grid time at which servers that start a task of ``duration`` s at grid time ``t`` are
    free again, summed one tick at a time as the clock is. The authors count a float32 remaining time down by the
    tick and free the servers once it is <= 0 (at least one tick later); without ``float32``: the first grid time
    at or after t + duration, and at least one tick later."""
    tick = p.tick
    u = t + tick
    if p.float32 == 1:
        dt = np.float32(tick)
        r = np.float32(np.float32(duration) - dt)
        while r > 0.0:
            r = np.float32(r - dt)
            u += tick
    else:
        end = t + duration
        while u < end:
            u += tick
    return u


@jit_inline
def commit_launch(servers, tasks, clock, p, i, steps, sel, count, reuse, init, step_s):
    """Start task i now on servers ``sel[:count]`` with ``steps`` denoising steps; returns its reward.

    A reload dissolves every group a chosen server belonged to and forms a new group of the chosen set."""
    t = clock.time
    task = tasks[i]
    model = task.model
    if reuse:
        g_new = servers[sel[0]].group
    else:
        for q in range(count):
            g_old = servers[sel[q]].group
            if g_old != NO_GROUP:
                _dissolve(servers, g_old)
        g_new = clock.next_group
        clock.next_group += 1
    exec_s = _exec_seconds(p, steps, init, step_s)
    finish = t + init + exec_s
    free = finish if p.grid_mode == 0 else _grid_release(p, t, init + exec_s)
    mask = 0
    for q in range(count):
        s = servers[sel[q]]
        s.busy_until = free
        s.model = model
        s.group = g_new
        s.group_size = count
        mask |= np.int64(1) << np.int64(sel[q])
    q_s = _quality_p(p, steps)
    wait = t - task.arrival
    wbar = mean_wait_after(tasks, clock, p.queue_len, i)
    r = _reward_p(p, wait, init, exec_s, wbar, q_s)
    task.state = RUNNING
    task.start = t
    task.finish = finish
    task.init = init
    task.exec = exec_s
    task.steps = int(steps)  # whole steps (``step_decoding="32u"`` steps are fractional; exec has them exactly)
    task.quality = q_s
    task.reload = 0 if reuse else 1
    task.servers = mask
    task.order = clock.n_launched
    task.reward = r
    while clock.head < clock.n_arrived and tasks[clock.head].state != QUEUED:
        clock.head += 1
    clock.n_launched += 1
    if not reuse:
        clock.n_reload += 1
    return r


# --- time -----------------------------------------------------------------------------------------------
@jit_inline
def advance(tasks, clock, t_new):
    """Move the clock to ``t_new``: finish tasks whose end has passed, enqueue tasks that have arrived."""
    clock.time = t_new
    for i in range(clock.first_open, clock.n_arrived):
        if tasks[i].state == RUNNING and tasks[i].finish <= t_new:
            tasks[i].state = DONE
            clock.n_done += 1
    while clock.first_open < clock.n_arrived and tasks[clock.first_open].state == DONE:
        clock.first_open += 1
    while clock.n_arrived < clock.n_tasks and tasks[clock.n_arrived].arrival <= t_new:
        tasks[clock.n_arrived].state = QUEUED
        clock.n_arrived += 1


@jit_inline
def next_event_time(tasks, clock):
    """Earliest future arrival or completion (inf if none)."""
    te = math.inf
    if clock.n_arrived < clock.n_tasks:
        te = tasks[clock.n_arrived].arrival
    for i in range(clock.first_open, clock.n_arrived):
        if tasks[i].state == RUNNING and tasks[i].finish < te:
            te = tasks[i].finish
    return te


@jit_inline
def _move_to(tasks, clock, t_new, time_limit):
    """Advance to t_new, or truncate at the time limit. Returns False if the episode was truncated."""
    if t_new > time_limit:
        advance(tasks, clock, time_limit)
        clock.status = TRUNCATED
        return False
    advance(tasks, clock, t_new)
    return True


@jit_inline
def _jump_to(tasks, clock, te, p):
    """Advance to the event at ``te`` (or truncate): exactly there, or with ``mode="grid"`` to the first grid time
    at or after it, reached one tick at a time as the authors' clock is. Returns False if truncated."""
    if p.grid_mode == 1 and te < math.inf:
        t = clock.time
        while t < te and t <= p.time_limit:
            t += p.tick
        te = t
    return _move_to(tasks, clock, te, p.time_limit)


@jit_inline
def _servers_scan(servers, t):
    """Idle servers at time t and the earliest time a busy one frees up (inf if none), in one branch-free
    pass. In the simulator a busy server's ``busy_until`` is its running task's finish time, so the second
    value is the earliest completion (``next_event_time`` finds the same by scanning the tasks)."""
    idle = 0
    free_at = math.inf
    for j in range(servers.shape[0]):
        bu = servers[j].busy_until
        idle += (servers[j].up == 1) & (bu <= t)
        free_at = min(free_at, bu if bu > t else math.inf)
    return idle, free_at


@jit_inline
def _min_visible_patches(tasks, clock, queue_len):
    """Fewest patches among the visible queued tasks (a large number if the queue is empty)."""
    n = 0
    m = 1 << 30
    for i in range(clock.head, clock.n_arrived):
        if tasks[i].state == QUEUED:
            m = min(m, tasks[i].patches)
            n += 1
            if n == queue_len:
                break
    return m


@jit_inline
def settle(servers, tasks, clock, p):
    """Jump ahead while no visible task can start: nothing the policy does can matter before the next
    arrival or completion. Ends the episode when every task is done (terminated) or time runs out.

    Simulator only (it reads completions off the servers, see ``_servers_scan``); this loop is most of a
    step's cost, so each round is one pass over the servers and one over the visible queue."""
    while clock.status == ACTIVE:
        if clock.n_done == clock.n_tasks:
            clock.status = TERMINATED
            return
        idle, free_at = _servers_scan(servers, clock.time)
        if _min_visible_patches(tasks, clock, p.queue_len) <= idle:
            return
        te = free_at
        if clock.n_arrived < clock.n_tasks and tasks[clock.n_arrived].arrival < te:
            te = tasks[clock.n_arrived].arrival
        if te == math.inf and clock.n_done < clock.n_arrived:
            # grid mode only: servers freed on the grid a hair before their task's float32 end
            te = next_event_time(tasks, clock)
        if not _jump_to(tasks, clock, te, p):
            return


# --- decisions ------------------------------------------------------------------------------------------
@jit_inline
def choose(servers, tasks, clock, p, action, vis):
    """Decode ``action`` (SPEC V-A2) into (task index or -1 for no-op, steps).

    u = (a + 1) / 2; u[0] >= 0.5 means execute now; steps from u[1]; u[2:] scores the visible tasks.
    Default rule: the highest-scored task among those that can start now. ``paper_literal``: the
    highest-scored visible task, no-op if it cannot start. Empty slots never win; ties go to the older."""
    if not (action[0] >= 0.0):
        return -1, 0.0
    nv = visible_queue(tasks, clock, p.queue_len, vis)
    idle = idle_count(servers, clock.time)
    best = -1
    best_score = -math.inf
    if p.empty_slots_win == 1:  # the authors' argmax over every slot; an empty winner is a no-op
        for q in range(p.queue_len):
            sc = action[2 + q]
            if best < 0 or sc > best_score:
                best = q
                best_score = sc
        if best >= nv:
            return -1, 0.0
        nv = 0  # the rule below is skipped
    for q in range(nv):
        if p.paper_literal == 0 and tasks[vis[q]].patches > idle:
            continue
        sc = action[2 + q]
        if not (sc == sc):  # NaN never wins
            continue
        if best < 0 or sc > best_score:
            best = q
            best_score = sc
    if best < 0:
        return -1, 0.0
    i = vis[best]
    if tasks[i].patches > idle:
        return -1, 0.0
    return i, _decode_steps_p(p, action[1])


@jit_inline
def build_obs(servers, tasks, clock, p, out):
    """Token matrix (L + N rows, 7 columns), every feature normalized (see ``sim.env`` for the table)."""
    L = p.queue_len
    n = servers.shape[0]
    t = clock.time
    inv_ts = 1.0 / p.time_scale  # multiplications instead of divisions: this runs on every step
    inv_models = 1.0 / p.n_models
    inv_n = 1.0 / n
    inv_speed = 1.0 / p.speed_max
    tmax = p.time_limit * inv_ts
    idle = 0
    ready = np.int64(0)  # bit (model * 9 + k): an idle group of size k holding the model exists
    for j in range(n):
        s = servers[j]
        row = out[L + j]
        busy_until = s.busy_until
        is_idle = s.up == 1 and busy_until <= t
        if is_idle:
            idle += 1
            if s.group != NO_GROUP:
                key = s.model * 9 + s.group_size
                if key < 63:
                    ready |= np.int64(1) << np.int64(key)
        rem = (busy_until - t) * inv_ts
        row[TOKEN_KIND] = KIND_SERVER
        row[SERVER_IDLE] = 1.0 if is_idle else 0.0
        row[SERVER_BUSY_FOR] = 0.0 if rem <= 0.0 else (rem if rem < tmax else tmax)
        row[SERVER_MODEL] = (s.model + 1) * inv_models
        row[SERVER_GROUP] = s.group_size * inv_n
        row[SERVER_SPEED] = s.speed * inv_speed
        row[SERVER_UP] = 1.0 if s.up == 1 else 0.0
    r = 0
    for i in range(clock.head, clock.n_arrived):
        if r == L:
            break
        task = tasks[i]
        if task.state != QUEUED:
            continue
        row = out[r]
        w = (t - task.arrival) * inv_ts
        k = task.patches
        can = k <= idle
        key = task.model * 9 + k
        if key < 63:
            has_group = (ready >> np.int64(key)) & 1 == 1
        else:
            has_group = find_reuse_group(servers, t, k, task.model) >= 0
        row[TOKEN_KIND] = KIND_TASK
        row[TASK_PRESENT] = 1.0
        row[TASK_WAIT] = w if w < tmax else tmax
        row[TASK_PATCHES] = k * (1.0 / MAX_PATCHES)
        row[TASK_MODEL] = (task.model + 1) * inv_models
        row[TASK_CAN_START] = 1.0 if can else 0.0
        row[TASK_READY] = 1.0 if can and has_group else 0.0
        r += 1
    for q in range(r, L):
        row = out[q]
        for c in range(row.shape[0]):
            row[c] = 0.0


@jit_inline
def time_in_system(tasks, clock):
    """Model seconds every arrived task has spent in the system (waiting or running) up to now: the sum of the
    response times so far. Its growth over a step is the integral of the number of tasks in the system."""
    t = clock.time
    total = 0.0
    for i in range(clock.n_arrived):
        task = tasks[i]
        end = t
        if (task.state == RUNNING or task.state == DONE) and task.finish < t:
            end = task.finish
        if end > task.arrival:
            total += end - task.arrival
    return total


@jit_inline
def _step_one(servers, tasks, clock, p, step_time, init_time, action, vis, sel, work):
    clock.decisions += 1
    response = p.response_reward == 1
    before = time_in_system(tasks, clock) if response else 0.0
    i, steps = choose(servers, tasks, clock, p, action, vis)
    reward = 0.0
    if i >= 0:
        task = tasks[i]
        c, reuse, init, step_s = plan(servers, clock.time, task.patches, task.model, p, step_time, init_time,
                                      sel, work)
        reward = commit_launch(servers, tasks, clock, p, i, steps, sel, c, reuse, init, step_s)
        if response:  # the launch earns its quality term only; time is paid below, as it passes
            q_s = tasks[i].quality
            reward = p.w_q * q_s - (p.w_p if q_s < p.q_min else 0.0)
        # time does not advance after a launch: several tasks may start at one instant
    elif p.event_mode == 1:
        _move_to(tasks, clock, next_event_time(tasks, clock), p.time_limit)
    else:
        _move_to(tasks, clock, clock.time + p.tick, p.time_limit)
    settle(servers, tasks, clock, p)
    if response:
        reward -= p.w_r * (time_in_system(tasks, clock) - before)
    return reward


INFO_TIME, INFO_QUEUED, INFO_LAUNCHED, INFO_DONE, INFO_RELOADS, INFO_STATUS, INFO_REWARD = range(7)
N_INFO = 7


@jit_inline
def _write_info(tasks, clock, out, reward):
    """Counters for the env's info dict and the step's reward, as one float vector (one cheap read)."""
    queued = clock.n_arrived - clock.n_launched  # every launched task has arrived
    out[INFO_TIME] = clock.time
    out[INFO_QUEUED] = queued
    out[INFO_LAUNCHED] = clock.n_launched
    out[INFO_DONE] = clock.n_done
    out[INFO_RELOADS] = clock.n_reload
    out[INFO_STATUS] = clock.status
    out[INFO_REWARD] = reward


@jit
def _write_mask(obs, mask):
    """Action mask: visible tasks that can start now (the observation's can-start column)."""
    for q in range(mask.shape[0]):
        mask[q] = obs[q, TASK_CAN_START] == 1.0


@jit
def step_batch(servers, tasks, clock, params, step_time, init_time, actions, obs, info, mask):
    """One step of every env in the batch: decide, launch or wait, jump ahead, observe.

    Writes each env's observation into ``obs[b]``, its counters and the step's reward into ``info[b]``
    (``INFO_*`` columns) and its action mask into ``mask[b]``. Envs whose episode already ended are
    left untouched (reward 0)."""
    vis, sel, work = _scratch(params[0].queue_len, servers.shape[1])
    _step_chunk(servers, tasks, clock, params, step_time, init_time, actions, obs, info, mask, 0, servers.shape[0],
                vis, sel, work)


@jit_inline
def _scratch(queue_len, n):
    """Scratch arrays of one batch loop: visible-queue slots, selected servers, selector work space."""
    return np.empty(queue_len, np.int64), np.empty(n, np.int64), np.empty(2 * n, np.int64)


PARALLEL_CHUNK = 64
"""Envs per parallel work item of ``step_batch_parallel``."""


@jit_no_refcount
def _step_chunk(servers, tasks, clock, params, step_time, init_time, actions, obs, info, mask, lo, hi, vis, sel,
                work):
    # the body is written out here rather than in a per-env function: passing a dozen array views per env
    # cost ~200 ns per env-step (measured), a fifth of the whole step
    p = params[0]
    L = mask.shape[1]
    for b in range(lo, hi):
        sv = servers[b]
        tk = tasks[b]
        ck = clock[b]
        if ck.status != ACTIVE:
            info[b, INFO_REWARD] = 0.0
            continue
        r = _step_one(sv, tk, ck, p, step_time, init_time, actions[b], vis, sel, work)
        ob = obs[b]
        build_obs(sv, tk, ck, p, ob)
        _write_info(tk, ck, info[b], r)
        for q in range(L):
            mask[b, q] = ob[q, 5] == 1.0


@jit
def collect_step(info, returns, rewards, terminated, truncated, ended):
    """After a batch step: each env's reward, termination and truncation into the given arrays, rewards added
    to the running episode ``returns``, and the indices of envs whose episode ended into ``ended``; returns
    how many ended. One compiled pass instead of a handful of NumPy calls on the batch."""
    n = 0
    for b in range(info.shape[0]):
        r = info[b, INFO_REWARD]
        rewards[b] = r
        returns[b] += r
        s = info[b, INFO_STATUS]
        terminated[b] = s == TERMINATED
        truncated[b] = s == TRUNCATED
        if s != ACTIVE:
            ended[n] = b
            n += 1
    return n


@jit
def harvest_ended(ended, obs, returns, clock, task_bytes):
    """Copies of what the envs ``ended`` leave behind before their auto-reset overwrites it: last
    observations, episode returns (then zeroed), task rows as raw bytes and task counts. One compiled call
    instead of a NumPy fancy-index copy per array."""
    m = ended.shape[0]
    final_obs = np.empty((m,) + obs.shape[1:], obs.dtype)
    ep_return = np.empty(m)
    rows = np.empty((m, task_bytes.shape[1]), np.uint8)
    counts = np.empty(m, np.int64)
    for q in range(m):
        b = ended[q]
        final_obs[q] = obs[b]
        ep_return[q] = returns[b]
        returns[b] = 0.0
        rows[q] = task_bytes[b]
        counts[q] = clock[b].n_tasks
    return final_obs, ep_return, rows, counts


@nb.njit(cache=True, nogil=True, parallel=True)
def step_batch_parallel(servers, tasks, clock, params, step_time, init_time, actions, obs, info, mask):
    """``step_batch`` with the envs spread over the CPU cores in chunks (for large batches)."""
    nb_env = servers.shape[0]
    chunks = (nb_env + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK
    for c in nb.prange(chunks):
        hi = min((c + 1) * PARALLEL_CHUNK, nb_env)
        vis, sel, work = _scratch(params[0].queue_len, servers.shape[1])
        _step_chunk(servers, tasks, clock, params, step_time, init_time, actions, obs, info, mask,
                    c * PARALLEL_CHUNK, hi, vis, sel, work)


@jit_no_refcount
def reset_env(servers, tasks, clock, params, speeds, arrival, patches, models, obs, info, mask):
    """Start a new episode in one env: servers idle and empty, the workload loaded, the clock at the
    first decision point, the observation written."""
    p = params[0]
    for j in range(servers.shape[0]):
        s = servers[j]
        s.busy_until = 0.0
        s.speed = speeds[j]
        s.model = NO_MODEL
        s.group = NO_GROUP
        s.group_size = 0
        s.up = 1
    n = arrival.shape[0]
    for i in range(tasks.shape[0]):
        t = tasks[i]
        t.arrival = arrival[i] if i < n else math.inf
        t.patches = patches[i] if i < n else 0
        t.model = models[i] if i < n else 0
        t.start = math.nan
        t.finish = math.nan
        t.init = 0.0
        t.exec = 0.0
        t.quality = 0.0
        t.reward = 0.0
        t.steps = 0
        t.state = FUTURE
        t.reload = 0
        t.servers = 0
        t.order = -1
    clock.time = p.clock_start
    clock.n_tasks = n
    clock.n_arrived = 0
    clock.head = 0
    clock.first_open = 0
    clock.n_launched = 0
    clock.n_done = 0
    clock.n_reload = 0
    clock.next_group = 0
    clock.status = ACTIVE
    clock.decisions = 0
    advance(tasks, clock, clock.time)  # tasks queued before the clock starts (``prequeued``) are there at once
    settle(servers, tasks, clock, p)
    build_obs(servers, tasks, clock, p, obs)
    _write_info(tasks, clock, info, 0.0)
    _write_mask(obs, mask)


@jit_no_refcount
def reset_batch(servers, tasks, clock, params, speeds, arrival, patches, models, obs, info, mask):
    """``reset_env`` for a batch of one (the single env's entry point)."""
    reset_env(servers[0], tasks[0], clock[0], params, speeds, arrival, patches, models, obs[0], info[0], mask[0])


@jit_no_refcount
def reset_many(servers, tasks, clock, params, speeds, idx, arrival, patches, models, counts, obs, info, mask):
    """``reset_env`` for envs ``idx``; workload q (row q of arrival/patches/models, ``counts[q]`` tasks)
    goes to env ``idx[q]``."""
    for q in range(idx.shape[0]):
        b = idx[q]
        n = counts[q]
        reset_env(servers[b], tasks[b], clock[b], params, speeds, arrival[q, :n], patches[q, :n], models[q, :n],
                  obs[b], info[b], mask[b])


@jit
def greedy_choice(servers, tasks, clock, params, step_time, init_time):
    """Best immediate reward over (visible task that can start) x (steps in [s_min, s_max]), priced with
    the same selector and reward as a real launch, without changing the state. Returns (slot, steps,
    reward); slot -1 if nothing can start. Ties go to the older task and to fewer steps."""
    p = params[0]
    vis = np.empty(p.queue_len, np.int64)
    sel = np.empty(servers.shape[0], np.int64)
    work = np.empty(2 * servers.shape[0], np.int64)
    nv = visible_queue(tasks, clock, p.queue_len, vis)
    idle = idle_count(servers, clock.time)
    best_slot, best_steps, best_r = -1, 0, -math.inf
    # ``greedy_slot_defect``: the authors' agent always ends up at the most steps; ``greedy_unpriced``: it prices a
    # task before its duration exists (init = exec = 0) with the task still in the queue's mean wait
    s_lo = p.s_max if p.greedy_slot_defect == 1 else p.s_min
    unpriced = p.greedy_unpriced == 1
    for q in range(nv):
        task = tasks[vis[q]]
        if task.patches > idle:
            continue
        c, reuse, init, step_s = plan(servers, clock.time, task.patches, task.model, p, step_time, init_time,
                                      sel, work)
        wait = clock.time - task.arrival
        wbar = mean_wait_after(tasks, clock, p.queue_len, -1 if unpriced else vis[q])
        for s in range(s_lo, p.s_max + 1):
            if unpriced:
                r = _reward_p(p, wait, 0.0, 0.0, wbar, _quality_p(p, s))
            else:
                r = _reward_p(p, wait, init, _exec_seconds(p, s, init, step_s), wbar, _quality_p(p, s))
            if r > best_r:
                best_slot, best_steps, best_r = q, s, r
    return best_slot, best_steps, best_r
