"""The scheduler facade the serving host uses: the compiled core (``core.kernel``) on a real cluster.

The host holds no scheduling logic of its own. It tells this class what happened (a worker came or
went, a task arrived, finished or failed) and asks ``decide(now)`` what to start; ``decide`` runs the
simulator's own functions on the ``core.state`` record arrays (a batch of one):

1. ``build_obs`` shows the policy the queue (a snapshot of the first L + 1 queued tasks, oldest first)
   and the servers;
2. the policy's action goes through ``choose`` (which visible task, how many steps);
3. ``plan`` picks the servers (the paper's selector, group reuse) and prices the launch with the time
   tables of the online ``TimePredictor``;
4. ``commit_launch`` does the group bookkeeping (dissolving groups, forming the new one).

It repeats until the policy waits or nothing can start (time does not advance after a launch, as in
the simulator). Time is whatever clock the caller uses (the host: model seconds since it started).

Server j is idle for the kernel iff ``up == 1 and busy_until <= now``. While a task runs on real
workers its servers are *held*: ``busy_until`` stays at max(predicted finish, now + ``HOLD_EPS``) until
the workers report, then drops to now. A server that went down gets ``up = 0`` and its group dissolves.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from . import kernel
from .config import EATConfig
from .policy import Policy, StateView
from .predictor import TimePredictor
from .state import (
    DONE,
    NO_GROUP,
    NO_MODEL,
    QUEUED,
    TASK,
    TASK_CAN_START,
    allocate,
    make_params,
    make_time_tables,
)

HOLD_EPS = 1e-3
"""How far past ``now`` a held server's ``busy_until`` is kept while its task runs past its prediction."""


@dataclass(frozen=True)
class Launch:
    """One decision: start ``task_id`` now with ``steps`` steps on ``servers`` (indices, rank order)."""

    task_id: str
    steps: int
    servers: tuple[int, ...]
    reuse: bool  # the servers are exactly an idle group holding the model: no init
    group: int  # kernel group id of the servers after the launch
    predicted_init: float
    predicted_exec: float
    quality: float  # the quality model's estimate q(steps)
    reward: float


@dataclass
class _Queued:
    task_id: str
    patches: int
    model: int
    arrival: float
    seq: int

    @property
    def key(self) -> tuple[float, int]:
        return (self.arrival, self.seq)


@dataclass
class _Running:
    launch: Launch
    patches: int
    model: int
    arrival: float
    seq: int
    finish: float  # predicted


class ClusterScheduler:
    """Queue + cluster state for the host, decided by ``policy`` through the shared compiled core."""

    def __init__(self, config: EATConfig, policy: Policy, predictor: TimePredictor | None = None):
        self.config = config
        self.policy = policy
        self.predictor = predictor or TimePredictor(config.time_profile)
        n, L = config.nodes, config.queue_len
        self.servers, _, self.clock = allocate(config, 1, max_tasks=1)
        self.tasks = np.zeros((1, L + 1), TASK)
        self.params = make_params(config)
        self.step_time, self.init_time = make_time_tables(config)
        s = self.servers[0]
        s["speed"] = np.asarray(config.server_speeds)
        s["model"] = NO_MODEL
        s["group"] = NO_GROUP
        s["up"] = 0  # a slot is usable once a worker registers for it
        self.names: list[str | None] = [None] * n
        self.held = np.zeros(n, bool)
        self._obs = np.zeros((config.token_rows, 7), np.float32)
        self._vis = np.empty(L, np.int64)
        self._sel = np.empty(n, np.int64)
        self._work = np.empty(2 * n, np.int64)
        self._queue: list[tuple[float, int, str]] = []  # (arrival, seq, task_id), sorted: arrival order
        self._queued: dict[str, _Queued] = {}
        self.running: dict[str, _Running] = {}
        self._seq = 0
        self._tables_version = -1
        # the same views the simulator hands out, so state-pricing policies (greedy) work unchanged
        self.view = StateView(self.servers, self.tasks, self.clock, self.params, self.step_time, self.init_time)
        if policy.needs_state:
            policy.attach(self.view)
        policy.reset(0)

    # --- servers --------------------------------------------------------------------------------------
    def add_server(self, name: str, speed: float | None = None) -> int:
        """Slot index for worker ``name`` (the same slot when it comes back); marks it up, cold, ungrouped."""
        if name in self.names:
            j = self.names.index(name)
        elif None in self.names:
            j = self.names.index(None)
            self.names[j] = name
        else:
            raise ValueError(f"the cluster is full: {self.config.nodes} servers are configured (--nodes)")
        s = self.servers[0]
        self._dissolve(j)
        s[j]["model"] = NO_MODEL
        s[j]["up"] = 1
        if speed is not None:
            if not speed > 0:
                raise ValueError(f"speed must be > 0, got {speed}")
            s[j]["speed"] = speed
            self.params[0]["speed_max"] = max(float(s["speed"].max()), 1e-9)
        return j

    def server_down(self, j: int) -> list[str]:
        """Take server j out; returns the running tasks that used it (the caller re-queues or aborts them)."""
        self.servers[0][j]["up"] = 0
        self._dissolve(j)
        return [tid for tid, r in self.running.items() if j in r.launch.servers]

    def hold(self, j: int, on: bool, now: float) -> None:
        """Keep server j busy (a worker still runs something the host no longer tracks), or release it."""
        self.held[j] = on
        if not on and j not in self._running_servers():
            self.servers[0][j]["busy_until"] = now

    def _dissolve(self, j: int) -> None:
        s = self.servers[0]
        g = s[j]["group"]
        if g != NO_GROUP:
            members = s["group"] == g
            s["group"][members] = NO_GROUP
            s["group_size"][members] = 0

    def _running_servers(self) -> set[int]:
        return {j for r in self.running.values() for j in r.launch.servers}

    # --- tasks ----------------------------------------------------------------------------------------
    def enqueue(self, task_id: str, patches: int, model: int, arrival: float) -> None:
        """A task arrived (or came back after a failure: it keeps its place by arrival time)."""
        if task_id in self._queued or task_id in self.running:
            raise ValueError(f"task {task_id} is already queued or running")
        if patches > self.config.nodes:
            raise ValueError(f"a task of {patches} patches cannot run on {self.config.nodes} servers")
        if not 0 <= model < self.config.n_models:
            raise ValueError(f"model index {model} out of range (n_models={self.config.n_models})")
        self._seq += 1
        q = _Queued(task_id, int(patches), int(model), float(arrival), self._seq)
        self._queued[task_id] = q
        bisect.insort(self._queue, (q.arrival, q.seq, task_id))

    def cancel(self, task_id: str) -> bool:
        """Drop a queued task; False if it is not queued (unknown, running or done)."""
        q = self._queued.pop(task_id, None)
        if q is None:
            return False
        self._queue.remove((q.arrival, q.seq, task_id))
        return True

    def finish(self, task_id: str, now: float) -> Launch:
        """The task's workers all reported: free its servers (their group stays formed for reuse)."""
        r = self.running.pop(task_id)
        s = self.servers[0]
        for j in r.launch.servers:
            if not self.held[j]:
                s[j]["busy_until"] = now
        return r.launch

    def abort(self, task_id: str, now: float, *, requeue: bool = True) -> Launch:
        """The task failed mid-run: free what the host still controls and put it back in the queue."""
        r = self.running.pop(task_id)
        s = self.servers[0]
        for j in r.launch.servers:
            self._dissolve(j)  # a half-run group cannot be trusted for reuse
            if not self.held[j]:
                s[j]["busy_until"] = now
        if requeue:
            self.enqueue(task_id, r.patches, r.model, r.arrival)
        return r.launch

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def queued_ids(self) -> list[str]:
        return [tid for _, _, tid in self._queue]

    # --- deciding -------------------------------------------------------------------------------------
    def _sync(self, now: float) -> None:
        """Bring the kernel's view up to ``now``: held and running servers stay busy, tables current."""
        s = self.servers[0]
        busy = self.held.copy()
        for r in self.running.values():
            for j in r.launch.servers:
                busy[j] = True
        bu = s["busy_until"]
        floor = now + HOLD_EPS
        s["busy_until"] = np.where(busy, np.maximum(bu, floor), np.minimum(bu, now))
        if self._tables_version != self.predictor.version:
            self.predictor.fill_tables(self.step_time, self.init_time)
            self._tables_version = self.predictor.version

    def _snapshot(self, now: float) -> list[_Queued]:
        """Write the first L + 1 queued tasks (oldest first) into the task rows: all the kernel ever
        looks at (L visible tasks, plus one for the queue's mean wait after a launch)."""
        rows = [self._queued[tid] for _, _, tid in self._queue[: self.tasks.shape[1]]]
        t = self.tasks[0]
        n = len(rows)
        t["state"][:] = DONE
        t["order"][:] = -1
        if n:
            t["arrival"][:n] = [q.arrival for q in rows]
            t["patches"][:n] = [q.patches for q in rows]
            t["model"][:n] = [q.model for q in rows]
            t["state"][:n] = QUEUED
        c = self.clock[0]
        c["time"] = now
        c["n_tasks"] = n
        c["n_arrived"] = n
        c["head"] = 0
        c["first_open"] = 0
        return rows

    def observe(self, now: float) -> tuple[np.ndarray, dict]:
        """The observation and info dict the policy sees at ``now`` (as the simulator builds them)."""
        self._sync(now)
        self._snapshot(now)
        kernel.build_obs(self.servers[0], self.tasks[0], self.clock[0], self.params[0], self._obs)
        L = self.config.queue_len
        return self._obs.copy(), {"action_mask": self._obs[:L, TASK_CAN_START] == 1.0, "time": now,
                                  "queued": self.queue_length}

    def decide(self, now: float) -> list[Launch]:
        """Ask the policy until it waits or nothing can start; every launch is committed to the state."""
        launches: list[Launch] = []
        if not self._queue:
            return launches
        self._sync(now)
        s = self.servers[0]
        if not ((s["up"] == 1) & (s["busy_until"] <= now)).any():
            return launches  # nothing can start: no need to ask the policy
        p = self.params[0]
        for _ in range(self.config.nodes):  # at most one launch per server
            if not self._queue:
                break
            rows = self._snapshot(now)
            obs, info = self._obs, None
            kernel.build_obs(self.servers[0], self.tasks[0], self.clock[0], p, obs)
            info = {"action_mask": obs[: self.config.queue_len, TASK_CAN_START] == 1.0, "time": now,
                    "queued": self.queue_length}
            if not info["action_mask"].any():
                break
            action = np.asarray(self.policy.act(obs.copy(), info), np.float64)
            i, steps = kernel.choose(self.servers[0], self.tasks[0], self.clock[0], p, action, self._vis)
            if i < 0:
                break
            q = rows[i]
            count, reuse, init, step_s = kernel.plan(self.servers[0], now, q.patches, q.model, p, self.step_time,
                                                     self.init_time, self._sel, self._work)
            sel = tuple(sorted(int(j) for j in self._sel[:count]))
            reward = kernel.commit_launch(self.servers[0], self.tasks[0], self.clock[0], p, i, steps, self._sel,
                                          count, reuse, init, step_s)
            row = self.tasks[0][i]
            launch = Launch(task_id=q.task_id, steps=int(steps), servers=sel, reuse=bool(reuse),
                            group=int(self.servers[0][sel[0]]["group"]), predicted_init=float(init),
                            predicted_exec=float(row["exec"]), quality=float(row["quality"]), reward=float(reward))
            del self._queued[q.task_id]
            self._queue.remove((q.arrival, q.seq, q.task_id))
            self.running[q.task_id] = _Running(launch, q.patches, q.model, q.arrival, q.seq, float(row["finish"]))
            launches.append(launch)
        return launches

    # --- views ----------------------------------------------------------------------------------------
    # The host keeps no copy of server state: it reads it here.
    def is_up(self, j: int) -> bool:
        """Server j has a registered, live worker."""
        return bool(self.servers[0][j]["up"])

    def is_held(self, j: int) -> bool:
        """Server j is held busy by a job the host no longer tracks (see ``hold``)."""
        return bool(self.held[j])

    def speed_of(self, j: int) -> float:
        """Speed factor c_j of server j."""
        return float(self.servers[0][j]["speed"])

    @property
    def running_count(self) -> int:
        """Tasks launched and not yet finished or aborted."""
        return len(self.running)

    def server_rows(self, now: float) -> list[dict]:
        s = self.servers[0]
        owner = {j: tid for tid, r in self.running.items() for j in r.launch.servers}
        rows = []
        for j in range(self.config.nodes):
            r = s[j]
            rows.append({
                "index": j, "worker": self.names[j], "up": bool(r["up"]), "speed": float(r["speed"]),
                "busy": j in owner or bool(self.held[j]), "task": owner.get(j),
                "model": int(r["model"]) if r["model"] != NO_MODEL else None,
                "group": int(r["group"]) if r["group"] != NO_GROUP else None, "group_size": int(r["group_size"]),
                "busy_for_s": max(0.0, float(r["busy_until"]) - now),
            })
        return rows
