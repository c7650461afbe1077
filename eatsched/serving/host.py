"""The host's engine: durable queue, cluster of workers, and the scheduling loop (decide, dispatch, update).

Everything here runs on the asyncio event loop of the HTTP server, so no locks are needed around the
scheduler state. Nothing blocks on a worker: dispatching a job appends it to the worker's job list,
which the worker collects with a long poll; results arrive as HTTP posts.

Events that wake the loop: a task arrived, a task finished or failed, a worker joined or left; the
loop also runs every ``tick_s`` (a policy that waited is asked again, heartbeats are checked).

Clock: the kernel runs in *model seconds* since the host started (wall seconds / ``time_scale``), so a
demo at ``--time-scale 0.01`` shows the policy the same numbers as the simulator does. Timings stored
with a task are wall seconds as measured.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field

from ..algos import make_policy
from ..core.config import EATConfig
from ..core.predictor import TimePredictor
from ..core.profiles import get_profile
from ..core.scheduler import ClusterScheduler, Launch
from .backend import GroupSpec, PatchJob
from .settings import HostSettings
from .store import CANCELLED, FINISHED, QUEUED, TaskStore

log = logging.getLogger("eatsched.host")

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
"""Histogram buckets (wall seconds) of the task response time in /metrics."""
STALL_GRACE_S = 0.5
"""A scheduling-loop gap longer than this (beyond the tick) counts as a host stall, not worker silence."""
REDELIVER_AFTER_HEARTBEATS = 5
REDELIVER_MIN_S = 5.0
"""A delivered job the worker's heartbeats say it is not running is sent again after this many heartbeats
(and at least this many seconds): the poll's answer was lost. Workers ignore a job key they already ran."""


@dataclass
class WorkerState:
    """What the host knows of one worker."""

    id: str
    index: int  # server slot in the scheduler
    speed: float
    addr: str
    port: int
    backend: str
    last_seen: float  # monotonic
    up: bool = True
    jobs: collections.deque = field(default_factory=collections.deque)  # envelopes not yet collected
    has_job: asyncio.Event = field(default_factory=asyncio.Event)
    assigned: str | None = None  # key of the job the host counts this worker busy with
    assigned_env: dict | None = None
    delivered_at: float | None = None  # when the assigned job was collected by a poll
    draining: str | None = None  # key of an aborted job the worker may still be running
    jobs_done: int = 0

    def public(self) -> dict:
        return {"id": self.id, "index": self.index, "speed": self.speed, "addr": self.addr, "port": self.port,
                "backend": self.backend, "up": self.up, "job": self.assigned, "draining": self.draining,
                "jobs_done": self.jobs_done, "seen_s_ago": round(time.monotonic() - self.last_seen, 3)}


@dataclass
class Run:
    """One attempt of one task on its group."""

    task_id: str
    attempt: int
    launch: Launch
    members: tuple[str, ...]
    model: int
    patches: int
    started: float  # monotonic
    results: dict[int, dict] = field(default_factory=dict)  # rank -> result payload

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.attempt}"


def load_policy(name: str, cfg: EATConfig, checkpoint: str | None):
    """The configured policy; the default ``eat`` falls back to ``adaptive`` (logged) when no checkpoint
    fits this cluster. Returns (policy, the name to show)."""
    try:
        return make_policy(name, cfg, checkpoint=checkpoint), name
    except (ValueError, FileNotFoundError) as e:
        if name.lower() != "eat" or checkpoint:
            raise
        log.warning("policy 'eat' is not available for %d nodes (%s); falling back to 'adaptive'", cfg.nodes, e)
        return make_policy("adaptive", cfg), "adaptive (EAT fallback: no checkpoint)"


class Host:
    """Queue, workers and the scheduling loop. Create, then ``await start()`` inside the event loop."""

    def __init__(self, settings: HostSettings):
        self.settings = s = settings
        prof = get_profile(s.profile)
        patch_choices = tuple(k for k in s.allowed_patches if k in prof.step_time)
        self.patch_choices = patch_choices
        self.config = EATConfig(nodes=s.nodes, profile=prof, n_models=len(s.models),
                                patch_choices=tuple(k for k in patch_choices if k != 8) or patch_choices)
        self.policy, self.policy_name = load_policy(s.policy, self.config, s.checkpoint)
        self.predictor = TimePredictor(prof)
        self.sched = ClusterScheduler(self.config, self.policy, self.predictor)
        self.store = TaskStore(s.data_dir)
        self.epoch = uuid.uuid4().hex[:8]
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        self.workers: dict[str, WorkerState] = {}
        self.runs: dict[str, Run] = {}
        self.pending: dict[str, dict] = {}  # task_id -> stored row, for queued tasks (job parameters)
        self.wake: asyncio.Event | None = None
        self._last_check = time.monotonic()
        self._adds: list[tuple[dict, asyncio.Future]] = []  # submissions waiting for the group commit
        self._loop_task: asyncio.Task | None = None
        # metrics
        self.decision_ms: collections.deque = collections.deque(maxlen=10000)
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.finished_count = 0
        self.reload_count = 0
        self.launch_count = 0
        self.requeue_count = 0
        self.worker_failures = 0

    # --- clock ------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Kernel time: model seconds since the host started."""
        return (time.monotonic() - self._t0) / self.settings.time_scale

    def _model_time_of(self, wall_epoch: float) -> float:
        return (wall_epoch - self._wall0) / self.settings.time_scale

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.wake = asyncio.Event()
        recovered = self.store.recover()
        for row in recovered:
            self._enqueue_row(row)
        if recovered:
            log.info("recovered %d queued tasks from %s", len(recovered), self.store.path)
        self._last_check = time.monotonic()
        self._loop_task = asyncio.create_task(self._loop(), name="scheduling-loop")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        for w in self.workers.values():
            w.has_job.set()
        self.store.close()

    def _enqueue_row(self, row: dict) -> None:
        try:
            model = self.settings.models.index(row["model"])
            self.sched.enqueue(row["id"], int(row["patches"]), model, self._model_time_of(row["created_at"]))
        except ValueError as e:  # the host was restarted with a smaller cluster or fewer models
            log.error("cannot schedule task %s any more (%s): cancelled", row["id"], e)
            self.store.cancel(row["id"])
            return
        self.pending[row["id"]] = row

    def poke(self) -> None:
        if self.wake is not None:
            self.wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.tick_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            try:
                self.check_heartbeats()
                self.schedule()
            except Exception:  # noqa: BLE001 - the loop must survive anything one decision does
                log.exception("scheduling step failed")

    # --- tasks --------------------------------------------------------------------------------------------
    def submit(self, **fields) -> dict:
        """Store the task durably, then queue it (the caller has validated ``fields``: prompt,
        negative_prompt, patches, model, seed, width, height, client)."""
        row = self.store.add(uuid.uuid4().hex, **fields)
        self._enqueue_row(row)
        self.poke()
        return row

    async def submit_async(self, **fields) -> dict:
        """``submit`` with group commit: the submissions that arrive in one turn of the event loop are
        committed in one SQLite transaction, and each caller resumes once its task is durable."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._adds.append(({"id": uuid.uuid4().hex, **fields}, fut))
        if len(self._adds) == 1:
            loop.call_soon(self._flush_adds)
        return await fut

    def _flush_adds(self) -> None:
        batch, self._adds = self._adds, []
        try:
            rows = self.store.add_many([t for t, _ in batch])
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for row, (_, fut) in zip(rows, batch, strict=True):
            self._enqueue_row(row)
            if not fut.done():
                fut.set_result(row)
        self.poke()

    def cancel(self, task_id: str) -> bool:
        if self.sched.cancel(task_id):
            self.pending.pop(task_id, None)
            return self.store.cancel(task_id)
        return False

    # --- deciding and dispatching -------------------------------------------------------------------------
    def schedule(self) -> list[Launch]:
        if not self.sched.queue_length:
            return []
        t0 = time.perf_counter()
        launches = self.sched.decide(self.now())
        self.decision_ms.append((time.perf_counter() - t0) * 1000.0)
        for launch in launches:
            self._dispatch(launch)
        return launches

    def _dispatch(self, launch: Launch) -> None:
        row = self.pending.pop(launch.task_id)
        members = tuple(self.sched.names[j] for j in launch.servers)
        attempt = self.store.start(launch.task_id, steps=launch.steps, servers=list(members), reload=not launch.reuse,
                                   predicted_init_s=launch.predicted_init * self.settings.time_scale,
                                   predicted_exec_s=launch.predicted_exec * self.settings.time_scale,
                                   quality_est=launch.quality)
        if not attempt:  # cancelled in between: give the servers back
            self.sched.finish(launch.task_id, self.now())
            return
        run = Run(launch.task_id, attempt, launch, members, self.settings.models.index(row["model"]),
                  int(row["patches"]), time.monotonic())
        self.runs[launch.task_id] = run
        self.launch_count += 1
        self.reload_count += 0 if launch.reuse else 1
        rank0 = self.workers[members[0]]
        group_id = f"{self.epoch}-g{launch.group}"
        for rank, name in enumerate(members):
            job = PatchJob(task_id=launch.task_id, prompt=row["prompt"], model=row["model"], steps=launch.steps,
                           seed=int(row["seed"]), negative_prompt=row.get("negative_prompt"),
                           width=int(row["width"]), height=int(row["height"]),
                           group=GroupSpec(group_id=group_id, members=members, rank=rank, master_addr=rank0.addr,
                                           master_port=rank0.port))
            env = {"key": run.key, "attempt": attempt, "job": job.to_dict()}
            w = self.workers[name]
            w.assigned, w.assigned_env, w.delivered_at = run.key, env, None
            w.jobs.append(env)
            w.has_job.set()

    # --- results ------------------------------------------------------------------------------------------
    def on_result(self, worker_id: str, payload: dict) -> bool:
        """A worker finished (or failed) a job. Returns whether the result counted."""
        w = self.workers[worker_id]
        w.last_seen = time.monotonic()
        key = payload.get("key")
        w.jobs_done += 1
        if w.draining == key:
            w.draining = None
            self.sched.hold(w.index, False, self.now())
            self.poke()
        if w.assigned == key:
            w.assigned = w.assigned_env = w.delivered_at = None
        run = self.runs.get(payload.get("task_id"))
        if run is None or run.attempt != payload.get("attempt"):
            return False  # stale: an attempt that was aborted, or from before a restart
        if payload.get("error"):
            log.warning("task %s failed on %s: %s", run.task_id, worker_id, payload["error"])
            self._abort(run, f"worker {worker_id} reported an error: {payload['error']}", failed_worker=worker_id)
            return True
        run.results[int(payload["rank"])] = payload
        if len(run.results) == len(run.members):
            self._finish(run)
        return True

    def _finish(self, run: Run) -> None:
        del self.runs[run.task_id]
        rs = run.results.values()
        # the task's times are those of its slowest member (the group finishes with it)
        crit = max(rs, key=lambda r: float(r.get("init_s") or 0.0) + float(r.get("exec_s") or 0.0))
        init_s = float(crit.get("init_s") or 0.0)
        exec_s = float(crit.get("exec_s") or 0.0)
        reloaded = any(r.get("reloaded") for r in rs)
        png = run.results[0].get("image_png")
        clip = run.results[0].get("clip_score")
        ok = self.store.finish(run.task_id, run.attempt, init_s=init_s, exec_s=exec_s,
                               image_png=base64.b64decode(png) if png else None, clip_score=clip)
        self.sched.finish(run.task_id, self.now())
        slowest = min(self.workers[m].speed for m in run.members)
        scale = self.settings.time_scale
        self.predictor.observe(model=run.model, k=run.patches, steps=run.launch.steps, speed=slowest,
                               exec_s=exec_s / scale, init_s=init_s / scale if reloaded else None)
        if ok:
            row = self.store.get(run.task_id)
            resp = row["finished_at"] - row["created_at"]
            self.finished_count += 1
            self.latency_sum += resp
            b = next((i for i, edge in enumerate(LATENCY_BUCKETS) if resp <= edge), len(LATENCY_BUCKETS))
            self.latency_counts[b] += 1
        self.poke()

    def _abort(self, run: Run, reason: str, *, failed_worker: str | None = None) -> None:
        """Give up this attempt: re-queue the task; members still running it stay held until they report."""
        self.runs.pop(run.task_id, None)
        now = self.now()
        for rank, name in enumerate(run.members):
            w = self.workers[name]
            if w.assigned != run.key:
                continue
            w.assigned = w.assigned_env = None
            if run.key in [e["key"] for e in w.jobs]:  # never collected: just take it back
                w.jobs = collections.deque(e for e in w.jobs if e["key"] != run.key)
            elif w.up and name != failed_worker and rank not in run.results:
                w.draining = run.key
                self.sched.hold(w.index, True, now)
            w.delivered_at = None
        self.sched.abort(run.task_id, now, requeue=False)
        self.requeue_count += 1
        if run.attempt >= self.settings.max_attempts:
            self.store.fail(run.task_id, f"gave up after {run.attempt} attempts; last: {reason}")
            log.error("task %s failed after %d attempts: %s", run.task_id, run.attempt, reason)
        else:
            self.store.requeue(run.task_id, reason)
            row = self.store.get(run.task_id)
            self._enqueue_row(row)
        self.poke()

    # --- workers ------------------------------------------------------------------------------------------
    def register(self, *, worker_id: str, speed: float, addr: str, port: int, backend: str,
                 running: str | None) -> WorkerState:
        old = self.workers.get(worker_id)
        if old is not None:
            self._take_down(old, "re-registered")
        index = self.sched.add_server(worker_id, speed)  # raises ValueError when the cluster is full
        w = WorkerState(worker_id, index, float(speed), addr, int(port), backend, time.monotonic())
        if running:  # still busy with a job the host no longer tracks
            w.draining = running
            self.sched.hold(index, True, self.now())
        else:
            self.sched.hold(index, False, self.now())
        self.workers[worker_id] = w
        log.info("worker %s joined (slot %d, speed %.2f)", worker_id, index, speed)
        self.poke()
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
            w.jobs.append(w.assigned_env)
            w.has_job.set()
        return True

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
                self.worker_failures += 1
                self._take_down(w, "heartbeat timeout")

    def _take_down(self, w: WorkerState, reason: str) -> None:
        if not w.up:
            return
        w.up = False
        w.has_job.set()
        tasks = self.sched.server_down(w.index)
        w.draining = None
        self.sched.hold(w.index, False, self.now())
        for tid in tasks:
            run = self.runs.get(tid)
            if run is not None:
                self._abort(run, f"worker {w.id} down ({reason})", failed_worker=w.id)
        w.jobs.clear()
        w.assigned = w.assigned_env = None
        self.poke()

    # --- views --------------------------------------------------------------------------------------------
    def task_public(self, row: dict) -> dict:
        import json  # noqa: PLC0415

        out = {k: row.get(k) for k in ("id", "prompt", "negative_prompt", "patches", "model", "seed", "width",
                                       "height", "state", "attempt", "steps", "init_s", "exec_s",
                                       "predicted_init_s", "predicted_exec_s", "clip_score")}
        out["queued_at"] = row.get("created_at")
        out["started_at"] = row.get("started_at")
        out["finished_at"] = row.get("finished_at")
        out["servers"] = json.loads(row["servers"]) if row.get("servers") else []
        out["reload"] = None if row.get("reload") is None else bool(row["reload"])
        out["quality_estimate"] = row.get("quality_est")
        out["quality_measured"] = row.get("clip_score")
        started, finished = row.get("started_at"), row.get("finished_at")
        out["wait_s"] = started - row["created_at"] if started else None
        out["response_s"] = finished - row["created_at"] if finished else None
        out["image_url"] = f"/v1/tasks/{row['id']}/image" if row.get("state") == FINISHED else None
        return out

    def cluster_public(self) -> dict:
        now = self.now()
        servers = self.sched.server_rows(now)
        for srv in servers:
            srv["busy_for_s"] *= self.settings.time_scale
            if srv["model"] is not None:
                srv["model"] = self.settings.models[srv["model"]]
        groups: dict[int, list[str]] = {}
        for srv in servers:
            if srv["group"] is not None:
                groups.setdefault(srv["group"], []).append(srv["worker"])
        return {
            "policy": self.policy_name, "nodes": self.settings.nodes, "time_scale": self.settings.time_scale,
            "queue_length": self.sched.queue_length, "running": len(self.runs),
            "servers": servers, "groups": [{"id": g, "members": m} for g, m in sorted(groups.items())],
            "workers": [w.public() for w in self.workers.values()],
            "predictor": self.predictor.snapshot(), "models": list(self.settings.models),
            "patches": list(self.patch_choices),
        }

    def metrics_text(self) -> str:
        counts = self.store.counts()
        up = sum(1 for w in self.workers.values() if w.up)
        lines = [
            "# HELP eat_queue_length Tasks waiting to be scheduled.", "# TYPE eat_queue_length gauge",
            f"eat_queue_length {self.sched.queue_length}",
            "# HELP eat_tasks Tasks by state.", "# TYPE eat_tasks gauge",
            *[f'eat_tasks{{state="{k}"}} {v}' for k, v in counts.items()],
            "# HELP eat_workers_up Workers registered and alive.", "# TYPE eat_workers_up gauge",
            f"eat_workers_up {up}",
            "# HELP eat_launches_total Task launches.", "# TYPE eat_launches_total counter",
            f"eat_launches_total {self.launch_count}",
            "# HELP eat_reloads_total Launches that needed a cold start.", "# TYPE eat_reloads_total counter",
            f"eat_reloads_total {self.reload_count}",
            "# HELP eat_requeues_total Attempts re-queued after a failure.", "# TYPE eat_requeues_total counter",
            f"eat_requeues_total {self.requeue_count}",
            "# HELP eat_worker_failures_total Workers marked down.", "# TYPE eat_worker_failures_total counter",
            f"eat_worker_failures_total {self.worker_failures}",
            "# HELP eat_response_seconds Task response time (submit to finish).",
            "# TYPE eat_response_seconds histogram",
        ]
        cum = 0
        for edge, c in zip(LATENCY_BUCKETS, self.latency_counts, strict=False):
            cum += c
            lines.append(f'eat_response_seconds_bucket{{le="{edge}"}} {cum}')
        lines.append(f'eat_response_seconds_bucket{{le="+Inf"}} {self.finished_count}')
        lines.append(f"eat_response_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"eat_response_seconds_count {self.finished_count}")
        d = sorted(self.decision_ms)
        if d:
            lines += ["# HELP eat_decision_ms Host time per scheduling pass (ms).", "# TYPE eat_decision_ms summary",
                      f'eat_decision_ms{{quantile="0.5"}} {d[len(d) // 2]:.4f}',
                      f'eat_decision_ms{{quantile="0.99"}} {d[min(len(d) - 1, int(len(d) * 0.99))]:.4f}',
                      f"eat_decision_ms_count {len(d)}"]
        return "\n".join(lines) + "\n"


__all__ = ["Host", "HostSettings", "load_policy", "QUEUED", "FINISHED", "CANCELLED"]
