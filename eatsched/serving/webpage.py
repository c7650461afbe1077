"""The host's web page (GET /): submit a prompt, watch queue and servers live, see the schedule and finished images.

One self-contained HTML document (no external assets: it works offline), polling the JSON API. Every time it
shows carries its unit: the host measures wall seconds (``wall s``); the policy's clock runs in model seconds
(``model s`` = wall s / time scale), shown beside them where it helps.

The schedule picture (``GET /v1/timeline.png``, from ``GET /v1/timeline``) is drawn by the simulator's own
``sim.timeline.draw_timeline`` from the host's task records: ``host_timeline`` turns the tasks of the last few
minutes into the records it reads, ``timeline_png`` draws them. ``eat demo`` draws its ``timeline.png`` with the
same two functions (in model seconds).
"""

from __future__ import annotations

import io
import math
import threading
import time

TIMELINE_MINUTES = 5.0
"""How far back the web page's schedule picture reaches (wall minutes)."""
TIMELINE_MAX_TASKS = 500
"""At most this many of the newest tasks are drawn."""
TASK_PANEL_MAX = 60
"""The picture's lower panel (one row per task: its wait, then its run) is drawn up to this many tasks."""


def timeline_records(tasks: list[dict], slots: dict[str, int], *, now: float, since: float | None = None,
                     wall_per_unit: float = 1.0) -> dict:
    """The records ``sim.timeline.draw_timeline`` reads, from tasks as the API shows them (``TaskPublic``).

    ``slots`` maps worker names to server rows; ``now`` is the wall epoch the picture ends at; ``since`` the wall
    epoch it starts at (default: the first task's arrival); times are divided by ``wall_per_unit`` (1: wall s;
    the time scale: model s) and counted from the start. Tasks are numbered in arrival order. A running task's
    bar ends at ``now`` (its cold start is the predicted one until it reports); queued tasks wait to ``now``;
    cancelled and failed tasks are left out."""
    keep = [t for t in tasks if t["state"] not in ("cancelled", "failed")
            and (since is None or t["state"] in ("queued", "running") or (t.get("finished_at") or now) >= since)]
    keep.sort(key=lambda t: t["queued_at"])
    origin = since if since is not None else min((t["queued_at"] for t in keep), default=now)
    u = float(wall_per_unit)
    records = []
    for n, t in enumerate(keep):
        start, init, exec_ = math.nan, 0.0, math.nan
        if t.get("started_at") is not None:
            start = t["started_at"]
            if t["state"] == "finished":
                init, exec_ = float(t.get("init_s") or 0.0), float(t.get("exec_s") or 0.0)
            else:  # running: measured times come with the result
                elapsed = max(0.0, now - start)
                init = min(elapsed, float(t.get("predicted_init_s") or 0.0)) if t.get("reload") else 0.0
                exec_ = elapsed - init
        records.append({"task_id": n, "id": t["id"], "state": t["state"], "arrival": (t["queued_at"] - origin) / u,
                        "start": (start - origin) / u, "init": init / u, "exec": exec_ / u,
                        "servers": [slots[s] for s in t.get("servers") or [] if s in slots],
                        "steps": t.get("steps") or 0, "patches": t["patches"], "reload": t.get("reload")})
    return {"unit": "wall s" if u == 1.0 else "model s", "wall_per_unit": u, "origin_epoch": origin,
            "end": (now - origin) / u, "tasks": records}


def host_timeline(host, minutes: float = TIMELINE_MINUTES) -> dict:
    """``GET /v1/timeline``: the host's tasks of the last ``minutes`` as timeline records (wall s since
    ``origin_epoch``), with the servers' rows (``servers``: worker name per row) and the policy."""
    now = time.time()
    since = now - minutes * 60.0
    rows, _ = host.store.list(limit=TIMELINE_MAX_TASKS)
    names = list(host.sched.names)
    tl = timeline_records([host.task_public(r) for r in rows], {n: j for j, n in enumerate(names) if n},
                          now=now, since=max(since, min((r["created_at"] for r in rows), default=now)))
    tl.update(minutes=minutes, servers=names, policy=host.policy_name, time_scale=host.settings.time_scale)
    return tl


def json_safe(tl: dict) -> dict:
    """``host_timeline``'s dict for JSON: a time not known yet (NaN: a queued task's start) becomes null."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return {**tl, "tasks": [{k: clean(v) for k, v in t.items()} for t in tl["tasks"]]}


_render_lock = threading.Lock()


def timeline_png(tl: dict, *, title: str | None = None, path=None, dpi: int = 90) -> bytes:
    """Draw ``tl`` (``timeline_records``' dict plus ``servers``, the worker name of each row) with the
    simulator's ``draw_timeline``; returns the PNG (also written to ``path`` when given). Thread-safe."""
    from ..sim.timeline import draw_timeline  # noqa: PLC0415 - matplotlib only when a picture is asked for

    names = tl.get("servers") or []
    origin = time.strftime("%H:%M:%S", time.localtime(tl["origin_epoch"]))
    with _render_lock:
        fig = draw_timeline(tl["tasks"], nodes=len(names) or None, title=title, end=max(tl["end"], 1e-6),
                            time_unit=f"{tl['unit']} since {origin}",
                            tasks_panel=0 < len(tl["tasks"]) <= TASK_PANEL_MAX)
        ax = fig.axes[0]
        rows = len(ax.get_yticks())
        ax.set_yticklabels([f"{j} {names[j]}" if j < len(names) and names[j] else f"server {j}" for j in range(rows)],
                           fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    png = buf.getvalue()
    if path is not None:
        from pathlib import Path  # noqa: PLC0415

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png)
    return png


def host_timeline_png(tl: dict) -> bytes:
    """``GET /v1/timeline.png``: ``host_timeline``'s records drawn (wall s)."""
    n = len(tl["tasks"])
    title = (f"schedule of the last {tl['minutes']:g} min: {n} tasks, policy {tl['policy']} "
             f"(wall s; model s = wall s / {tl['time_scale']:g})" if n else
             f"no tasks in the last {tl['minutes']:g} min (policy {tl['policy']})")
    return timeline_png(tl, title=title)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eatsched host</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
 h1{font-size:1.3em;margin:0 0 .5em} h2{font-size:1.05em;margin:1.2em 0 .4em}
 form{display:flex;gap:.5em;flex-wrap:wrap;align-items:center}
 input[type=text]{flex:1;min-width:20em;padding:.4em} select,button,input{padding:.4em}
 table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
 td.t{text-align:right;white-space:nowrap}
 .busy{background:#ffe9c7}.idle{background:#e4f7e4}.down{background:#f3d0d0}
 #images{display:flex;flex-wrap:wrap;gap:.6em}
 figure{margin:0;width:180px;font-size:.75em} figure img{width:180px;height:180px;display:block}
 #timeline{max-width:100%;width:1000px;border:1px solid #ddd;background:#fff}
 #msg{color:#a00;min-height:1.2em} .muted{color:#777} .note{font-size:.85em;color:#555;max-width:60em}
</style></head><body>
<h1>eatsched host <span class="muted" id="policy"></span></h1>
<p class="note" id="units">Times on this page are <b>wall seconds</b> (wall s), as the host measures them. The
policy's clock runs in <b>model seconds</b> (model s = wall s / time scale <span id="scale"></span>); hover a time
to see it in model s.</p>
<form id="f">
 <input type="text" id="prompt" placeholder="a lighthouse on a cliff at dawn" required>
 <label>patches <select id="patches"><option>1</option><option>2</option><option>4</option></select></label>
 <input type="password" id="token" placeholder="token (if required)" size="12">
 <button type="submit" id="submit">Generate</button>
</form>
<div id="msg"></div>
<h2>Queue and tasks</h2>
<table><thead><tr><th>task</th><th>prompt</th><th>k</th><th>state</th><th>steps</th><th>servers</th>
<th>wait (wall s)</th><th>init (wall s)</th><th>exec (wall s)</th><th>response (wall s)</th></tr></thead>
<tbody id="tasks"></tbody></table>
<h2>Servers</h2>
<table><thead><tr><th>#</th><th>worker</th><th>state</th><th>task</th><th>model</th><th>group</th>
<th>busy for, predicted (wall s)</th></tr></thead>
<tbody id="servers"></tbody></table>
<h2>Schedule, last 5 minutes</h2>
<p class="note">One row per server, time across (wall s): each task is a bar on each of its k servers at once,
hatched while its group cold-starts (loads the model), solid while it runs; &#9656; marks a reused group (no
cold start). The lower panel shows each task's wait from arrival to start.</p>
<img id="timeline" alt="the schedule of the last 5 minutes" src="/v1/timeline.png?minutes=5">
<h2>Finished images</h2><div id="images"></div>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const shown = new Set();
let scale = 1;
// every time shown: its value in wall seconds with the unit, and in model seconds on hover
const wall = (s) => s == null ? "" : `${s.toFixed(2)} wall s`;
const tcell = (s) => s == null ? "<td></td>" :
  `<td class="t" title="${(s / scale).toFixed(1)} model s">${wall(s)}</td>`;
$("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const headers = {"Content-Type": "application/json"};
  if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
  const r = await fetch("/v1/tasks", {method: "POST", headers,
    body: JSON.stringify({prompt: $("prompt").value, patches: parseInt($("patches").value)})});
  const d = await r.json();
  $("msg").textContent = r.ok ? "" : (d.detail || r.statusText);
  if (r.ok) { $("prompt").value = ""; refresh(); }
});
async function refresh() {
  try {
    const c = await (await fetch("/v1/cluster")).json();
    scale = c.time_scale;
    $("scale").textContent = c.time_scale;
    $("policy").textContent = "policy: " + c.policy + ", queue " + c.queue_length + ", running " + c.running +
      ", time scale " + c.time_scale + " wall s per model s";
    const sel = $("patches");
    if (sel.options.length !== c.patches.length) sel.innerHTML = c.patches.map((k) => `<option>${k}</option>`).join("");
    $("servers").innerHTML = c.servers.map((s) => {
      const st = !s.up ? "down" : (s.busy ? "busy" : "idle");
      return `<tr class="${st}"><td>${s.index}</td><td>${esc(s.worker)}</td><td>${st}</td>` +
        `<td>${esc((s.task || "").slice(0, 8))}</td><td>${esc(s.model)}</td><td>${s.group ?? ""}</td>` +
        (s.busy ? tcell(s.busy_for_s) : "<td></td>") + `</tr>`;
    }).join("");
    const t = await (await fetch("/v1/tasks?limit=20")).json();
    $("tasks").innerHTML = t.data.map((x) => `<tr class="task" data-id="${x.id}" data-state="${x.state}">` +
      `<td>${x.id.slice(0, 8)}</td><td>${esc(x.prompt.slice(0, 60))}</td><td>${x.patches}</td>` +
      `<td class="state">${x.state}</td><td>${x.steps ?? ""}</td><td>${esc(x.servers.join(" "))}</td>` +
      tcell(x.wait_s) + tcell(x.state === "finished" ? x.init_s : null) +
      tcell(x.state === "finished" ? x.exec_s : null) + tcell(x.response_s) + `</tr>`).join("");
    for (const x of t.data.slice().reverse()) {
      if (x.state !== "finished" || shown.has(x.id)) continue;
      shown.add(x.id);
      const fig = document.createElement("figure");
      fig.innerHTML = `<img class="result" data-id="${x.id}" src="${x.image_url}" alt="${esc(x.prompt)}">` +
        `<figcaption>${esc(x.prompt.slice(0, 80))}<br><span class="muted">k=${x.patches}, ${x.steps} steps, ` +
        `response <span class="t">${wall(x.response_s)}</span></span></figcaption>`;
      $("images").prepend(fig);
    }
  } catch (e) { $("msg").textContent = "host unreachable: " + e; }
}
let drawing = false;
function redraw() {  // the schedule picture, one request at a time, only while the page is visible
  if (drawing || document.hidden) return;
  drawing = true;
  const img = new Image();
  img.onload = () => { $("timeline").src = img.src; drawing = false; };
  img.onerror = () => { drawing = false; };
  img.src = "/v1/timeline.png?minutes=5&t=" + Date.now();
}
refresh(); setInterval(refresh, 1000); setInterval(redraw, 5000);
</script></body></html>
"""
