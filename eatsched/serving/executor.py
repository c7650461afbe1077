"""The host's executor: workers (registration, heartbeats), job delivery and the results coming back.

Nothing blocks on a worker: ``execute`` appends one job envelope per member to that worker's list, which the
worker collects with a long poll (``next_job``); results arrive as HTTP posts (``on_result``). When every
member of a run has reported, the run goes to the engine's ``on_finished``; when one fails (an error
reported, a member down, its deadline passed, the store failed while finishing), to its ``on_failed``.

A result is checked in full before anything changes (``check_result``, ``decode_png``): it counts only from the
worker its job went to, echoing that job's ticket (a secret sent with the job to that worker alone), once, for
the attempt that is running. Each attempt has a deadline (``HostSettings.job_deadline_s``: a generous multiple of
its predicted init + exec): past it the attempt is abandoned, its servers freed and the task re-queued; a late
result is then stale.

What lives here: worker connection facts the scheduler does not know (address, port, backend, last
heartbeat) and delivery state (envelopes not yet collected, the job a worker has not reported yet, an aborted
job it may still be running). Whether a server is up, busy, held or grouped, and its speed, live in
``ClusterScheduler`` alone and are read from it. The executor tells the scheduler about servers (``add_server``,
``server_down``, ``hold``); the engine tells it about tasks (``decide``, ``finish``, ``abort``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
import io
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.scheduler import ClusterScheduler, Launch
from ..gen.backend import GroupSpec, PatchJob
from .metrics import Metrics
from .settings import SIZE_MAX, HostSettings

log = logging.getLogger("eatsched.host")

STALL_GRACE_S = 0.5
"""A scheduling-loop gap longer than this (beyond the tick) counts as a host stall, not worker silence."""
REDELIVER_AFTER_HEARTBEATS = 5
REDELIVER_MIN_S = 5.0
"""A delivered job the worker's heartbeats say it is not running is sent again after this many heartbeats
(and at least this many seconds): the poll's answer was lost. Workers ignore a job key they already ran."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ResultRejected(Exception):
    """A worker result that was not applied (nothing changed), with the HTTP ``status``, ``error`` code and
    ``detail`` the API answers with. ``finish_failed`` (503) is the one exception: the result was valid, the
    host could not store it, and the task went back to the queue."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def decode_png(data: str) -> bytes:
    """The PNG a result carries (base64), checked in full: base64, PNG signature, at most ``SIZE_MAX`` px a
    side, every chunk and the pixel data decodable. Raises ``ResultRejected`` (422). Runs in a thread for
    large images (PIL and binascii release the GIL)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ResultRejected(422, "bad_image", f"image_png is not base64: {e}") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise ResultRejected(422, "bad_image", "image_png is not a PNG image")
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(raw), formats=("PNG",)) as im:
            if max(im.size) > SIZE_MAX:
                raise ResultRejected(422, "bad_image", f"image is {im.size[0]}x{im.size[1]} px; "
                                                       f"at most {SIZE_MAX} a side")
            im.load()
    except ResultRejected:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken data
        raise ResultRejected(422, "bad_image", f"image_png is not a readable PNG: {type(e).__name__}: {e}") from None
    return raw


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
    draining_ticket: str | None = None  # that job's ticket, when the host dispatched it
    draining_seen: float = 0.0  # monotonic: when ``draining`` was set, or a heartbeat last said it still runs
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
    deadline: float = math.inf  # monotonic: past it the attempt is abandoned (``check_deadlines``)
    tickets: tuple[str, ...] = ()  # per rank: a secret sent with the job only to its worker; its result echoes it

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.attempt}"


def _same(given: str | None, expected: str | None) -> bool:
    """A result's ticket against its job's (constant time). In-process callers (tests, benchmarks) pass none;
    over HTTP the ticket is a required field."""
    if given is None or expected is None:
        return True
    return hmac.compare_digest(given.encode(), expected.encode())


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
        run.deadline = time.monotonic() + self.settings.job_deadline_s(run.launch.predicted_init,
                                                                      run.launch.predicted_exec)
        run.tickets = tuple(secrets.token_urlsafe(16) for _ in run.members)
        rank0 = self.workers[run.members[0]]
        group_id = f"{self.epoch}-g{run.launch.group}"
        for rank, name in enumerate(run.members):
            job = PatchJob(**job_fields, group=GroupSpec(group_id=group_id, members=run.members, rank=rank,
                                                         master_addr=rank0.addr, master_port=rank0.port))
            env = {"key": run.key, "attempt": run.attempt, "ticket": run.tickets[rank], "job": job.to_dict()}
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
    def check_result(self, worker_id: str, payload: dict) -> Run | None:
        """Check a result against what was dispatched, changing nothing: it must come from the worker its job
        went to (the member at its rank, echoing the job's ticket), once. Returns its run, or None when the
        result is stale (its attempt was given up: an error, a member down, the deadline, a restart).
        Raises ``ResultRejected``."""
        w = self.workers.get(worker_id)
        if w is None or not w.up:
            raise ResultRejected(404, "unknown_worker", f"worker {worker_id!r} is not registered; register again")
        key, task_id, attempt, rank = (payload.get(k) for k in ("key", "task_id", "attempt", "rank"))
        ticket = payload.get("ticket")
        run = self.runs.get(task_id)
        if run is None or run.attempt != attempt:
            if w.draining is not None and w.draining == key and not _same(ticket, w.draining_ticket):
                raise ResultRejected(403, "wrong_ticket", f"the ticket does not match job {key}")
            return None
        if key != run.key:
            raise ResultRejected(422, "bad_result", f"key {key!r} is not '<task_id>#<attempt>' of this result")
        if not isinstance(rank, int) or not 0 <= rank < len(run.members):
            raise ResultRejected(422, "bad_rank", f"rank {rank!r} is not a rank of {key} (0..{len(run.members) - 1})")
        if run.members[rank] != worker_id:
            raise ResultRejected(403, "not_assigned", f"rank {rank} of {key} was not dispatched to {worker_id}")
        if not _same(ticket, run.tickets[rank] if run.tickets else None):
            raise ResultRejected(403, "wrong_ticket", f"the ticket does not match job {key} rank {rank}")
        if rank in run.results or w.assigned != key:
            raise ResultRejected(409, "duplicate_result", f"rank {rank} of {key} was reported already")
        return run

    def on_result(self, worker_id: str, payload: dict) -> bool:
        """A worker finished (or failed) a job. Returns whether the result counted (False: stale, and nothing
        changed but a held server freed). Raises ``ResultRejected`` for a result that cannot be applied
        (nothing changed), and ``finish_failed`` when the host could not store it (the task was re-queued).

        ``payload`` is ``WorkerResult``'s fields; the API passes the PNG checked and decoded (``decode_png``,
        in a thread) as ``image``, in-process callers may pass ``image_png`` (base64) instead."""
        run = self.check_result(worker_id, payload)
        image = None
        if run is not None and not payload.get("error") and payload["rank"] == 0:
            image = payload["image"] if "image" in payload else (
                decode_png(payload["image_png"]) if payload.get("image_png") else None)
        # checked in full: from here on, state changes
        w = self.workers[worker_id]
        w.last_seen = time.monotonic()
        key = payload["key"]
        w.jobs_done += 1
        if w.draining == key:
            w.draining = w.draining_ticket = None
            self.sched.hold(w.index, False, self.clock())
            self.wake()
        if run is None:
            return False  # stale: an attempt that was given up, or from before a restart
        w.outstanding = w.delivered_at = None
        if payload.get("error"):
            log.warning("task %s failed on %s: %s", run.task_id, worker_id, payload["error"])
            self._fail(run, f"worker {worker_id} reported an error: {payload['error']}", failed_worker=worker_id)
            return True
        run.results[payload["rank"]] = {**payload, "image": image, "image_png": None}
        if len(run.results) == len(run.members):
            del self.runs[run.task_id]
            try:
                self.on_finished(run)
            except Exception as e:  # noqa: BLE001 - the store failed: nothing was stored, so the task runs again
                log.exception("task %s could not be finished; re-queued", run.task_id)
                self._fail(run, f"the host could not store the result: {type(e).__name__}: {e}")
                raise ResultRejected(503, "finish_failed", f"the host could not store the result of {key} "
                                                           f"({type(e).__name__}); the task was re-queued") from e
        return True

    def check_deadlines(self) -> None:
        """Abandon attempts past their deadline: their servers are freed (not held: a worker that runs on
        will find its result rejected), the task is re-queued."""
        now = time.monotonic()
        for run in [r for r in self.runs.values() if r.deadline < now]:
            log.warning("task %s attempt %d missed its deadline (%.1f s); abandoned", run.task_id, run.attempt,
                        run.deadline - run.started)
            self.metrics.deadline_missed()
            self._fail(run, f"no result within its deadline of {run.deadline - run.started:.1f} s", hold=False)

    def _fail(self, run: Run, reason: str, *, failed_worker: str | None = None, hold: bool = True) -> None:
        """Give up this attempt: take back jobs not yet collected; members still running it are held until
        they report (unless ``hold`` is False). Then the engine re-queues (or fails) the task."""
        self.runs.pop(run.task_id, None)
        now = self.clock()
        for rank, name in enumerate(run.members):
            w = self.workers[name]
            if w.assigned != run.key:
                continue
            w.outstanding = None
            if run.key in [e["key"] for e in w.jobs]:  # never collected: just take it back
                w.jobs = collections.deque(e for e in w.jobs if e["key"] != run.key)
            elif hold and w.up and name != failed_worker and rank not in run.results:
                w.draining, w.draining_seen = run.key, time.monotonic()
                w.draining_ticket = run.tickets[rank] if run.tickets else None
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
            w.draining, w.draining_ticket, w.draining_seen = running, None, time.monotonic()
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
        if w.draining is not None:
            if running == w.draining:
                w.draining_seen = now
            elif now - w.draining_seen > patience:  # it will never report that job: free its server
                log.warning("worker %s no longer runs aborted job %s; its server is free again", worker_id,
                            w.draining)
                w.draining = w.draining_ticket = None
                self.sched.hold(w.index, False, self.clock())
                self.wake()
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
            for run in self.runs.values():
                run.deadline += stall
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
