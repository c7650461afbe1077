"""A picture of one episode's schedule: servers down, time across, each task a bar over its k servers.

Top panel: one row per server. Each launched task draws one bar per server it holds, split into the cold start
(``init``: loading the model onto a new group, hatched) and the execution (solid, labelled with the task id); a
group that was reused (no init) has no hatched part and a ``reused`` mark. Bottom panel: one row per task, a thin
line from its arrival to its start (waiting) and then the same bar once. Tasks never started wait to the end.

Input: the per-task records of one episode, either the simulator's ``core.state.TASK`` array
(``EATEnv.episode_tasks()``, ``SimulationResult.task_records[e]``) or a plain list of dicts/records with
``arrival``, ``start``, ``finish``, ``init`` (or ``init_s``), ``exec`` (or ``exec_s``), ``servers`` (bitmask or
list of server ids), optionally ``task_id``, ``reload``, ``steps``, ``patches``. Unstarted tasks have NaN start.

Every server bar carries ``gid = "task{i}/server{j}/init"`` or ``".../exec"`` (the task panel's: ``"task{i}/queue"``
and ``"task{i}/wait"``), so a test or another view can read the drawing back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.metrics import server_ids

TASK_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#882255", "#44AA99",
                "#999933", "#6F4E7C")
"""Colours cycled over task ids (Okabe-Ito without black and yellow, then Tol's wine, teal, olive, and a violet)."""


@dataclass(frozen=True)
class Bar:
    """One task as the timeline draws it."""

    task: int
    arrival: float
    start: float  # NaN: never started
    init: float
    exec: float
    servers: tuple[int, ...]
    steps: int = 0

    @property
    def started(self) -> bool:
        return not math.isnan(self.start)

    @property
    def reused(self) -> bool:
        return self.started and self.init <= 0.0

    @property
    def finish(self) -> float:
        return self.start + self.init + self.exec


def _get(rec, *names, default=None):
    for n in names:
        if isinstance(rec, Mapping):
            if n in rec:
                return rec[n]
        elif rec.dtype.names and n in rec.dtype.names:
            return rec[n]
    return default


def task_bars(records) -> list[Bar]:
    """The timeline's reading of the records (see the module docstring), in the given order."""
    bars = []
    rows: Iterable = records if not isinstance(records, np.ndarray) else list(records)
    for i, rec in enumerate(rows):
        start = float(_get(rec, "start", default=math.nan))
        order = _get(rec, "order")
        if order is not None and int(order) < 0:
            start = math.nan  # the simulator's "not launched" (its start field is then unset)
        servers = _get(rec, "servers", default=())
        ids = tuple(server_ids(int(servers))) if isinstance(servers, (int, np.integer)) else tuple(int(j) for j in
                                                                                                      servers)
        init = float(_get(rec, "init", "init_s", default=0.0))
        exec_ = float(_get(rec, "exec", "exec_s", default=math.nan))
        if math.isnan(exec_) and not math.isnan(start):
            exec_ = float(_get(rec, "finish", default=start)) - start - (0.0 if math.isnan(init) else init)
        bars.append(Bar(task=int(_get(rec, "task_id", "id", default=i)), arrival=float(_get(rec, "arrival")),
                        start=start, init=0.0 if math.isnan(init) else init, exec=exec_,
                        servers=ids if not math.isnan(start) else (), steps=int(_get(rec, "steps", default=0) or 0)))
    return bars


def draw_timeline(records, *, nodes: int | None = None, path: str | Path | None = None, title: str | None = None,
                  time_unit: str = "model s", tasks_panel: bool = True, end: float | None = None):
    """Draw the schedule of ``records`` (one episode) and return the matplotlib ``Figure``; written to ``path``
    (PNG) when given. ``nodes``: rows of the server panel (default: the highest server used + 1);
    ``time_unit``: the x-axis unit (``model s`` in the simulator, ``wall s`` for a live host); ``end``: the
    right edge (default: the last finish), where never-started tasks stop waiting."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - no pyplot: no global state, safe in a server thread
    from matplotlib.lines import Line2D  # noqa: PLC0415
    from matplotlib.patches import Patch, Rectangle  # noqa: PLC0415

    bars = task_bars(records)
    used = [j for b in bars for j in b.servers]
    n_servers = max(nodes or 0, (max(used) + 1) if used else 1)
    finishes = [b.finish for b in bars if b.started]
    t_end = end if end is not None else max(finishes + [b.arrival for b in bars] + [1.0])
    t_end = max(t_end, 1e-9)

    n_tasks = len(bars)
    heights = [0.4 * n_servers + 0.6] + ([0.1 * n_tasks + 0.6] if tasks_panel and n_tasks else [])
    fig = Figure(figsize=(11, sum(heights) + 1.3))
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})
    ax = axes[0][0]
    min_label = 0.02 * t_end  # bars narrower than this get their id beside them, not inside

    def draw(axis, b: Bar, y: float, h: float, gid: str) -> None:
        colour = TASK_COLOURS[b.task % len(TASK_COLOURS)]
        if b.init > 0:
            axis.add_patch(Rectangle((b.start, y - h / 2), b.init, h, facecolor=colour, alpha=0.35, hatch="////",
                                     edgecolor=colour, lw=0.6, gid=f"{gid}/init"))
        axis.add_patch(Rectangle((b.start + b.init, y - h / 2), b.exec, h, facecolor=colour, edgecolor="black",
                                 lw=0.6, gid=f"{gid}/exec"))

    for b in bars:
        if not b.started:
            continue
        for j in b.servers:
            draw(ax, b, j, 0.8, f"task{b.task}/server{j}")
            if b.exec >= min_label:
                ax.text(b.start + b.init + b.exec / 2, j, str(b.task), ha="center", va="center", fontsize=7,
                        color="white", fontweight="bold")
            else:
                ax.text(b.finish + 0.003 * t_end, j, str(b.task), ha="left", va="center", fontsize=6, color="#333333")
            if b.reused:
                ax.plot([b.start], [j], marker=">", ms=4, color="black", ls="none")
    ax.set_ylim(n_servers - 0.5, -0.5)
    ax.set_yticks(range(n_servers))
    ax.set_yticklabels([f"server {j}" for j in range(n_servers)], fontsize=8)
    ax.set_title(title or "schedule", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor="#999999", alpha=0.35, hatch="////", edgecolor="#666666", label="cold start (init)"),
               Patch(facecolor="#999999", edgecolor="black", label="execution (task id)"),
               Line2D([], [], marker=">", ms=5, color="black", ls="none", label="reused group (no init)")]

    if tasks_panel and n_tasks:
        tx = axes[1][0]
        for row, b in enumerate(bars):
            stop = b.start if b.started else t_end
            tx.plot([b.arrival, stop], [row, row], color="#555555", lw=0.8, gid=f"task{b.task}/wait")
            tx.plot([b.arrival], [row], marker="|", ms=5, color="#555555", gid=f"task{b.task}/arrival")
            if b.started:
                draw(tx, b, row, 0.7, f"task{b.task}/queue")
        tx.set_ylim(n_tasks - 0.5, -0.5)
        step = max(1, int(math.ceil(n_tasks / 16)))
        tx.set_yticks(range(0, n_tasks, step))
        tx.set_yticklabels([str(bars[r].task) for r in range(0, n_tasks, step)], fontsize=7)
        tx.set_ylabel("task (arrival order)", fontsize=8)
        tx.grid(axis="x", alpha=0.3)
        handles.append(Line2D([], [], color="#555555", lw=0.8, marker="|", label="waiting (arrival to start)"))
    bottom = axes[-1][0]
    bottom.set_xlim(0, t_end * 1.01)
    bottom.set_xlabel(f"time ({time_unit})")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
