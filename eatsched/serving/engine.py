"""The host's engine: the submission gate, the durable queue and the scheduling loop (decide, dispatch, update).

A step is three calls, as in vLLM's ``EngineCore.step``: ``ClusterScheduler.decide`` picks what starts,
``Executor.execute`` delivers it, and the results update the scheduler, the store and the time predictor
(``_finished``, ``_failed``, called back by the executor). The engine keeps no server state of its own:
``ClusterScheduler`` holds it.

Every submission passes ``admit`` (the HTTP API's ``POST /v1/tasks``, hence ``eat demo`` and the admission
benchmark, and in-process ``submit`` / ``submit_async``, hence the decision benchmark): field ranges, the
per-client rate, then prompt, patches and model against this host. A rejection is a ``Rejected`` with the
HTTP status and error code the API answers with.

Everything here runs on the asyncio event loop of the HTTP server, so no locks are needed around the
scheduler state. Events that wake the loop: a task arrived, a task finished or failed, a worker joined or
left; the loop also runs every ``tick_s`` (a policy that waited is asked again, heartbeats are checked).

Clock: the kernel runs in *model seconds* since the host started (wall seconds / ``time_scale``), so a
demo at ``--time-scale 0.01`` shows the policy the same numbers as the simulator does. Timings stored
with a task are wall seconds as measured.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import time
import uuid

from ..algos import make_policy
from ..core.config import EATConfig
from ..core.predictor import TimePredictor
from ..core.profiles import get_profile
from ..core.scheduler import ClusterScheduler, Launch
from .executor import Executor, Run
from .metrics import Metrics
from .settings import SIZE_MAX, SIZE_MIN, SIZE_MULTIPLE, HostSettings
from .store import TaskStore

log = logging.getLogger("eatsched.host")

PATCH_COUNTS_ACCEPTED = (1, 2, 4, 8)
SEED_LIMIT = 2**63
"""seeds are 0 <= seed < SEED_LIMIT"""
BLANK = " \t\n\r\f\v"
"""the characters a prompt may not consist of only (the API schema's pattern says the same)"""


def is_utf8(text: str) -> bool:
    """Whether ``text`` is valid Unicode that UTF-8 (hence SQLite) can hold: no lone surrogates, which JSON's
    ``"\\ud800"`` escapes can carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Rejected(Exception):
    """A submission the gate refused: ``status`` (HTTP), ``error`` (code) and ``detail`` (message)."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def _range_error(name: str, v: int, *, ge: int, le: int | None = None, lt: int | None = None,
                 multiple_of: int | None = None) -> str | None:
    """Pydantic's message (and order of checks) for an integer constraint, so the API answers as it always did."""
    if multiple_of is not None and v % multiple_of:
        return f"{name}: Input should be a multiple of {multiple_of}"
    if le is not None and v > le:
        return f"{name}: Input should be less than or equal to {le}"
    if lt is not None and v >= lt:
        return f"{name}: Input should be less than {lt}"
    if v < ge:
        return f"{name}: Input should be greater than or equal to {ge}"
    return None


class RateLimiter:
    """Token bucket per client: ``rate`` submissions/s, bursts of ``burst``. Remembers at most ``max_clients``
    clients, forgetting the least recently seen first (a forgotten client starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        buckets = self.buckets
        got = buckets.pop(client, None)
        tokens, last = got if got is not None else (float(self.burst), now)
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        buckets[client] = (tokens - 1.0 if ok else tokens, now)  # re-inserted: now the most recently seen
        while len(buckets) > self.max_clients:
            buckets.popitem(last=False)
        return ok


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


class Engine:
    """Gate, queue and scheduling loop over a ``ClusterScheduler`` and an ``Executor``.
    Create, then ``await start()`` inside the event loop."""

    def __init__(self, settings: HostSettings, metrics: Metrics | None = None):
        self.settings = s = settings
        prof = get_profile(s.profile)
        self.patch_choices = patch_choices = tuple(k for k in s.allowed_patches if k in prof.step_time)
        self.config = EATConfig(nodes=s.nodes, profile=prof, n_models=len(s.models),
                                patch_choices=tuple(k for k in patch_choices if k != 8) or patch_choices)
        self.policy, self.policy_name = load_policy(s.policy, self.config, s.checkpoint)
        self.predictor = TimePredictor(prof)
        self.sched = ClusterScheduler(self.config, self.policy, self.predictor)
        self.store = TaskStore(s.data_dir)
        self.metrics = metrics or Metrics()
        self.executor = Executor(s, self.sched, self.metrics, clock=self.now, wake=self.poke,
                                 on_finished=self._finished, on_failed=self._failed)
        self.limiter = RateLimiter(s.rate_limit, s.rate_burst, s.rate_clients_max)
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        self.pending: dict[str, dict] = {}  # task_id -> stored row, for queued tasks (job parameters)
        self.wake: asyncio.Event | None = None
        self._adds: list[tuple[dict, asyncio.Future]] = []  # submissions waiting for the group commit
        self._loop_task: asyncio.Task | None = None
        # readiness (GET /readyz): the loop decides nothing before ``warm_up`` ran every path of a decision
        self.ready = False
        self.warmup_wall_s: float | None = None
        self.first_decision: dict | None = None  # the first pass after ready that launched: wall ms (also logged)

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
        self.executor.start()
        self._loop_task = asyncio.create_task(self._loop(), name="scheduling-loop")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        self.executor.close()
        self.store.close()

    def poke(self) -> None:
        if self.wake is not None:
            self.wake.set()

    async def _loop(self) -> None:
        if not self.ready:
            await self._become_ready()
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.tick_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            try:
                self.executor.check_heartbeats()
                self.executor.check_deadlines()
                self.schedule()
            except Exception:  # noqa: BLE001 - the loop must survive anything one decision does
                log.exception("scheduling step failed")

    # --- readiness ----------------------------------------------------------------------------------------
    async def _become_ready(self) -> None:
        """Warm up in a thread (the API keeps answering meanwhile: ``/readyz`` is 503, submissions are stored
        and wait), then start deciding. Heartbeat silence counts from here, so the warm-up is never a stall."""
        try:
            self.warmup_wall_s = await asyncio.to_thread(self.warm_up)
        except Exception:  # noqa: BLE001 - a failed warm-up costs the first decision its compile time, no more
            log.exception("warm-up failed; the first decision will compile what it needs")
        self.ready = True
        self.executor.start()
        log.info("ready: policy %s warmed up in %.2f wall s", self.policy_name, self.warmup_wall_s or float("nan"))

    def warm_up(self) -> float:
        """Run every path a decision takes once, on a throwaway scheduler with this host's config and policy:
        the compiled core (observation, action decoding, selector and pricing, group bookkeeping: launches, a
        reuse, finishes), the policy's own decision path (a learned policy's NumPy actor), the predictor's refit
        and tables, the server view. Then the policy is attached to the real scheduler and reset, as if the
        warm-up never happened. Returns the wall seconds it took."""
        t0 = time.perf_counter()
        cfg = self.config
        for policy in (make_policy("fifo", cfg), self.policy):  # fifo surely launches: every kernel compiles
            sched = ClusterScheduler(cfg, policy, TimePredictor(cfg.time_profile))
            for j in range(cfg.nodes):
                sched.add_server(f"warm-up-{j}", 1.0)
            now = 0.0
            for rnd in range(3):  # later rounds find the groups the first one formed (reuse)
                for i, k in enumerate(self.patch_choices):
                    sched.enqueue(f"warm-up-{rnd}-{i}", k, 0, now)
                sched.observe(now)
                sched.decide(now)
                now += 1.0
                for tid in list(sched.running):
                    launch = sched.finish(tid, now)
                    sched.predictor.observe(model=0, k=len(launch.servers), steps=launch.steps, speed=1.0,
                                            exec_s=launch.predicted_exec, init_s=launch.predicted_init)
                sched.server_rows(now)
        if self.policy.needs_state:
            self.policy.attach(self.sched.view)
        self.policy.reset(0)
        return time.perf_counter() - t0

    def readiness(self) -> dict:
        """``GET /readyz``: ready (503 until then), the warm-up's and the first decision's wall times."""
        return {"ready": self.ready, "policy": self.policy_name, "warmup_wall_s": self.warmup_wall_s,
                "first_decision": self.first_decision}

    def _first_decision_after_ready(self, decide_ms: float, total_ms: float, launches: int) -> None:
        self.first_decision = {"decide_wall_ms": round(decide_ms, 3), "decide_dispatch_wall_ms": round(total_ms, 3),
                               "launches": launches, "goal_wall_ms": 100.0}
        log.info("first decision after ready: %.2f wall ms to decide, %.2f wall ms with dispatch (%d launch%s; "
                 "goal < 100 ms)", decide_ms, total_ms, launches, "" if launches == 1 else "es")

    # --- the gate -----------------------------------------------------------------------------------------
    def admit(self, *, prompt: str, negative_prompt: str | None = None, patches: int = 1, model: str | None = None,
              seed: int | None = None, width: int | None = None, height: int | None = None,
              client: str | None = None) -> dict:
        """Check one submission and fill its defaults; returns the fields to store. Raises ``Rejected``.
        ``client`` is who submits (the rate limit is per client; in-process submissions pass None: no limit)."""
        s = self.settings
        size = {"ge": SIZE_MIN, "le": SIZE_MAX, "multiple_of": SIZE_MULTIPLE}
        errors = [e for e in (None if seed is None else _range_error("seed", seed, ge=0, lt=SEED_LIMIT),
                              None if width is None else _range_error("width", width, **size),
                              None if height is None else _range_error("height", height, **size)) if e]
        if errors:
            raise Rejected(422, "invalid_field", "; ".join(errors))
        if client is not None and not self.limiter.allow(client):
            raise Rejected(429, "rate_limited", f"more than {s.rate_limit:g} submissions/s from {client}")
        if not prompt.strip(BLANK):
            raise Rejected(422, "empty_prompt", "prompt must not be empty")
        if len(prompt) > s.max_prompt_chars:
            raise Rejected(422, "prompt_too_long", f"prompt has {len(prompt)} characters; at most {s.max_prompt_chars}")
        if negative_prompt and len(negative_prompt) > s.max_prompt_chars:
            raise Rejected(422, "prompt_too_long", f"negative_prompt: at most {s.max_prompt_chars} characters")
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt), ("model", model)):
            if text is not None and not is_utf8(text):
                raise Rejected(422, "invalid_text", f"{name} is not valid Unicode text (a lone surrogate?)")
        if patches not in PATCH_COUNTS_ACCEPTED:
            raise Rejected(422, "bad_patches", f"patches must be 1, 2, 4 or 8, got {patches}")
        if patches > s.nodes:
            raise Rejected(422, "patches_exceed_cluster",
                           f"patches={patches} is larger than the cluster ({s.nodes} servers)")
        if patches not in self.patch_choices:
            raise Rejected(422, "bad_patches", f"the time profile has no timings for {patches} patches")
        model = s.models[0] if model is None else model
        if model not in s.models:
            raise Rejected(422, "unknown_model", f"unknown model {model!r}; this host serves {list(s.models)}")
        return {"prompt": prompt, "negative_prompt": negative_prompt, "patches": patches, "model": model,
                "seed": seed if seed is not None else int.from_bytes(os.urandom(4), "little"),
                "width": width or s.width, "height": height or s.height, "client": client}

    # --- tasks --------------------------------------------------------------------------------------------
    def submit(self, **fields) -> dict:
        """Admit the task (``admit``'s fields), store it durably, then queue it. Returns the stored row."""
        row = self.store.add(uuid.uuid4().hex, **self.admit(**fields))
        self._enqueue_row(row)
        self.poke()
        return row

    async def submit_async(self, **fields) -> dict:
        """``submit`` with group commit: the submissions that arrive in one turn of the event loop are
        committed in one SQLite transaction, and each caller resumes once its task is durable."""
        task = {"id": uuid.uuid4().hex, **self.admit(**fields)}
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._adds.append((task, fut))
        if len(self._adds) == 1:
            loop.call_soon(self._flush_adds)
        return await fut

    def _flush_adds(self) -> None:
        """Commit the waiting submissions in one transaction; if it fails, commit each on its own, so one
        submission the store refuses fails that request alone."""
        batch, self._adds = self._adds, []
        try:
            done = list(zip(self.store.add_many([t for t, _ in batch]), batch, strict=True))
        except Exception:  # noqa: BLE001 - retried one by one below
            done = []
            for task, fut in batch:
                try:
                    done.append((self.store.add_many([task])[0], (task, fut)))
                except Exception as e:  # noqa: BLE001 - this request alone gets the error
                    log.exception("task %s could not be stored", task["id"])
                    if not fut.done():
                        fut.set_exception(e)
        for row, (_, fut) in done:
            self._enqueue_row(row)
            if not fut.done():
                fut.set_result(row)
        self.poke()

    def _enqueue_row(self, row: dict) -> None:
        try:
            model = self.settings.models.index(row["model"])
            self.sched.enqueue(row["id"], int(row["patches"]), model, self._model_time_of(row["created_at"]))
        except ValueError as e:  # the host was restarted with a smaller cluster or fewer models
            log.error("cannot schedule task %s any more (%s): cancelled", row["id"], e)
            self.store.cancel(row["id"])
            return
        self.pending[row["id"]] = row

    def cancel(self, task_id: str) -> bool:
        if self.sched.cancel(task_id):
            self.pending.pop(task_id, None)
            return self.store.cancel(task_id)
        return False

    # --- decide, dispatch ---------------------------------------------------------------------------------
    def schedule(self) -> list[Launch]:
        """One step: ask the scheduler what starts now and dispatch it."""
        if not self.sched.queue_length:
            return []
        t0 = time.perf_counter()
        launches = self.sched.decide(self.now())
        decide_ms = (time.perf_counter() - t0) * 1000.0
        self.metrics.decision(decide_ms)
        for launch in launches:
            self.dispatch(launch)
        if launches and self.ready and self.first_decision is None:
            self._first_decision_after_ready(decide_ms, (time.perf_counter() - t0) * 1000.0, len(launches))
        return launches

    def dispatch(self, launch: Launch) -> None:
        """Record the launch in the store and hand its jobs to the executor."""
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
        self.metrics.launch(launch.reuse)
        self.executor.execute(run, {"task_id": launch.task_id, "prompt": row["prompt"], "model": row["model"],
                                    "steps": launch.steps, "seed": int(row["seed"]),
                                    "negative_prompt": row.get("negative_prompt"), "width": int(row["width"]),
                                    "height": int(row["height"])})

    # --- update -------------------------------------------------------------------------------------------
    def _finished(self, run: Run) -> None:
        """Every member reported: store the image and times, free the servers, teach the predictor.

        The store goes first and changes nothing when it fails (the image cannot be written, the database
        refuses): the exception goes back to the executor, which re-queues the attempt (``_failed``)."""
        rs = run.results.values()
        # the task's times are those of its slowest member (the group finishes with it)
        crit = max(rs, key=lambda r: float(r.get("init_s") or 0.0) + float(r.get("exec_s") or 0.0))
        init_s = float(crit.get("init_s") or 0.0)
        exec_s = float(crit.get("exec_s") or 0.0)
        reloaded = any(r.get("reloaded") for r in rs)
        first = run.results[0]
        png = first["image"] if "image" in first else (base64.b64decode(first["image_png"])
                                                       if first.get("image_png") else None)
        ok = self.store.finish(run.task_id, run.attempt, init_s=init_s, exec_s=exec_s, image_png=png,
                               clip_score=first.get("clip_score"))
        try:  # the task is finished now: what follows is bookkeeping and must not undo that
            self.sched.finish(run.task_id, self.now())
            slowest = min(self.sched.speed_of(j) for j in run.launch.servers)
            scale = self.settings.time_scale
            self.predictor.observe(model=run.model, k=run.patches, steps=run.launch.steps, speed=slowest,
                                   exec_s=exec_s / scale, init_s=init_s / scale if reloaded else None)
            if ok:
                row = self.store.get(run.task_id)
                self.metrics.finished(row["finished_at"] - row["created_at"])
        except Exception:  # noqa: BLE001
            log.exception("bookkeeping after task %s finished failed", run.task_id)
        self.poke()

    def _failed(self, run: Run, reason: str, now: float) -> None:
        """The attempt was given up (the executor took its jobs back): free its servers and re-queue the task,
        or fail it after ``max_attempts``."""
        if run.task_id in self.sched.running:
            self.sched.abort(run.task_id, now, requeue=False)
        self.metrics.requeue()
        try:
            if run.attempt >= self.settings.max_attempts:
                self.store.fail(run.task_id, f"gave up after {run.attempt} attempts; last: {reason}")
                log.error("task %s failed after %d attempts: %s", run.task_id, run.attempt, reason)
            else:
                self.store.requeue(run.task_id, reason)
                self._enqueue_row(self.store.get(run.task_id))
        except Exception:  # noqa: BLE001 - its servers are free already; the store says running until a restart
            log.exception("task %s could not be re-queued in the store (it is when the host restarts)", run.task_id)
        self.poke()
