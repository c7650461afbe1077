"""JSON views of the host's state for the API and the web page: a task, a worker, the cluster.

Read-only: servers (up, busy, group, model) come from ``ClusterScheduler.server_rows``, workers from the
executor, tasks from the store.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from .store import FINISHED

if TYPE_CHECKING:
    from .engine import Engine
    from .executor import WorkerConn

_TASK_FIELDS = ("id", "prompt", "negative_prompt", "patches", "model", "seed", "width", "height", "state", "attempt",
                "steps", "init_s", "exec_s", "predicted_init_s", "predicted_exec_s", "clip_score")


def task_public(row: dict) -> dict:
    """A stored task as the API shows it (``TaskPublic``)."""
    out = {k: row.get(k) for k in _TASK_FIELDS}
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


def worker_public(w: WorkerConn, *, addresses: bool = True) -> dict:
    """A worker; its address and port only with ``addresses`` (authenticated callers), else None."""
    return {"id": w.id, "index": w.index, "speed": w.speed, "addr": w.addr if addresses else None,
            "port": w.port if addresses else None, "backend": w.backend,
            "up": w.up, "job": w.assigned, "draining": w.draining, "jobs_done": w.jobs_done,
            "seen_s_ago": round(time.monotonic() - w.last_seen, 3)}


def cluster_public(engine: Engine, *, addresses: bool = True) -> dict:
    """Servers, groups, workers, predictor fits and policy (``GET /v1/cluster``); workers' addresses and ports
    only with ``addresses``."""
    s, sched = engine.settings, engine.sched
    servers = sched.server_rows(engine.now())
    for srv in servers:
        srv["busy_for_s"] *= s.time_scale
        if srv["model"] is not None:
            srv["model"] = s.models[srv["model"]]
    groups: dict[int, list[str]] = {}
    for srv in servers:
        if srv["group"] is not None:
            groups.setdefault(srv["group"], []).append(srv["worker"])
    return {
        "policy": engine.policy_name, "nodes": s.nodes, "time_scale": s.time_scale,
        "queue_length": sched.queue_length, "running": sched.running_count,
        "servers": servers, "groups": [{"id": g, "members": m} for g, m in sorted(groups.items())],
        "workers": [worker_public(w, addresses=addresses) for w in engine.executor.workers.values()],
        "predictor": engine.predictor.snapshot(), "models": list(s.models),
        "patches": list(engine.patch_choices),
    }

