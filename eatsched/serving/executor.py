"""The host's executor: workers (registration, heartbeats), job delivery and the results coming back.

Nothing blocks on a worker: ``execute`` appends one job envelope per member to that worker's list, which the
worker collects with a long poll (``next_job``); results arrive as HTTP posts (``on_result``). When every
member of a run has reported, the run goes to the engine's ``on_finished``; when one fails (an error
reported, a member down), to its ``on_failed``.

What lives here: worker connection facts the scheduler does not know (address, port, backend, last
heartbeat) and delivery state (envelopes not yet collected, the job a worker has not reported yet, an aborted
job it may still be running). Whether a server is up, busy, held or grouped, and its speed, live in
``ClusterScheduler`` alone and are read from it. The executor tells the scheduler about servers (``add_server``,
``server_down``, ``hold``); the engine tells it about tasks (``decide``, ``finish``, ``abort``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.scheduler import ClusterScheduler, Launch
from ..gen.backend import GroupSpec, PatchJob
from .metrics import Metrics
from .settings import HostSettings

log = logging.getLogger("eatsched.host")

STALL_GRACE_S = 0.5
"""A scheduling-loop gap longer than this (beyond the tick) counts as a host stall, not worker silence."""
REDELIVER_AFTER_HEARTBEATS = 5
REDELIVER_MIN_S = 5.0
"""A delivered job the worker's heartbeats say it is not running is sent again after this many heartbeats
(and at least this many seconds): the poll's answer was lost. Workers ignore a job key they already ran."""


@dataclass
class WorkerConn:
    """One worker as the executor knows it: connection and delivery. ``up`` and ``speed`` are the scheduler's."""

    id: str
    index: int  # server slot in the scheduler
    addr: str
    port: int
    backend: str
    last_seen: float  # monotonic
    sched: ClusterScheduler = field(repr=False, compare=False)
    jobs: collections.deque = field(default_factory=collections.deque)  # envelopes not yet collected
    has_job: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: dict | None = None  # envelope of the job sent to this worker and not reported yet
    delivered_at: float | None = None  # when the outstanding job was collected by a poll
    draining: str | None = None  # key of an aborted job the worker may still be running (its server is held)
    jobs_done: int = 0

    @property
    def up(self) -> bool:
        return self.sched.is_up(self.index)

    @property
    def speed(self) -> float:
        return self.sched.speed_of(self.index)

    @property
    def assigned(self) -> str | None:
        """Key of the job this worker has not reported yet."""
        return self.outstanding["key"] if self.outstanding else None


@dataclass
class Run:
    """One attempt of one task on its group: one job per member, one result per member."""

    task_id: str
    attempt: int
    launch: Launch
    members: tuple[str, ...]  # worker ids, rank order
    model: int
    patches: int
    started: float  # monotonic
    results: dict[int, dict] = field(default_factory=dict)  # rank -> result payload

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.attempt}"


class Executor:
    """Workers and job delivery. ``clock`` is the engine's (model seconds), ``wake`` runs its loop soon;
    ``on_finished(run)`` and ``on_failed(run, reason, now)`` hand a run back to the engine."""

    def __init__(self, settings: HostSettings, sched: ClusterScheduler, metrics: Metrics, *,
                 clock: Callable[[], float], wake: Callable[[], None], on_finished: Callable[[Run], None],
                 on_failed: Callable[[Run, str, float], None]):
        self.settings, self.sched, self.metrics = settings, sched, metrics
        self.clock, self.wake, self.on_finished, self.on_failed = clock, wake, on_finished, on_failed
        self.epoch = uuid.uuid4().hex[:8]  # this host's life: workers drop their groups when it changes
        self.workers: dict[str, WorkerConn] = {}
        self.runs: dict[str, Run] = {}  # task_id -> the attempt being run
        self._last_check = time.monotonic()

    def start(self) -> None:
        """The engine's loop starts now: heartbeat silence counts from here."""
        self._last_check = time.monotonic()

    def workers_up(self) -> int:
        return sum(1 for w in self.workers.values() if w.up)

    def close(self) -> None:
        for w in self.workers.values():
            w.has_job.set()

    # --- delivery -----------------------------------------------------------------------------------------
    def execute(self, run: Run, job_fields: dict) -> None:
        """Send ``run`` to its members: a ``PatchJob`` of ``job_fields`` per rank, meeting at rank 0's address."""
        self.runs[run.task_id] = run
        rank0 = self.workers[run.members[0]]
        group_id = f"{self.epoch}-g{run.launch.group}"
        for rank, name in enumerate(run.members):
            job = PatchJob(**job_fields, group=GroupSpec(group_id=group_id, members=run.members, rank=rank,
                                                         master_addr=rank0.addr, master_port=rank0.port))
            env = {"key": run.key, "attempt": run.attempt, "job": job.to_dict()}
            w = self.workers[name]
            w.outstanding, w.delivered_at = env, None
            w.jobs.append(env)
            w.has_job.set()

    async def next_job(self, worker_id: str, wait: float) -> dict | None:
        """Long poll: the worker's next job envelope, or None after ``wait`` seconds."""
        w = self.workers[worker_id]
        w.last_seen = time.monotonic()
        deadline = time.monotonic() + wait
        while not w.jobs:
            w.has_job.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not w.up:
                return None
            try:
                await asyncio.wait_for(w.has_job.wait(), timeout=left)
            except asyncio.TimeoutError:
                return None
            if self.workers.get(worker_id) is not w or not w.up:
                return None
        env = w.jobs.popleft()
        if env["key"] == w.assigned:
            w.delivered_at = time.monotonic()
        w.last_seen = time.monotonic()
        return env

    # --- results ------------------------------------------------------------------------------------------
    def on_result(self, worker_id: str, payload: dict) -> bool:
        """A worker finished (or failed) a job. Returns whether the result counted."""
        w = self.workers[worker_id]
        w.last_seen = time.monotonic()
        key = payload.get("key")
        w.jobs_done += 1
        if w.draining == key:
            w.draining = None
            self.sched.hold(w.index, False, self.clock())
            self.wake()
        if w.assigned == key:
            w.outstanding = w.delivered_at = None
        run = self.runs.get(payload.get("task_id"))
        if run is None or run.attempt != payload.get("attempt"):
            return False  # stale: an attempt that was aborted, or from before a restart
        if payload.get("error"):
            log.warning("task %s failed on %s: %s", run.task_id, worker_id, payload["error"])
            self._fail(run, f"worker {worker_id} reported an error: {payload['error']}", failed_worker=worker_id)
            return True
        run.results[int(payload["rank"])] = payload
        if len(run.results) == len(run.members):
            del self.runs[run.task_id]
            self.on_finished(run)
        return True

    def _fail(self, run: Run, reason: str, *, failed_worker: str | None = None) -> None:
        """Give up this attempt: take back jobs not yet collected; members still running it are held until
        they report. Then the engine re-queues (or fails) the task."""
        self.runs.pop(run.task_id, None)
        now = self.clock()
        for rank, name in enumerate(run.members):
            w = self.workers[name]
            if w.assigned != run.key:
                continue
            w.outstanding = None
            if run.key in [e["key"] for e in w.jobs]:  # never collected: just take it back
                w.jobs = collections.deque(e for e in w.jobs if e["key"] != run.key)
            elif w.up and name != failed_worker and rank not in run.results:
                w.draining = run.key
                self.sched.hold(w.index, True, now)
            w.delivered_at = None
        self.on_failed(run, reason, now)

    # --- workers ------------------------------------------------------------------------------------------
    def register(self, *, worker_id: str, speed: float, addr: str, port: int, backend: str,
                 running: str | None) -> WorkerConn:
        old = self.workers.get(worker_id)
        if old is not None:
            self._take_down(old, "re-registered")
        index = self.sched.add_server(worker_id, speed)  # raises ValueError when the cluster is full
        w = WorkerConn(worker_id, index, addr, int(port), backend, time.monotonic(), self.sched)
        if running:  # still busy with a job the host no longer tracks
            w.draining = running
            self.sched.hold(index, True, self.clock())
        else:
            self.sched.hold(index, False, self.clock())
        self.workers[worker_id] = w
        log.info("worker %s joined (slot %d, speed %.2f)", worker_id, index, speed)
        self.wake()
        return w

    def heartbeat(self, worker_id: str, running: str | None) -> bool:
        w = self.workers.get(worker_id)
        if w is None or not w.up:
            return False
        now = time.monotonic()
        w.last_seen = now
        patience = max(REDELIVER_MIN_S, REDELIVER_AFTER_HEARTBEATS * self.settings.heartbeat_s)
        if w.assigned and w.delivered_at is not None and running is None and now - w.delivered_at > patience:
            log.warning("worker %s lost job %s; sending it again", worker_id, w.assigned)
            w.delivered_at = None
            w.jobs.append(w.outstanding)
            w.has_job.set()
        return True

    def check_heartbeats(self) -> None:
        """Mark workers silent past the timeout down. If the host itself was stalled (its loop did not run,
        e.g. starved of CPU), that time does not count as the workers' silence: their heartbeats are
        waiting unread in the host's sockets."""
        now = time.monotonic()
        stall = now - self._last_check - self.settings.tick_s
        self._last_check = now
        if stall > STALL_GRACE_S:
            log.warning("host loop stalled for %.1f s; not counting it against worker heartbeats", stall)
            for w in self.workers.values():
                w.last_seen += stall
        limit = now - self.settings.heartbeat_timeout_s
        for w in list(self.workers.values()):
            if w.up and w.last_seen < limit:
                log.warning("worker %s silent for %.1f s: marked down", w.id, now - w.last_seen)
                self.metrics.worker_failed()
                self._take_down(w, "heartbeat timeout")

    def _take_down(self, w: WorkerConn, reason: str) -> None:
        if not w.up:
            return
        w.has_job.set()
        tasks = self.sched.server_down(w.index)
        w.draining = None
        self.sched.hold(w.index, False, self.clock())
        for tid in tasks:
            run = self.runs.get(tid)
            if run is not None:
                self._fail(run, f"worker {w.id} down ({reason})", failed_worker=w.id)
        w.jobs.clear()
        w.outstanding = None
        self.wake()
