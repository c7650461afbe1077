"""Load and faults over real HTTP on loopback: every accepted task must finish exactly once.

A host (``eat serve``) and simulated workers (``eat worker --backend simulated``), each its own process
(``eatsched.serving.launch.LocalCluster``), separate client and worker tokens. N submissions from 32 concurrent
clients; while they go in: two workers are killed (SIGKILL) and started again, and one worker is stopped
(SIGSTOP) for longer than the heartbeat timeout, then resumed (SIGCONT); once all are in, the host is killed
(SIGKILL) and started again on the same data. Then it waits until nothing is queued or running and counts, from
the SQLite store, the tasks that finished once, more than once, or never. Exit status 0 only if every accepted
task finished exactly once.

Usage: python scripts/serve_load.py [--tasks 10000] [--workers 8] [--time-scale 0.002] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

from eatsched.serving.launch import LocalCluster


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f} s] {msg}", flush=True)


async def submit_with_faults(c: LocalCluster, args, t0: float) -> tuple[list[str], dict]:
    """Submit ``args.tasks`` tasks (32 in flight) while the worker faults happen at fixed fractions of them."""
    ids: list[str] = []
    faults: dict = {}
    ks = itertools.cycle([1, 2, 4, 1, 2, 1, 8])  # patches per task (8 needs every worker)

    async def fault_plan() -> None:
        async def at(frac: float) -> None:
            while len(ids) < frac * args.tasks:
                await asyncio.sleep(0.05)

        await at(0.2)
        c.kill_worker("w1")
        c.kill_worker("w5")
        faults["kill9_workers_at"] = len(ids)
        log(f"kill -9 w1, w5 (after {len(ids)} accepted)", t0)
        await at(0.35)
        c.start_worker("w1")
        c.start_worker("w5")
        log(f"restarted w1, w5 (after {len(ids)} accepted)", t0)
        await at(0.5)
        pid = c.worker_procs["w3"].pid
        os.kill(pid, signal.SIGSTOP)
        faults["sigstop_at"] = len(ids)
        log(f"SIGSTOP w3 for {args.stop_s} s (heartbeat timeout {args.heartbeat_timeout} s)", t0)
        await asyncio.sleep(args.stop_s)
        os.kill(pid, signal.SIGCONT)
        log(f"SIGCONT w3 (after {len(ids)} accepted)", t0)

    async with httpx.AsyncClient(base_url=c.url, headers=c.headers, timeout=120,
                                 # idle connections dropped before the host's keep-alive timeout (5 s) closes them
                                 limits=httpx.Limits(max_connections=32, keepalive_expiry=2.0)) as ac:
        sem = asyncio.Semaphore(32)

        async def one(i: int, k: int) -> None:
            async with sem:
                for attempt in range(5):
                    try:
                        r = await ac.post("/v1/tasks", json={"prompt": f"load task {i}", "patches": k, "seed": i})
                        break
                    except httpx.TransportError as e:  # no answer: not accepted as far as we know; try again
                        faults.setdefault("client_transport_errors", []).append(
                            f"{time.time() - t0:.1f} s: submission {i}: {type(e).__name__}")
                        log(f"submission {i}: {type(e).__name__} (no answer); sending it again", t0)
                        await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    raise RuntimeError(f"submission {i}: no answer after 5 tries")
                if r.status_code != 202:
                    raise RuntimeError(f"submission {i}: {r.status_code} {r.text}")
                ids.append(r.json()["id"])

        plan = asyncio.create_task(fault_plan())
        await asyncio.gather(*(one(i, next(ks)) for i in range(args.tasks)))
        await plan  # the SIGSTOP may outlast the submissions
    return ids, faults


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=8, help="simulated workers (= --nodes)")
    ap.add_argument("--time-scale", type=float, default=0.002, help="wall s per model s (small: fast jobs)")
    ap.add_argument("--heartbeat", type=float, default=0.5)
    ap.add_argument("--heartbeat-timeout", type=float, default=3.0)
    ap.add_argument("--stop-s", type=float, default=8.0, help="how long one worker stays stopped (SIGSTOP)")
    ap.add_argument("--policy", default="eat")
    ap.add_argument("--drain-timeout", type=float, default=1800.0, help="wall s to wait for the queue to drain")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary directory")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()
    if args.stop_s <= args.heartbeat_timeout:
        ap.error("--stop-s must exceed --heartbeat-timeout (the stopped worker must be marked down)")

    data = args.data_dir or Path(tempfile.mkdtemp(prefix="eat-load-"))
    c = LocalCluster(data, nodes=args.workers, time_scale=args.time_scale, policy=args.policy, token="client-token",
                     heartbeat_s=args.heartbeat, heartbeat_timeout_s=args.heartbeat_timeout, rate_limit=0.0)
    t0 = time.time()
    with c:
        c.start_host()
        c.start_workers()
        rss = {"start": rss_mb(c.host_proc.pid)}
        log(f"host ready, {args.workers} workers up, host RSS {rss['start']} MB; data in {data}", t0)
        t_submit = time.time()
        ids, faults = asyncio.run(submit_with_faults(c, args, t0))
        submit_s = time.time() - t_submit
        rss["after_submit"] = rss_mb(c.host_proc.pid)
        log(f"{len(ids)} accepted in {submit_s:.1f} s; host RSS {rss['after_submit']} MB", t0)
        time.sleep(2.0)
        c.kill_host()
        log("kill -9 host", t0)
        c.start_host()
        rss["after_restart"] = rss_mb(c.host_proc.pid)
        log(f"host restarted, RSS {rss['after_restart']} MB", t0)
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline:
            text = httpx.get(c.url + "/metrics", headers=c.headers, timeout=30).text
            left = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
                    if ln.startswith(('eat_tasks{state="queued"}', 'eat_tasks{state="running"}'))}
            if all(v == 0 for v in left.values()):
                break
            time.sleep(2.0)
        rss["end"] = rss_mb(c.host_proc.pid)
        wall_s = time.time() - t0
    db = sqlite3.connect(data / "eat.sqlite")
    states = dict(db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
    fin = dict(db.execute("SELECT task_id, COUNT(*) FROM transitions WHERE state='finished' GROUP BY task_id"))
    host_log = (data / "logs" / "host.log").read_text(errors="replace")
    stored = [row[0] for row in db.execute("SELECT id FROM tasks")]
    stale = sum(p.read_text(errors="replace").count("(409)") for p in (data / "logs").glob("worker-*.log"))
    summary = {
        "accepted": len(ids), "distinct_ids": len(set(ids)), "states": states,
        "finished_once": sum(1 for i in ids if fin.get(i) == 1),
        "finished_twice_or_more": sum(1 for v in fin.values() if v > 1),
        "lost": sum(1 for i in ids if i not in fin),
        # a submission that got no answer may still have been stored: those must finish exactly once too
        "stored_not_acknowledged": len(set(stored) - set(ids)),
        "stored_finished_once": sum(1 for i in stored if fin.get(i) == 1), "stored": len(stored),
        "host_rss_mb": rss, "submit_s": round(submit_s, 1), "wall_s": round(wall_s, 1),
        "admitted_per_s": round(len(ids) / submit_s, 1), "faults": faults,
        "w3_marked_down_silent": bool(re.search(r"worker w3 silent for [0-9.]+ s: marked down", host_log)),
        "stale_results_rejected_409": stale,
        "host_log": {k: host_log.count(v) for k, v in (("workers_marked_down", ": marked down"),
                                                       ("deadlines_missed", "missed its deadline"),
                                                       ("tasks_failed", "failed after"), ("tracebacks", "Traceback"))},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    ok = (summary["finished_once"] == len(ids) and summary["finished_twice_or_more"] == 0 and summary["lost"] == 0
          and summary["stored_finished_once"] == len(stored))
    print("OK: every accepted task finished exactly once" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
