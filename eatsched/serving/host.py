"""The host as one object for the HTTP API and the tests: an ``Engine`` (gate, queue, scheduling loop), its
``Executor`` (workers, job delivery, results) and their ``Metrics``, with the JSON views. No logic of its own."""

from __future__ import annotations

from . import views
from .engine import Engine, Rejected, load_policy
from .settings import HostSettings
from .store import CANCELLED, FINISHED, QUEUED


class Host:
    """Create, then ``await start()`` inside the event loop."""

    def __init__(self, settings: HostSettings):
        self.engine = engine = Engine(settings)
        self.executor = ex = engine.executor
        self.metrics = engine.metrics
        self.settings, self.sched, self.store, self.predictor = settings, engine.sched, engine.store, engine.predictor
        self.policy_name, self.patch_choices, self.epoch = engine.policy_name, engine.patch_choices, ex.epoch
        self.workers, self.runs = ex.workers, ex.runs
        # tasks and the loop: the engine
        self.start, self.stop, self.now, self.schedule = engine.start, engine.stop, engine.now, engine.schedule
        self.submit, self.submit_async, self.cancel = engine.submit, engine.submit_async, engine.cancel
        # workers: the executor
        self.register, self.heartbeat, self.next_job = ex.register, ex.heartbeat, ex.next_job
        self.on_result, self.check_heartbeats = ex.on_result, ex.check_heartbeats

    # --- views --------------------------------------------------------------------------------------------
    @staticmethod
    def task_public(row: dict) -> dict:
        return views.task_public(row)

    def cluster_public(self, *, addresses: bool = True) -> dict:
        """``addresses``: show workers' addresses and ports (to authenticated callers only)."""
        return views.cluster_public(self.engine, addresses=addresses)

    def metrics_text(self) -> str:
        return self.metrics.prometheus_text(queue_length=self.sched.queue_length, task_counts=self.store.counts(),
                                            workers_up=self.executor.workers_up(),
                                            rate_clients=len(self.engine.limiter.buckets))


__all__ = ["Host", "HostSettings", "Rejected", "load_policy", "QUEUED", "FINISHED", "CANCELLED"]
