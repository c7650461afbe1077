"""``eat demo``: the serving system end to end on one machine, no GPU.

For each policy (EAT, or its fallback named honestly, then a baseline) it starts a host and N simulated
workers on loopback, replays the same Poisson workload of real prompts against it over HTTP, shows a
live view of queue, servers and finished tasks, and ends with a per-episode metrics table. Times in the
table are model seconds (wall seconds / time scale), comparable with ``eat simulate``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..core.config import EATConfig
from ..core.workload import PoissonArrivals
from .client import Client
from .launch import LocalCluster


def load_prompts() -> list[str]:
    """The shipped prompts (``eatsched/data/prompts.txt``, one per line)."""
    text = resources.files("eatsched.data").joinpath("prompts.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass
class DemoSettings:
    nodes: int = 8
    """simulated workers (one per server)"""
    tasks: int = 32
    """tasks per episode"""
    rate: float = 0.5
    """Poisson arrival rate in tasks per model second (the paper's effective rate)"""
    time_scale: float = 0.1
    """wall seconds per model second"""
    policy: str = "eat"
    """the policy under test (eat falls back to adaptive without a checkpoint, and says so)"""
    baseline: str = "fifo"
    """the policy it is compared with"""
    seed: int = 0
    """workload seed (both policies see the same tasks)"""
    out: Path = Path("runs/demo-serve")
    """data dirs (SQLite, images, logs) go here, one per policy"""


def _live_view(c: dict, tasks: list[dict], title: str) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row(f"[bold]{title}[/]", f"policy: {c['policy']}", f"queue: {c['queue_length']}",
                 f"running: {c['running']}", f"finished: {sum(t['state'] == 'finished' for t in tasks)}/{len(tasks)}")
    srv = Table(title="servers", show_edge=False)
    for col in ("#", "worker", "state", "task", "group"):
        srv.add_column(col)
    for s in c["servers"]:
        st = "[red]down[/]" if not s["up"] else ("[yellow]busy[/]" if s["busy"] else "[green]idle[/]")
        srv.add_row(str(s["index"]), str(s["worker"]), st, (s["task"] or "")[:8], str(s["group"] or ""))
    fin = Table(title="recently finished", show_edge=False)
    for col in ("task", "k", "steps", "reload", "response s", "prompt"):
        fin.add_column(col)
    done = sorted((t for t in tasks if t["state"] == "finished"), key=lambda t: t["finished_at"])[-6:]
    for t in done:
        fin.add_row(t["id"][:8], str(t["patches"]), str(t["steps"]), "yes" if t["reload"] else "no",
                    f"{t['response_s']:.2f}", t["prompt"][:48])
    return Group(head, srv, fin)


def episode_metrics(tasks: list[dict], time_scale: float) -> dict:
    """The simulator's per-episode metrics from the host's task records (times in model seconds)."""
    done = [t for t in tasks if t["state"] == "finished"]
    resp = np.array([t["response_s"] / time_scale for t in done]) if done else np.array([np.nan])
    q = np.array([t["quality_estimate"] for t in done]) if done else np.array([np.nan])
    reloads = sum(1 for t in done if t["reload"])
    return {"tasks": len(tasks), "tasks_completed": len(done), "mean_response_s": float(resp.mean()),
            "p95_response_s": float(np.percentile(resp, 95)), "mean_quality": float(q.mean()),
            "reload_rate": reloads / max(1, len(done)), "efficiency": float(q.mean() / resp.mean())}


def run_episode(policy: str, s: DemoSettings, console: Console) -> dict:
    cfg = EATConfig(nodes=s.nodes, rate=s.rate, tasks_per_episode=s.tasks,
                    patch_choices=tuple(k for k in (1, 2, 4) if k <= s.nodes))
    w = PoissonArrivals(cfg).sample(np.random.default_rng(s.seed))
    prompts = load_prompts()
    pick = np.random.default_rng(s.seed + 1).permutation(len(prompts))
    data_dir = s.out / policy
    if data_dir.exists():
        import shutil  # noqa: PLC0415

        shutil.rmtree(data_dir)
    ids: list[str] = []
    stop = threading.Event()
    with LocalCluster(data_dir, nodes=s.nodes, time_scale=s.time_scale, policy=policy) as cluster:
        console.print(f"[bold]{policy}[/]: starting a host and {s.nodes} simulated workers ...")
        cluster.start_host()
        cluster.start_workers()
        console.print(f"web page: [link]{cluster.url}/[/link]   API docs: {cluster.url}/docs   "
                      f"images: {data_dir / 'images'}")
        client = Client(cluster.url)

        def submit_all() -> None:
            t0 = time.monotonic()
            with Client(cluster.url) as sub:
                for i in range(len(w)):
                    delay = t0 + float(w.arrival[i]) * s.time_scale - time.monotonic()
                    if stop.wait(max(0.0, delay)):
                        return
                    ids.append(sub.submit(prompts[int(pick[i % len(prompts)])], patches=int(w.patches[i]),
                                          seed=s.seed * 100003 + i))

        submitter = threading.Thread(target=submit_all, daemon=True)
        t_start = time.monotonic()
        submitter.start()
        try:
            with Live(console=console, refresh_per_second=4, transient=True) as live:
                while True:
                    tasks = client.all_tasks()
                    live.update(_live_view(client.cluster(), tasks, f"{policy}, {len(ids)}/{len(w)} submitted"))
                    if len(ids) == len(w) and all(t["state"] == "finished" for t in tasks) and len(tasks) == len(w):
                        break
                    time.sleep(0.25)
        finally:
            stop.set()
            submitter.join(5)
        wall = time.monotonic() - t_start
        c = client.cluster()
        tasks = client.all_tasks()
        client.close()
    m = episode_metrics(tasks, s.time_scale)
    m.update(policy=c["policy"], wall_s=wall, images=str(data_dir / "images"))
    console.print(f"[green]{policy}: {m['tasks_completed']}/{m['tasks']} tasks finished in {wall:.1f} s wall[/]")
    return m


def run_demo(s: DemoSettings, console: Console | None = None) -> list[dict]:
    console = console or Console()
    rows = [run_episode(p, s, console) for p in (s.policy, s.baseline)]
    t = Table(title=f"serving demo: {s.nodes} simulated workers, {s.tasks} tasks at {s.rate}/model-s, "
                    f"time scale {s.time_scale} (times in model seconds)")
    for col in ("policy", "done", "mean resp s", "p95 resp s", "mean quality", "reload rate", "efficiency", "wall s"):
        t.add_column(col, justify="right" if col != "policy" else "left", no_wrap=col == "policy")
    for m in rows:
        t.add_row(m["policy"], f"{m['tasks_completed']}/{m['tasks']}", f"{m['mean_response_s']:.1f}",
                  f"{m['p95_response_s']:.1f}", f"{m['mean_quality']:.3f}", f"{m['reload_rate']:.2f}",
                  f"{m['efficiency']:.4f}", f"{m['wall_s']:.1f}")
    console.print(t)
    for m in rows:
        console.print(f"images of {m['policy']}: {m['images']}")
    return rows
