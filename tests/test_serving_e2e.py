"""End to end over real HTTP on 127.0.0.1: a host process and simulated worker processes (issue 5 acceptance).

One cluster (host + 5 workers, time scale 0.005) serves the whole module; the fault tests kill a worker
with SIGKILL and crash/restart the host on the same data directory."""

import itertools
import json
import sqlite3
import time

import pytest

from eatsched.serving.client import Client
from eatsched.serving.launch import LocalCluster

TOKEN = "s3cret"
NODES = 5  # one more than the largest task, so 4-patch tasks still fit after a worker dies
PROMPTS = ["a lighthouse on a cliff at dawn", "a red fox in fresh snow", "an astronaut riding a horse",
           "a bowl of ramen, studio light", "a cyberpunk street in the rain"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("serve"), nodes=NODES, time_scale=0.005, policy="eat", token=TOKEN,
                     public_read=True, heartbeat_s=0.3, heartbeat_timeout_s=2.0)  # the web page reads without one
    with c:
        c.start_host()
        c.start_workers()
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.url, token=TOKEN) as cl:
        yield cl


def submit_batch(client, n, seed0=0):
    ks = itertools.cycle([1, 2, 4, 1, 2])
    return [client.submit(PROMPTS[i % len(PROMPTS)] + f" #{seed0 + i}", patches=next(ks), seed=seed0 + i)
            for i in range(n)]


def finished_transitions(cluster):
    db = sqlite3.connect(cluster.data_dir / "eat.sqlite")
    rows = db.execute("SELECT task_id, COUNT(*) FROM transitions WHERE state='finished' GROUP BY task_id").fetchall()
    db.close()
    return dict(rows)


def assert_consistent(tasks):
    """Timings add up, every task ran on exactly k distinct servers, and no server ran two tasks at once."""
    for t in tasks:
        assert t["state"] == "finished", t
        assert t["queued_at"] <= t["started_at"] <= t["finished_at"]
        assert t["wait_s"] == pytest.approx(t["started_at"] - t["queued_at"])
        assert t["response_s"] == pytest.approx(t["finished_at"] - t["queued_at"])
        assert len(t["servers"]) == len(set(t["servers"])) == t["patches"]
        assert 5 <= t["steps"] <= 32
        assert t["exec_s"] > 0 and t["init_s"] >= 0
        assert t["init_s"] + t["exec_s"] <= t["finished_at"] - t["started_at"] + 1e-3
        if not t["reload"]:
            assert t["init_s"] == 0.0
        assert t["quality_estimate"] == pytest.approx(min(0.27, 0.16 * __import__("math").log(t["steps"])
                                                          / __import__("math").log(6) - 0.02))
    by_server = {}
    for t in tasks:
        for s in t["servers"]:
            by_server.setdefault(s, []).append((t["started_at"], t["finished_at"]))
    for spans in by_server.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 1e-6, "a server ran two tasks at once"


def test_200_tasks_finish_with_consistent_timings(cluster, client):
    ids = submit_batch(client, 200)
    rows = client.wait_all(ids, timeout=150)
    tasks = [rows[i] for i in ids]
    assert_consistent(tasks)
    assert all(v == 1 for v in finished_transitions(cluster).values())
    # reuse happened, and the predictor learned from the measured runs
    assert any(not t["reload"] for t in tasks) and any(t["reload"] for t in tasks)
    fits = {(f["k"]): f for f in client.cluster()["predictor"]}
    assert fits[1]["runs"] > 10
    # images are real PNGs of the finished tasks
    for t in tasks[:3]:
        assert client.image(t["id"])[:8] == b"\x89PNG\r\n\x1a\n"
    text = client.http.get("/metrics").text
    assert 'eat_tasks{state="finished"} 200' in text and "eat_response_seconds_count 200" in text


def test_kill_worker_mid_run_all_tasks_finish_and_it_rejoins(cluster, client):
    before = client.cluster()["workers"]
    ids = submit_batch(client, 60, seed0=1000)
    time.sleep(0.6)
    cluster.kill_worker("w1")  # kill -9
    killed_at = time.time()
    rows = client.wait_all(ids, timeout=120)
    tasks = [rows[i] for i in ids]
    assert_consistent(tasks)
    c = client.cluster()
    w1 = next(w for w in c["workers"] if w["id"] == "w1")
    assert not w1["up"]
    assert "eat_worker_failures_total" in client.http.get("/metrics").text
    assert all(v == 1 for v in finished_transitions(cluster).values())
    # once the host noticed (heartbeat timeout), nothing was started on w1
    assert len(before) == NODES
    late = [t for t in tasks if t["started_at"] > killed_at + cluster.heartbeat_timeout_s + 0.5]
    assert all("w1" not in t["servers"] for t in late)
    cluster.start_worker("w1")
    cluster.wait_workers(NODES, timeout=60)
    ids = submit_batch(client, 20, seed0=2000)
    rows = client.wait_all(ids, timeout=60)
    assert all(r["state"] == "finished" for r in rows.values())


def test_host_restart_mid_run_loses_nothing_and_runs_nothing_twice(cluster, client):
    ids = submit_batch(client, 80, seed0=3000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # crash once some tasks finished and others are still running
        states = [t["state"] for t in client.all_tasks() if t["id"] in set(ids)]
        if states.count("finished") >= 5 and "running" in states:
            break
        time.sleep(0.02)
    cluster.kill_host()
    db = sqlite3.connect(cluster.data_dir / "eat.sqlite")  # what the crash left on disk
    at_crash = dict(db.execute("SELECT id, attempt FROM tasks WHERE state='running'").fetchall())
    unfinished = db.execute("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')").fetchone()[0]
    db.close()
    assert unfinished > 0, "the crash came too late to test anything"
    cluster.start_host()
    rows = client.wait_all(ids, timeout=150)
    tasks = [rows[i] for i in ids]
    assert len(tasks) == 80
    assert_consistent(tasks)
    done = finished_transitions(cluster)
    assert all(done[i] == 1 for i in ids), "a task finished twice"
    # what was running at the crash went back to the queue and ran again as a new attempt
    for tid, attempt in at_crash.items():
        trans = [(x["state"], x["detail"]) for x in cluster_transitions(cluster, tid)]
        assert ("queued", "host restarted") in trans, trans
        assert rows[tid]["attempt"] == attempt + 1


def cluster_transitions(cluster, task_id):
    db = sqlite3.connect(cluster.data_dir / "eat.sqlite")
    db.row_factory = sqlite3.Row
    out = [dict(r) for r in db.execute("SELECT * FROM transitions WHERE task_id=? ORDER BY id", (task_id,))]
    db.close()
    return out


def test_eat_submit_waits_for_the_image(cluster, tmp_path):
    from typer.testing import CliRunner

    from eatsched.cli import app

    out = tmp_path / "cat.png"
    r = CliRunner().invoke(app, ["submit", "a cat in a teacup", "--patches", "2", "--host", cluster.url, "--token",
                                 TOKEN, "--wait", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["state"] == "finished" and d["patches"] == 2
    assert out.read_bytes()[:4] == b"\x89PNG"


def _chrome():
    import shutil

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


def test_web_page_in_a_headless_browser_shows_the_task_finishing_and_its_image(cluster):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    try:
        browser.get(cluster.url + "/")
        WebDriverWait(browser, 20).until(lambda b: "policy:" in b.find_element(By.ID, "policy").text)
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "prompt").send_keys("a paper boat on a puddle")
        browser.find_element(By.ID, "submit").click()
        # the page re-renders its tables every second, so read them in one script call (no stale elements)
        task_id = WebDriverWait(browser, 30).until(lambda b: b.execute_script(
            "const r = [...document.querySelectorAll('tr.task')].find((r) => r.textContent.includes('paper boat')"
            " && r.dataset.state === 'finished'); return r ? r.dataset.id : null;"))
        WebDriverWait(browser, 20).until(lambda b: b.execute_script(
            "const i = document.querySelector(`img.result[data-id='${arguments[0]}']`);"
            " return i !== null && i.complete && i.naturalWidth > 0;", task_id))
        assert browser.find_element(By.ID, "msg").text == ""
        assert "w0" in browser.find_element(By.ID, "servers").text
    finally:
        browser.quit()
