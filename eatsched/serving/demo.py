"""``eat demo``: the serving system end to end on one machine, no GPU.

For each policy (EAT, or its fallback named honestly, then a baseline) it starts a host and N simulated
workers on loopback, waits until the host is ready (policy loaded and warmed up: ``/readyz``), replays the
same Poisson workload of real prompts against it over HTTP, shows a live view of queue, servers and finished
tasks (on a terminal; elsewhere a plain line every few seconds), and ends with a summary line per episode,
a metrics table and ``timeline.png`` (the schedule of both episodes, drawn by ``sim.timeline``).

Two clocks, always labelled: *wall s* as measured here, and *model s* = wall s / time scale, the policy's clock
and the simulator's (``eat simulate`` numbers are model s). The table's times are model s unless they say wall.
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
from ..core.metrics import EFFICIENCY_DEFINITION, metric_label
from ..core.workload import PoissonArrivals
from .client import Client
from .launch import LocalCluster

PLAIN_EVERY_S = 5.0
"""Off a terminal, the progress line is printed this often (wall seconds)."""
STUCK_AFTER_WALL_S, STUCK_AFTER_MODEL_S = 120.0, 600.0
"""An episode in which nothing starts or finishes for the larger of these (wall s; model s) is given up."""


def load_prompts() -> list[str]:
    """The shipped prompts (``eatsched/data/prompts.txt``, one per line)."""
    text = resources.files("eatsched.data").joinpath("prompts.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass
class DemoSettings:
    nodes: int = 8
    """simulated workers (one per server)"""
    tasks: int = 64
    """tasks per episode: 64 at rate 0.5 reaches the steady state where scheduling tells (at 32, the cold start of an
    empty cluster dominates and the order of EAT and adaptive flips on 5 of 20 seeds in the simulator)"""
    rate: float = 0.5
    """Poisson arrival rate in tasks per model second (the paper's effective rate)"""
    time_scale: float = 0.1
    """wall seconds per model second"""
    policy: str = "eat"
    """the policy under test (eat falls back to adaptive without a checkpoint, and says so)"""
    baseline: str = "adaptive"
    """the policy it is compared with: the strongest of the paper's kind of hand-written scheduler (docs/learning.md)"""
    seed: int = 0
    """workload seed (both policies see the same tasks)"""
    out: Path = Path("runs/demo-serve")
    """data dirs (SQLite, images, logs) go here, one per policy, and timeline.png"""


def _progress(c: dict, tasks: list[dict], submitted: int, total: int, wall: float, scale: float) -> dict:
    done = sum(t["state"] == "finished" for t in tasks)
    return {"submitted": submitted, "total": total, "queue": c["queue_length"], "running": c["running"],
            "finished": done, "wall": wall, "model": wall / scale}


def _plain_line(name: str, p: dict) -> str:
    return (f"{name}: {p['wall']:6.1f} wall s ({p['model']:.0f} model s): submitted {p['submitted']}/{p['total']}, "
            f"queue {p['queue']}, running {p['running']}, finished {p['finished']}/{p['total']}")


def _live_view(c: dict, tasks: list[dict], title: str, p: dict, scale: float) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row(f"[bold]{title}[/]", f"policy: {c['policy']}", f"queue: {c['queue_length']}",
                 f"running: {c['running']}", f"finished: {p['finished']}/{len(tasks)}",
                 f"elapsed: {p['wall']:.1f} wall s = {p['model']:.0f} model s")
    srv = Table(title="servers", show_edge=False)
    for col in ("#", "worker", "state", "task", "group", "busy for (wall s)"):
        srv.add_column(col)
    for s in c["servers"]:
        st = "[red]down[/]" if not s["up"] else ("[yellow]busy[/]" if s["busy"] else "[green]idle[/]")
        srv.add_row(str(s["index"]), str(s["worker"]), st, (s["task"] or "")[:8], str(s["group"] or ""),
                    f"{s['busy_for_s']:.2f}" if s["busy"] else "")
    fin = Table(title=f"recently finished (model s = wall s / {scale:g})", show_edge=False)
    for col in ("task", "k", "steps", "reload", "response (wall s)", "response (model s)"):
        fin.add_column(col)
    fin.add_column("prompt", no_wrap=True, overflow="ellipsis")
    done = sorted((t for t in tasks if t["state"] == "finished"), key=lambda t: t["finished_at"])[-6:]
    for t in done:
        fin.add_row(t["id"][:8], str(t["patches"]), str(t["steps"]), "yes" if t["reload"] else "no",
                    f"{t['response_s']:.2f}", f"{t['response_s'] / scale:.1f}", t["prompt"][:48])
    return Group(head, srv, fin)


def episode_metrics(tasks: list[dict], time_scale: float) -> dict:
    """The simulator's per-episode metrics from the host's task records. ``mean_response_s`` and
    ``p95_response_s`` are model seconds (as in ``eat simulate``; also under ``*_model_s``), ``*_wall_s`` wall."""
    done = [t for t in tasks if t["state"] == "finished"]
    resp = np.array([t["response_s"] / time_scale for t in done]) if done else np.array([np.nan])
    q = np.array([t["quality_estimate"] for t in done]) if done else np.array([np.nan])
    reloads = sum(1 for t in done if t["reload"])
    mean, p95 = float(resp.mean()), float(np.percentile(resp, 95))
    return {"tasks": len(tasks), "tasks_completed": len(done), "mean_response_s": mean, "p95_response_s": p95,
            "mean_response_model_s": mean, "p95_response_model_s": p95, "mean_response_wall_s": mean * time_scale,
            "mean_quality": float(q.mean()), "reload_rate": reloads / max(1, len(done)),
            "efficiency": float(q.mean() / resp.mean()), "time_scale": time_scale}


def _timeline(tasks: list[dict], c: dict, time_scale: float) -> dict:
    """The episode's timeline records in model seconds from its first arrival (``webpage.timeline_records``)."""
    from .webpage import timeline_records  # noqa: PLC0415

    names = [s["worker"] for s in sorted(c["servers"], key=lambda s: s["index"])]
    end = max((t["finished_at"] or 0.0 for t in tasks), default=time.time()) or time.time()
    tl = timeline_records(tasks, {n: j for j, n in enumerate(names) if n}, now=end, wall_per_unit=time_scale)
    tl["servers"] = names
    return tl


def _host_log_stalls(log: Path) -> int:
    try:
        return sum("stalled" in line for line in log.read_text(errors="replace").splitlines())
    except OSError:
        return 0


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
    scale = s.time_scale
    with LocalCluster(data_dir, nodes=s.nodes, time_scale=scale, policy=policy) as cluster:
        console.print(f"[bold]{policy}[/]: starting a host and {s.nodes} simulated workers ...")
        ready = cluster.start_host()  # returns once /readyz says the policy is loaded and warmed up
        console.print(f"host ready: policy {ready['policy']} warmed up in {ready['warmup_wall_s'] or 0:.2f} wall s")
        cluster.start_workers()
        console.print(f"web page: [link]{cluster.url}/[/link]   API docs: {cluster.url}/docs   "
                      f"images: {data_dir / 'images'}")
        client = Client(cluster.url)

        def submit_all() -> None:
            t0 = time.monotonic()
            with Client(cluster.url) as sub:
                for i in range(len(w)):
                    delay = t0 + float(w.arrival[i]) * scale - time.monotonic()
                    if stop.wait(max(0.0, delay)):
                        return
                    ids.append(sub.submit(prompts[int(pick[i % len(prompts)])], patches=int(w.patches[i]),
                                          seed=s.seed * 100003 + i))

        submitter = threading.Thread(target=submit_all, daemon=True)
        t_start = time.monotonic()
        submitter.start()
        terminal = console.is_terminal
        last_plain = -PLAIN_EVERY_S
        stuck_after = max(STUCK_AFTER_WALL_S, STUCK_AFTER_MODEL_S * scale)
        seen, last_change = None, time.monotonic()
        try:
            with Live(console=console, refresh_per_second=4, transient=True) if terminal else _Nothing() as live:
                while True:
                    tasks, c = client.all_tasks(), client.cluster()
                    p = _progress(c, tasks, len(ids), len(w), time.monotonic() - t_start, scale)
                    if terminal:
                        live.update(_live_view(c, tasks, f"{policy}, {len(ids)}/{len(w)} submitted", p, scale))
                    elif p["wall"] - last_plain >= PLAIN_EVERY_S:
                        console.print(_plain_line(policy, p), highlight=False)
                        last_plain = p["wall"]
                    if len(ids) == len(w) and all(t["state"] == "finished" for t in tasks) and len(tasks) == len(w):
                        break
                    if (len(ids), p["finished"], p["running"]) != seen:
                        seen, last_change = (len(ids), p["finished"], p["running"]), time.monotonic()
                    elif time.monotonic() - last_change > stuck_after:
                        raise RuntimeError(f"{policy}: nothing started or finished for {stuck_after:.0f} wall s "
                                           f"({p['queue']} tasks queued); see {cluster.log_dir / 'host.log'}")
                    time.sleep(0.25)
        finally:
            stop.set()
            submitter.join(5)
        wall = time.monotonic() - t_start
        c = client.cluster()
        tasks = client.all_tasks()
        ready = client.http.get("/readyz").json()
        client.close()
    m = episode_metrics(tasks, scale)
    first = ready.get("first_decision") or {}
    m.update(policy=c["policy"], wall_s=wall, episode_wall_s=wall, images=str(data_dir / "images"),
             warmup_wall_s=ready.get("warmup_wall_s"), first_decision_wall_ms=first.get("decide_dispatch_wall_ms"),
             host_stall_warnings=_host_log_stalls(cluster.log_dir / "host.log"), timeline=_timeline(tasks, c, scale))
    console.print(f"[green]{policy}: {m['tasks_completed']}/{m['tasks']} tasks finished in {wall:.1f} wall s "
                  f"({wall / scale:.0f} model s)[/]; mean response {m['mean_response_s']:.1f} model s "
                  f"({m['mean_response_wall_s']:.2f} wall s), mean quality {m['mean_quality']:.3f}, "
                  f"first decision after ready {_ms(m['first_decision_wall_ms'])} wall ms", highlight=False)
    if m["host_stall_warnings"]:
        console.print(f"[yellow]the host logged {m['host_stall_warnings']} stall warning(s): see "
                      f"{cluster.log_dir / 'host.log'}[/]")
    return m


class _Nothing:
    """``with`` target off a terminal, where there is no live view."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_timelines(rows: list[dict], s: DemoSettings) -> Path:
    """``timeline.png`` in ``s.out``: the schedules of the episodes one above the other on one time axis (model s),
    and each alone in its data dir. Returns the combined picture's path."""
    from PIL import Image  # noqa: PLC0415

    from .webpage import timeline_png  # noqa: PLC0415

    end = max(m["timeline"]["end"] for m in rows)
    parts = []
    for m, name in zip(rows, (s.policy, s.baseline), strict=True):
        tl = m["timeline"]
        tl["end"] = end
        title = (f"{m['policy']}: {m['tasks']} tasks on {s.nodes} simulated workers, mean response "
                 f"{m['mean_response_s']:.1f} model s (model s = wall s / {s.time_scale:g})")
        path = s.out / name / "timeline.png"
        timeline_png(tl, title=title, path=path, dpi=80)
        parts.append(Image.open(path).convert("RGB"))
    out = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    path = s.out / "timeline.png"
    out.save(path)
    return path


def metrics_table(rows: list[dict], s: DemoSettings) -> Table:
    """One row per metric (label, unit, which direction is better), one column per policy."""
    t = Table(title=f"serving demo: {s.nodes} simulated workers, {s.tasks} tasks at {s.rate:g} tasks per model s, "
                    f"time scale {s.time_scale:g} wall s per model s")
    t.add_column("metric (unit, direction)", no_wrap=True)
    for m in rows:
        t.add_column(m["policy"], justify="right")
    spec = [
        ("tasks finished (count, higher is better)", lambda m: f"{m['tasks_completed']}/{m['tasks']}"),
        (metric_label("mean_response_s"), lambda m: f"{m['mean_response_s']:.1f}"),
        (metric_label("p95_response_s"), lambda m: f"{m['p95_response_s']:.1f}"),
        ("mean response (wall s, lower is better)", lambda m: f"{m['mean_response_wall_s']:.2f}"),
        (metric_label("mean_quality"), lambda m: f"{m['mean_quality']:.3f}"),
        (metric_label("reload_rate"), lambda m: f"{m['reload_rate']:.2f}"),
        (metric_label("efficiency"), lambda m: f"{m['efficiency']:.4f}"),
        ("first decision after ready (wall ms, lower is better)", lambda m: _ms(m.get("first_decision_wall_ms"))),
        ("host stall warnings (count, lower is better)", lambda m: str(m.get("host_stall_warnings", 0))),
        ("episode (wall s, lower is better)", lambda m: f"{m['wall_s']:.1f}"),
    ]
    for label, cell in spec:
        t.add_row(label, *(cell(m) for m in rows))
    return t


def run_demo(s: DemoSettings, console: Console | None = None) -> list[dict]:
    console = console or Console()
    rows = [run_episode(p, s, console) for p in (s.policy, s.baseline)]
    console.print(metrics_table(rows, s))
    console.print(f"{EFFICIENCY_DEFINITION}; model s = wall s / {s.time_scale:g} (the policy's clock, comparable "
                  "with eat simulate); wall s and wall ms: measured on this machine", highlight=False)
    timeline = write_timelines(rows, s)
    console.print(f"schedule of both episodes: {timeline} (one row per server, model s across; hatched: cold start)")
    for m in rows:
        console.print(f"images of {m['policy']}: {m['images']} (placeholders: real images need "
                      "eat worker --backend diffusers)")
        m["timeline"] = str(s.out / (s.policy if m is rows[0] else s.baseline) / "timeline.png")
    return rows
