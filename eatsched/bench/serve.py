"""``eat bench serve``: admission throughput of the host and the host's time per scheduling decision.

* Admission: a host process on loopback (no workers, no rate limit) and one asyncio client keeping
  ``concurrency`` POST /v1/tasks requests in flight; tasks/s = accepted tasks / wall seconds. Every
  accepted task is committed to SQLite before its 202 (the number includes durability). The host's CPU
  ms per task (from /proc) is reported too: on a shared machine it says what one free core would do.
* Decision overhead: the host's engine in-process with N registered (in-memory) workers; a stream of
  tasks (each through the engine's submission gate) is scheduled and completed by hand-written results.
  Timed per pass of the decide path that launched at least one task: ``decide`` (observation, policy,
  selector, group bookkeeping; the compiled core) and ``decide+dispatch`` (plus the SQLite transition and
  the job envelopes).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_ADMIT_PER_S = 500.0
TARGET_DECISION_P50_MS = 2.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def _post_loop(port: int, request: bytes, counter, statuses: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection posting ``request`` while ``counter`` lasts. A minimal client on
    purpose: on a 2-core machine a full HTTP client costs as much CPU as the host it measures."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in counter:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


def bench_admission(tasks: int = 2000, concurrency: int = 32, data_dir: Path | None = None) -> dict:
    import httpx  # noqa: PLC0415

    from ..serving.launch import LocalCluster  # noqa: PLC0415

    body = json.dumps({"prompt": "a lighthouse on a cliff at dawn, oil painting", "patches": 2}).encode()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(data_dir or tmp), nodes=8, rate_limit=0,
                                                              policy="fifo") as cluster:
        cluster.start_host()
        request = (f"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body

        async def run() -> tuple[list[int], float, float]:
            warm: list[int] = []
            await _post_loop(cluster.port, request, iter(range(20)), warm)
            statuses: list[int] = []
            counter = iter(range(tasks))
            cpu0 = _cpu_seconds(cluster.host_proc.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(_post_loop(cluster.port, request, counter, statuses) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
            return statuses, wall, _cpu_seconds(cluster.host_proc.pid) - cpu0

        statuses, wall, host_cpu = asyncio.run(run())
        queued = httpx.get(f"{cluster.url}/v1/cluster").json()["queue_length"]
    ok = statuses.count(202)
    return {"tasks": tasks, "accepted": ok, "concurrency": concurrency, "wall_s": wall, "tasks_per_s": ok / wall,
            "queued_after": queued, "host_cpu_ms_per_task": host_cpu / max(ok, 1) * 1000,
            "host_cpu_share": host_cpu / wall, "target_tasks_per_s": TARGET_ADMIT_PER_S,
            "ratio_vs_target": ok / wall / TARGET_ADMIT_PER_S}


def bench_decisions(decisions: int = 2000, nodes: int = 8, policy: str = "eat", seed: int = 0) -> dict:
    from ..serving.host import Host  # noqa: PLC0415
    from ..serving.settings import HostSettings  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        host = Host(HostSettings(data_dir=tmp, nodes=nodes, policy=policy))
        for j in range(nodes):
            host.register(worker_id=f"w{j}", speed=1.0, addr="127.0.0.1", port=29500 + j, backend="bench",
                          running=None)
        decide_ms, total_ms = [], []
        backlog = 0
        while len(total_ms) < decisions:
            while backlog < 12:  # keep a queue deeper than the visible window
                host.submit(prompt="bench", negative_prompt=None, patches=int(rng.choice([1, 2, 4])),
                            model=host.settings.models[0], seed=0, width=512, height=512, client=None)
                backlog += 1
            now = host.now()
            t0 = time.perf_counter()
            launches = host.sched.decide(now)
            t1 = time.perf_counter()
            for launch in launches:
                host.engine.dispatch(launch)
            t2 = time.perf_counter()
            if launches:
                decide_ms.append((t1 - t0) * 1000 / len(launches))
                total_ms.append((t2 - t0) * 1000 / len(launches))
            backlog -= len(launches)
            # every running task reports back (one result per member), oldest first
            for run in list(host.runs.values())[: max(1, len(host.runs) // 2)]:
                for rank, name in enumerate(run.members):
                    host.on_result(name, {"key": run.key, "attempt": run.attempt, "task_id": run.task_id,
                                          "rank": rank, "init_s": 0.0, "exec_s": 0.01, "reloaded": False,
                                          "image_png": None})
        policy_name = host.policy_name
        host.store.close()

    def q(a, p):
        return float(np.percentile(a, p))

    return {"policy": policy_name, "nodes": nodes, "decisions": len(total_ms),
            "decide_p50_ms": q(decide_ms, 50), "decide_p99_ms": q(decide_ms, 99),
            "decide_dispatch_p50_ms": q(total_ms, 50), "decide_dispatch_p99_ms": q(total_ms, 99),
            "target_p50_ms": TARGET_DECISION_P50_MS}
