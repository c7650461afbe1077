"""An edge worker: registers with the host, heartbeats, runs one patch job at a time, reports results.

Transport: the worker long-polls the host for its next job (``GET /v1/workers/{id}/job``) and posts
the result back, so the host only ever puts a job on a queue and never waits on a worker. A separate
thread sends heartbeats (carrying the job the worker is running) so a long job does not look like a
dead worker. If the host forgets the worker (it restarted, or timed the worker out), the next
heartbeat or poll gets 404 and the worker registers again; results are retried until the host answers.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import httpx

from ..gen.backend import Backend, PatchJob

log = logging.getLogger("eatsched.worker")


@dataclass
class WorkerSettings:
    """Everything a worker needs to know; ``eat worker`` fills it from the command line."""

    host: str = "http://127.0.0.1:8000"
    """URL of the host"""
    worker_id: str | None = None
    """name of this worker (default: hostname-pid); a worker that comes back under its name gets its slot back"""
    speed: float = 1.0
    """speed factor c_j of this server (1.0 = the profile's reference GPU)"""
    port: int = 0
    """base port this worker offers for torch.distributed rendezvous when it is rank 0 (0: pick a free one)"""
    addr: str = "127.0.0.1"
    """address other workers reach this one at"""
    token: str | None = None
    """the host's worker token (``eat serve --worker-token``; env EAT_WORKER_TOKEN, else EAT_TOKEN)"""
    poll_s: float = 10.0
    """how long one long-poll for a job waits on the host"""
    result_retry_s: float = 60.0
    """how long to keep retrying a result while the host is unreachable"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """Runs ``backend`` jobs for the host until ``stop()``."""

    def __init__(self, settings: WorkerSettings, backend: Backend):
        self.s = settings
        self.backend = backend
        self.id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.port = settings.port or free_port()
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.http = httpx.Client(base_url=settings.host.rstrip("/"), headers=headers, timeout=settings.poll_s + 10)
        self.heartbeat_s = 1.0
        self.running: str | None = None  # key of the job being run
        self.epoch: str | None = None
        self.jobs_done = 0
        self._stop = threading.Event()
        self._reg_lock = threading.Lock()
        self._registrations = 0  # successful registrations so far (a 404 seen before one is answered by it)
        self._done_keys: collections.deque = collections.deque(maxlen=64)

    # --- host protocol ------------------------------------------------------------------------------
    def register(self, seen: int | None = None) -> None:
        """(Re-)register; retries until the host answers or the worker is stopped. ``seen``: the registration
        count when the host answered 404; if another thread registered since, that answered it (registering
        again would take this worker down on the host, and could report a job it has finished meanwhile)."""
        with self._reg_lock:
            if seen is not None and seen != self._registrations:
                return
            delay = 0.1
            while not self._stop.is_set():
                try:
                    r = self.http.post("/v1/workers/register", json={
                        "id": self.id, "speed": self.s.speed, "addr": self.s.addr, "port": self.port,
                        "backend": self.backend.name, "running": self.running})
                except httpx.TransportError:
                    self._stop.wait(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if r.status_code in (401, 403):
                    raise PermissionError(f"host refused registration: {r.text}")
                if r.status_code >= 400:
                    raise RuntimeError(f"host refused registration ({r.status_code}): {r.text}")
                d = r.json()
                self.heartbeat_s = float(d.get("heartbeat_s", 1.0))
                if d.get("epoch") != self.epoch:
                    self.backend.release()  # a new host knows nothing of our groups
                    self.epoch = d.get("epoch")
                self._registrations += 1
                log.info("registered as %s (slot %s)", self.id, d.get("index"))
                return

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                seen = self._registrations
                r = self.http.post(f"/v1/workers/{self.id}/heartbeat", json={"running": self.running}, timeout=5)
                if r.status_code == 404:
                    self.register(seen)
            except httpx.TransportError:
                pass

    def _post_result(self, payload: dict) -> None:
        deadline = time.monotonic() + self.s.result_retry_s
        delay = 0.1
        while not self._stop.is_set():
            try:
                seen = self._registrations
                r = self.http.post(f"/v1/workers/{self.id}/result", json=payload, timeout=30)
                if r.status_code == 404:
                    self.register(seen)
                    continue
                if r.status_code >= 400:  # not counted (stale, late, refused): the host re-runs the task
                    log.warning("the host did not take the result of %s (%s): %s", payload["key"], r.status_code,
                                r.text[:200])
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    log.warning("dropping the result of %s: host unreachable", payload["key"])
                    return
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)

    # --- main loop ------------------------------------------------------------------------------------
    def run_one(self, envelope: dict) -> None:
        if envelope["key"] in self._done_keys:  # a re-delivery of a job whose result is already posted
            return
        job = PatchJob.from_dict(envelope["job"])
        self.running = envelope["key"]
        payload = {"key": envelope["key"], "attempt": envelope["attempt"], "task_id": job.task_id,
                   "rank": job.group.rank, "ticket": envelope.get("ticket", "")}
        try:
            res = self.backend.run(job)
            payload.update(init_s=res.init_s, exec_s=res.exec_s, reloaded=res.reloaded, clip_score=res.clip_score,
                           image_png=base64.b64encode(res.image_png).decode() if res.image_png else None)
        except Exception as e:  # noqa: BLE001 - the host must hear about every failure
            log.exception("job %s failed", envelope["key"])
            self.backend.release()
            # bounded and valid UTF-8, as the host requires (it would refuse the whole result otherwise)
            payload["error"] = f"{type(e).__name__}: {e}"[:2000].encode("utf-8", "replace").decode("utf-8")
        self._post_result(payload)
        self._done_keys.append(envelope["key"])
        self.running = None
        self.jobs_done += 1

    def serve_forever(self) -> None:
        self.register()
        hb = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        hb.start()
        delay = 0.1
        try:
            while not self._stop.is_set():
                try:
                    seen = self._registrations
                    r = self.http.get(f"/v1/workers/{self.id}/job", params={"wait": self.s.poll_s})
                except httpx.TransportError:
                    self._stop.wait(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.1
                if r.status_code == 404:
                    self.register(seen)
                elif r.status_code == 200:
                    self.run_one(r.json())
                elif r.status_code != 204:
                    log.warning("unexpected answer to a job poll: %s %s", r.status_code, r.text[:200])
                    self._stop.wait(1.0)
        finally:
            self._stop.set()
            self.backend.close()
            self.http.close()

    def stop(self) -> None:
        self._stop.set()
