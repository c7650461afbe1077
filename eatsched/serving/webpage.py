"""The host's web page (GET /): submit a prompt, watch queue and servers live, see finished images.

One self-contained HTML document (no external assets: it works offline), polling the JSON API."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eatsched host</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
 h1{font-size:1.3em;margin:0 0 .5em} h2{font-size:1.05em;margin:1.2em 0 .4em}
 form{display:flex;gap:.5em;flex-wrap:wrap;align-items:center}
 input[type=text]{flex:1;min-width:20em;padding:.4em} select,button,input{padding:.4em}
 table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
 .busy{background:#ffe9c7}.idle{background:#e4f7e4}.down{background:#f3d0d0}
 #images{display:flex;flex-wrap:wrap;gap:.6em}
 figure{margin:0;width:180px;font-size:.75em} figure img{width:180px;height:180px;display:block}
 #msg{color:#a00;min-height:1.2em} .muted{color:#777}
</style></head><body>
<h1>eatsched host <span class="muted" id="policy"></span></h1>
<form id="f">
 <input type="text" id="prompt" placeholder="a lighthouse on a cliff at dawn" required>
 <label>patches <select id="patches"><option>1</option><option>2</option><option>4</option></select></label>
 <input type="password" id="token" placeholder="token (if required)" size="12">
 <button type="submit" id="submit">Generate</button>
</form>
<div id="msg"></div>
<h2>Queue and tasks</h2>
<table><thead><tr><th>task</th><th>prompt</th><th>k</th><th>state</th><th>steps</th><th>servers</th>
<th>response s</th></tr></thead><tbody id="tasks"></tbody></table>
<h2>Servers</h2>
<table><thead><tr><th>#</th><th>worker</th><th>state</th><th>task</th><th>model</th><th>group</th></tr></thead>
<tbody id="servers"></tbody></table>
<h2>Finished images</h2><div id="images"></div>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const shown = new Set();
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
    $("policy").textContent = "policy: " + c.policy + ", queue " + c.queue_length + ", running " + c.running;
    const sel = $("patches");
    if (sel.options.length !== c.patches.length) sel.innerHTML = c.patches.map((k) => `<option>${k}</option>`).join("");
    $("servers").innerHTML = c.servers.map((s) => {
      const st = !s.up ? "down" : (s.busy ? "busy" : "idle");
      return `<tr class="${st}"><td>${s.index}</td><td>${esc(s.worker)}</td><td>${st}</td>` +
        `<td>${esc((s.task || "").slice(0, 8))}</td><td>${esc(s.model)}</td><td>${s.group ?? ""}</td></tr>`;
    }).join("");
    const t = await (await fetch("/v1/tasks?limit=20")).json();
    $("tasks").innerHTML = t.data.map((x) => `<tr class="task" data-id="${x.id}" data-state="${x.state}">` +
      `<td>${x.id.slice(0, 8)}</td><td>${esc(x.prompt.slice(0, 60))}</td><td>${x.patches}</td>` +
      `<td class="state">${x.state}</td><td>${x.steps ?? ""}</td><td>${esc(x.servers.join(" "))}</td>` +
      `<td>${x.response_s == null ? "" : x.response_s.toFixed(2)}</td></tr>`).join("");
    for (const x of t.data.slice().reverse()) {
      if (x.state !== "finished" || shown.has(x.id)) continue;
      shown.add(x.id);
      const fig = document.createElement("figure");
      fig.innerHTML = `<img class="result" data-id="${x.id}" src="${x.image_url}" alt="${esc(x.prompt)}">` +
        `<figcaption>${esc(x.prompt.slice(0, 80))}</figcaption>`;
      $("images").prepend(fig);
    }
  } catch (e) { $("msg").textContent = "host unreachable: " + e; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
