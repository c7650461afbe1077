"""Issue 17, the serving system: what a new user meets first when the host runs.

Readiness (the policy is warmed up before the host decides anything, ``/readyz``), the first decision's time in
the host's log, ``eat submit --wait`` saying why it waits, the schedule picture (``/v1/timeline``), placeholder
images that show how a task ran, units on every time the web page shows (headless Chromium), and a shutdown
without tracebacks. Real HTTP on 127.0.0.1, hosts and workers as subprocesses stopped by their process ids.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from eatsched.gen.backend import GroupSpec, PatchJob
from eatsched.gen.backends.simulated import SEAM_COLOUR, SimulatedBackend, band_rows, placeholder_png
from eatsched.serving.client import Client, waiting_reason
from eatsched.serving.host import Host
from eatsched.serving.launch import LocalCluster
from eatsched.serving.settings import HostSettings
from eatsched.serving.webpage import timeline_png, timeline_records

FIRST_DECISION = re.compile(r"first decision after ready: ([\d.]+) wall ms to decide, ([\d.]+) wall ms with dispatch")
TIME_TEXT = re.compile(r"^\d+\.\d+ (wall|model) s$")


# --- images -------------------------------------------------------------------------------------------------
def band_colour(img: Image.Image, top: int, bottom: int) -> tuple[int, int, int]:
    """The band's colour at its left edge, a few rows below its top (no text there)."""
    return img.getpixel((1, top + 3))


@pytest.mark.parametrize("k, width, height", [(1, 512, 512), (2, 512, 512), (4, 512, 384), (8, 256, 512)])
def test_placeholder_is_the_task_size_with_one_band_per_patch(k, width, height):
    members = tuple(f"gpu{j}" for j in range(k))
    img = Image.open(io.BytesIO(placeholder_png("a lighthouse at dawn", 5, width, height, members=members, steps=20)))
    assert img.size == (width, height)
    bands = band_rows(height, k)
    assert len(bands) == k and bands[0][0] == 0 and bands[-1][1] == height
    colours = [band_colour(img, top, bottom) for top, bottom in bands]
    assert len(set(colours)) == k, colours  # every band its own colour
    for top, _ in bands[1:]:
        assert img.getpixel((width // 2, top)) == SEAM_COLOUR  # a visible seam where two bands meet


def test_simulated_backend_renders_the_job_at_its_size_on_rank_0_only():
    be = SimulatedBackend(time_scale=0.0)
    members = ("w0", "w1", "w2", "w3")
    results = [be.run(PatchJob(task_id="t", prompt="a red fox in fresh snow", model="m", steps=12, seed=3,
                               width=512, height=512, group=GroupSpec("g", members, rank)))
               for rank in range(len(members))]
    assert results[0].image_png is not None and all(r.image_png is None for r in results[1:])
    img = Image.open(io.BytesIO(results[0].image_png))
    assert img.size == (512, 512)
    assert len({band_colour(img, top, bottom) for top, bottom in band_rows(512, 4)}) == 4


# --- timeline records ---------------------------------------------------------------------------------------
def public_task(i, state, queued, started=None, finished=None, servers=(), init=0.0, exec_=None, reload=None,
                predicted_init=None):
    return {"id": f"id{i}", "state": state, "patches": max(1, len(servers)), "queued_at": queued,
            "started_at": started, "finished_at": finished, "servers": list(servers), "init_s": init,
            "exec_s": exec_, "reload": reload, "steps": 10, "predicted_init_s": predicted_init}


def test_timeline_records_put_each_task_on_its_servers_in_the_chosen_unit():
    t0 = 1000.0
    tasks = [public_task(0, "finished", t0, t0 + 1, t0 + 4, ("w1", "w2"), init=1.0, exec_=2.0, reload=True),
             public_task(1, "running", t0 + 2, t0 + 5, servers=("w0",), reload=True, predicted_init=0.5),
             public_task(2, "queued", t0 + 3),
             public_task(3, "cancelled", t0 + 3.5)]
    tl = timeline_records(tasks, {"w0": 0, "w1": 1, "w2": 2}, now=t0 + 6, wall_per_unit=0.1)
    assert tl["unit"] == "model s" and tl["origin_epoch"] == t0 and tl["end"] == pytest.approx(60.0)
    done, running, queued = tl["tasks"]  # the cancelled task is left out
    assert done["servers"] == [1, 2] and done["start"] == pytest.approx(10.0)
    assert done["init"] == pytest.approx(10.0) and done["exec"] == pytest.approx(20.0)
    assert running["servers"] == [0] and running["init"] == pytest.approx(5.0)  # its predicted cold start
    assert running["start"] + running["init"] + running["exec"] == pytest.approx(tl["end"])  # runs until now
    assert math.isnan(queued["start"]) and queued["servers"] == []
    tl["servers"] = ["w0", "w1", "w2"]
    png = timeline_png(tl, title="test")
    assert Image.open(io.BytesIO(png)).size[0] > 500


# --- readiness, in process ------------------------------------------------------------------------------------
def test_engine_decides_nothing_before_its_warm_up_and_logs_the_first_decision(tmp_path, caplog):
    """A task queued before the host is ready waits; the warm-up runs first, then the task launches, and the
    first decision's wall time is kept (``/readyz``) and logged."""
    caplog.set_level("INFO", logger="eatsched.host")

    async def scenario() -> tuple[dict, dict, str]:
        h = Host(HostSettings(data_dir=str(tmp_path), nodes=4, policy="eat", tick_s=0.05))
        for j in range(4):
            h.register(worker_id=f"w{j}", speed=1.0, addr="127.0.0.1", port=29500 + j, backend="test", running=None)
        await h.start()  # the loop starts at the next await: the task below is queued before it runs
        tid = h.submit(prompt="a cat", negative_prompt=None, patches=2, model="sd-v1-4", seed=1, width=64,
                       height=64, client=None)["id"]
        before = h.engine.readiness()
        state_before = h.store.get(tid)["state"]
        deadline = time.monotonic() + 120
        while h.store.get(tid)["state"] == "queued" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = h.engine.readiness()
        state = h.store.get(tid)["state"]
        await h.stop()
        return before | {"state": state_before}, after, state

    before, after, state = asyncio.run(scenario())
    assert before["ready"] is False and before["state"] == "queued" and before["first_decision"] is None
    assert state == "running"
    assert after["ready"] is True and after["warmup_wall_s"] > 0
    first = after["first_decision"]
    assert first["launches"] >= 1 and first["decide_wall_ms"] > 0 and first["goal_wall_ms"] == 100.0
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("ready: policy eat warmed up in") for line in lines), lines
    assert any(FIRST_DECISION.search(line) for line in lines), lines


# --- one host with 3 of its 4 workers up ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("first-hour"), nodes=4, workers=3, time_scale=0.01, policy="eat")
    with c:
        readiness = []
        c.host_proc = c._spawn(["serve", "--port", str(c.port), "--data-dir", str(c.data_dir), "--nodes", "4",
                                "--policy", "eat", "--time-scale", "0.01", "--rate-limit", "0", "--log-level", "info"],
                               "host.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every answer of /readyz from the first one the host gives
            try:
                r = httpx.get(f"{c.url}/readyz", timeout=2.0)
                readiness.append((r.status_code, r.json()))
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        c.readiness = readiness
        c.start_workers()
        yield c


@pytest.fixture(scope="module")
def finished(cluster):
    """Six small tasks, finished."""
    with Client(cluster.url) as cl:
        ids = [cl.submit(f"a paper boat #{i}", patches=[1, 2, 1][i % 3], seed=i) for i in range(6)]
        rows = cl.wait_all(ids, timeout=120)
    assert all(r["state"] == "finished" for r in rows.values())
    return rows


def test_readyz_is_503_while_warming_up_then_200_and_healthz_is_liveness(cluster, finished):
    statuses = [s for s, _ in cluster.readiness]
    assert statuses and statuses[-1] == 200
    assert statuses == sorted(statuses, reverse=True)  # 503 (warming up) only before 200 (ready)
    assert all(body["ready"] is (s == 200) for s, body in cluster.readiness)
    r = httpx.get(f"{cluster.url}/readyz")
    assert r.status_code == 200 and r.json()["warmup_wall_s"] > 0
    assert httpx.get(f"{cluster.url}/healthz").json()["ok"] is True


def test_first_decision_after_ready_is_in_the_log_and_readyz_and_no_stall(cluster, finished):
    log = (cluster.log_dir / "host.log").read_text()
    m = FIRST_DECISION.search(log)
    assert m, log
    first = httpx.get(f"{cluster.url}/readyz").json()["first_decision"]
    assert first["decide_wall_ms"] == pytest.approx(float(m.group(1)), abs=0.01)
    print(f"first decision after ready: {m.group(1)} wall ms to decide, {m.group(2)} with dispatch (goal < 100)")
    assert "stalled" not in log


def test_submit_wait_says_why_a_task_waits(cluster, finished):
    """A 4-patch task with 3 of 4 servers up: ``eat submit --wait`` says so on stderr instead of hanging silently."""
    proc = subprocess.Popen([sys.executable, "-m", "eatsched.cli", "submit", "a wide panorama", "--patches", "4",
                             "--host", cluster.url, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stderr.readline()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert line.startswith("waiting: queued: needs 4 servers, 3 up"), line
    with Client(cluster.url) as cl:  # the task is queued: cancel it, and check the reason from the same view
        (task,) = [t for t in cl.all_tasks() if t["prompt"] == "a wide panorama"]
        assert waiting_reason(task, cl.cluster()).startswith("queued: needs 4 servers, 3 up")
        assert cl.http.delete(f"/v1/tasks/{task['id']}").status_code == 200


def test_submit_prints_times_with_their_units(cluster, finished):
    from typer.testing import CliRunner

    from eatsched.cli import app

    r = CliRunner().invoke(app, ["submit", "a cat in a teacup", "--host", cluster.url, "--wait"])
    assert r.exit_code == 0, r.output
    assert re.search(r"response \d+\.\d\d wall s \(wait [\d.]+, init [\d.]+, exec [\d.]+ wall s; = [\d.]+ model s",
                     r.stdout), r.stdout
    r = CliRunner().invoke(app, ["submit", "a cat in a teacup", "--host", cluster.url, "--wait", "--json"])
    d = json.loads(r.stdout)
    assert d["time_unit"] == "wall s" and d["time_scale"] == 0.01
    assert d["response_model_s"] == pytest.approx(d["response_s"] / 0.01)


def test_timeline_of_the_host_has_every_finished_task_on_its_servers(cluster, finished):
    tl = httpx.get(f"{cluster.url}/v1/timeline", params={"minutes": 10}).json()
    assert tl["unit"] == "wall s"
    by_id = {t["id"]: t for t in tl["tasks"]}
    for tid, row in finished.items():
        rec = by_id[tid]
        assert [tl["servers"][j] for j in rec["servers"]] == row["servers"]
        assert rec["start"] == pytest.approx(row["started_at"] - tl["origin_epoch"])
        assert rec["arrival"] <= rec["start"] and rec["exec"] > 0
    r = httpx.get(f"{cluster.url}/v1/timeline.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert img.shape[1] > 500 and len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # something was drawn


def _chrome():
    import shutil

    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_web_page_labels_the_unit_of_every_time_it_shows(cluster, finished):
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    try:
        browser.get(cluster.url + "/")
        # one script call reads the page as rendered (it re-renders every second)
        page = WebDriverWait(browser, 30).until(lambda b: b.execute_script("""
            const rows = [...document.querySelectorAll('tr.task')];
            const img = document.getElementById('timeline');
            if (!rows.some((r) => r.dataset.state === 'finished') || !document.querySelector('figure') ||
                !(img.complete && img.naturalWidth > 0)) return null;
            return {times: [...document.querySelectorAll('.t')].map((e) => e.textContent.trim()),
                    titles: [...document.querySelectorAll('td.t')].map((e) => e.title),
                    headers: [...document.querySelectorAll('th')].map((e) => e.textContent.trim()),
                    cells: [...document.querySelectorAll('td')].map((e) => e.textContent.trim()),
                    policy: document.getElementById('policy').textContent,
                    units: document.getElementById('units').textContent,
                    timeline: img.naturalWidth};"""))
    finally:
        browser.quit()
    assert len(page["times"]) >= 4 * len(finished)  # wait, init, exec, response of each finished task at least
    bad = [t for t in page["times"] if not TIME_TEXT.match(t)]
    assert not bad, bad
    assert all(re.fullmatch(r"\d+\.\d model s", t) for t in page["titles"]), page["titles"]
    timed = [h for h in page["headers"] if re.search(r"wait|init|exec|response|busy", h)]
    assert len(timed) == 5 and all(h.endswith("(wall s)") for h in timed), page["headers"]
    # no other cell holds a bare number of seconds
    assert not [c for c in page["cells"] if re.fullmatch(r"\d+\.\d+( s)?", c)]
    assert "wall s per model s" in page["policy"]
    assert "wall seconds" in page["units"] and "model seconds" in page["units"]


# --- shutdown -----------------------------------------------------------------------------------------------
def test_host_shutdown_with_workers_polling_prints_no_traceback(tmp_path):
    with LocalCluster(tmp_path, nodes=2, time_scale=0.01, policy="fifo") as c:
        c.start_host()
        c.start_workers()
        with Client(c.url) as cl:
            ids = [cl.submit("a red fox", patches=k) for k in (1, 2)]
            assert all(r["state"] == "finished" for r in cl.wait_all(ids, timeout=60).values())
        time.sleep(0.5)  # the workers are in their long polls now
        t0 = time.monotonic()
        os.kill(c.host_proc.pid, signal.SIGTERM)  # the host first, while its workers still poll
        c.host_proc.wait(30)
        stopped_in = time.monotonic() - t0
        c.host_proc = None
    log = (c.log_dir / "host.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert "Application shutdown complete" in log
    print(f"host stopped in {stopped_in:.2f} wall s")
