"""Issue 15, a host you can expose: what an attacker or a buggy client or worker sends must not wedge the host,
fail other clients, or let anyone forge or read what is not theirs. Real HTTP on 127.0.0.1 (hosts in a thread,
or ``eat serve`` processes), hand-driven workers; no mocks. Each test names the issue's item it covers."""

import asyncio
import base64
import contextlib
import io
import json
import shutil
import socket
import tempfile
import threading
import time

import httpx
import pytest
import uvicorn
from PIL import Image

from eatsched.serving.api import create_app
from eatsched.serving.launch import LocalCluster, free_port
from eatsched.serving.settings import HostSettings

CLIENT, WORKER = "client-secret-1", "worker-secret-2"


# --- helpers ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def running_host(tmp_path, **kw):
    """A host in a thread of this process on a free loopback port (X-Forwarded-For ignored, as ``eat serve``)."""
    settings = HostSettings(port=free_port(), data_dir=str(tmp_path), **{"nodes": 1, "policy": "fifo", **kw})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning", lifespan="on", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(15)


def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(url, token=CLIENT):
    return httpx.Client(base_url=url, headers=bearer(token), timeout=30)


def png(color=(200, 40, 40), size=24) -> bytes:
    img = Image.new("RGB", (size, size), color)
    for i in range(size):
        img.putpixel((i, i), (i * 10 % 256, 255 - i, 7 * i % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeWorker:
    """A worker driven by the test, one HTTP call at a time."""

    def __init__(self, url, worker_id, token=WORKER, addr="127.0.0.1", port=29500):
        self.id = worker_id
        self.http = httpx.Client(base_url=url, headers=bearer(token), timeout=30)
        r = self.http.post("/v1/workers/register", json={"id": worker_id, "speed": 1.0, "addr": addr, "port": port,
                                                         "backend": "test"})
        assert r.status_code == 200, r.text

    def job(self, wait=20.0) -> dict:
        r = self.http.get(f"/v1/workers/{self.id}/job", params={"wait": wait})
        assert r.status_code == 200, f"no job for {self.id}: {r.status_code} {r.text}"
        return r.json()

    def result(self, env, **fields) -> httpx.Response:
        job = env["job"]
        body = {"key": env["key"], "attempt": env["attempt"], "task_id": job["task_id"], "rank": job["group"]["rank"],
                "ticket": env.get("ticket", ""), "init_s": 0.0, "exec_s": 0.01, "reloaded": False,
                "image_png": b64(png())} | fields
        return self.http.post(f"/v1/workers/{self.id}/result", json=body)

    def heartbeat(self, running=None) -> httpx.Response:
        return self.http.post(f"/v1/workers/{self.id}/heartbeat", json={"running": running})


def task(c, tid) -> dict:
    r = c.get(f"/v1/tasks/{tid}")
    assert r.status_code == 200, r.text
    return r.json()


def raw(port, request: bytes, timeout=20.0) -> tuple[int, dict]:
    """Send ``request`` as is on a new connection and read one answer. A host that waits for a body it was never
    sent times out here (the test fails), so this shows what is decided before the body is read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"the connection closed without an answer: {buf!r}"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ")[1]), json.loads(body[:length])


def head(method, path, *, token=None, length=None, chunked=False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunks(data: bytes, size=1000) -> bytes:
    out = b"".join(f"{len(data[i:i + size]):x}\r\n".encode() + data[i:i + size] + b"\r\n"
                   for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A host with a client token (workers use it too: no worker token), small body limit, no rate limit."""
    with running_host(tmp_path_factory.mktemp("adv"), token=CLIENT, nodes=4, rate_limit=0,
                      max_body_bytes=4096) as url, client(url) as c:
        yield c


# --- 1. a result that cannot be applied changes nothing; a store failure re-queues ---------------------------
def test_1_a_result_that_cannot_be_applied_is_4xx_and_the_task_runs_on(tmp_path):
    with running_host(tmp_path, token=CLIENT) as url, client(url) as c:
        w = FakeWorker(url, "w0", token=CLIENT)
        tid = c.post("/v1/tasks", json={"prompt": "a cat"}).json()["id"]
        env = w.job()
        good = png((10, 200, 10))
        for fields in ({"rank": 7}, {"rank": -1}, {"rank": 1}, {"image_png": "not base64 at all!"},
                       {"image_png": b64(b"GIF89a: not a PNG")}, {"image_png": b64(good[: len(good) // 2])},
                       {"exec_s": -1.0}, {"key": "someone-else#1"}):
            r = w.result(env, **fields)
            assert 400 <= r.status_code < 500, (fields, r.status_code, r.text)
            assert set(r.json()) >= {"detail", "error"}
            t = task(c, tid)
            assert (t["state"], t["attempt"]) == ("running", 1), fields
            assert c.get("/v1/cluster").json()["servers"][0]["task"] == tid, fields  # its server still runs it
        assert c.delete(f"/v1/tasks/{tid}").status_code == 409  # running: not cancellable, and not wedged:
        r = w.result(env, image_png=b64(good))
        assert r.status_code == 200, r.text
        t = task(c, tid)
        assert (t["state"], t["attempt"]) == ("finished", 1)
        assert c.get(f"/v1/tasks/{tid}/image").content == good
        server = c.get("/v1/cluster").json()["servers"][0]
        assert not server["busy"] and server["task"] is None


def test_1_a_store_failure_while_finishing_requeues_the_task(tmp_path):
    with running_host(tmp_path, token=CLIENT) as url, client(url) as c:
        w = FakeWorker(url, "w0", token=CLIENT)
        tid = c.post("/v1/tasks", json={"prompt": "a dog"}).json()["id"]
        env = w.job()
        images = tmp_path / "images"
        shutil.rmtree(images)
        images.write_text("a file where the image folder was: no image can be written, even by root")
        r = w.result(env)
        assert r.status_code == 503 and r.json()["error"] == "finish_failed", r.text
        images.unlink()
        images.mkdir()
        again = w.job()  # the task went back to the queue, and its (only) server is free for it
        assert again["attempt"] == 2 and again["job"]["task_id"] == tid
        assert w.result(env).status_code == 409  # the failed attempt's result does not count any more
        assert w.result(again).status_code == 200
        t = task(c, tid)
        assert (t["state"], t["attempt"]) == ("finished", 2)
        assert c.get(f"/v1/tasks/{tid}/image").content == png()


# --- 2. one bad submission never fails another ---------------------------------------------------------------
def test_2_one_bad_submission_never_fails_another(tmp_path):
    with running_host(tmp_path, token=CLIENT, rate_limit=0) as url:
        async def submit_all():
            async with httpx.AsyncClient(base_url=url, headers=bearer(CLIENT), timeout=60) as ac:
                bodies = []
                for i in range(160):
                    bodies.append((True, {"prompt": f"valid prompt {i}"}))
                    if i % 4 == 0:
                        bad = ({"prompt": f"lone surrogate {i} \ud800"} if i % 8 else
                               {"prompt": "fine", "negative_prompt": f"lone surrogate {i} \udfff"})
                        bodies.append((False, bad))
                json_type = {"content-type": "application/json"}  # json.dumps escapes them: "\\ud800" on the wire
                answers = await asyncio.gather(*(ac.post("/v1/tasks", content=json.dumps(b), headers=json_type)
                                                 for _, b in bodies))
                return [(ok, r.status_code, r.json()) for (ok, _), r in zip(bodies, answers, strict=True)]

        results = asyncio.run(submit_all())
        assert [s for ok, s, _ in results if ok] == [202] * 160
        assert {(s, d["error"]) for ok, s, d in results if not ok} == {(422, "invalid_text")}
        with client(url) as c:
            assert c.get("/v1/tasks", params={"limit": 1}).json()["count"] == 160
            assert c.post("/v1/tasks", json={"prompt": "still here \U0001f600"}).status_code == 202


def test_2_a_group_commit_the_store_refuses_is_committed_one_by_one(tmp_path):
    """Behind the gate: if the store refuses one submission of a group commit, the others are stored anyway."""
    from eatsched.serving.engine import Engine

    async def flush():
        engine = Engine(HostSettings(data_dir=str(tmp_path), nodes=2, policy="fifo"))
        loop = asyncio.get_running_loop()
        waiting = []
        for i in range(5):
            fields = engine.admit(prompt=f"p{i}")
            if i == 2:
                fields["prompt"] = "past the gate \ud800"  # SQLite cannot store it
            waiting.append(loop.create_future())
            engine._adds.append(({"id": f"task-{i}", **fields}, waiting[-1]))
        engine._flush_adds()
        answers = await asyncio.gather(*waiting, return_exceptions=True)
        stored = (engine.store.counts()["queued"], engine.sched.queued_ids())
        engine.store.close()
        return answers, stored

    answers, (queued, ids) = asyncio.run(flush())
    assert [isinstance(a, dict) for a in answers] == [True, True, False, True, True]
    assert queued == 4 and ids == ["task-0", "task-1", "task-3", "task-4"]


# --- 3. token and body limit before the body is read; limits on every route ----------------------------------
def test_3_token_and_body_limit_are_decided_before_the_body_is_read(api):
    port = api.base_url.port
    huge = 300_000_000  # declared, never sent: a host that reads bodies first waits here forever
    for method, path in (("POST", "/v1/workers/w0/result"), ("POST", "/v1/workers/register"),
                         ("POST", "/v1/tasks"), ("GET", "/v1/tasks")):
        status, body = raw(port, head(method, path, length=huge))
        assert (status, body["error"]) == (401, "missing_token"), (method, path)
        status, body = raw(port, head(method, path, token="wrong", length=huge))
        assert (status, body["error"]) == (403, "wrong_token"), (method, path)
        status, body = raw(port, head(method, path, token=CLIENT, length=huge))
        assert (status, body["error"]) == (413, "body_too_large"), (method, path)
    # the public limit applies to worker routes too, results excepted (they carry images)
    status, _ = raw(port, head("POST", "/v1/workers/register", token=CLIENT, length=5000))
    assert status == 413
    image = "A" * 2_000_000
    body = json.dumps({"key": "t#1", "attempt": 1, "task_id": "t", "rank": 0, "ticket": "x", "image_png": image})
    status, answer = raw(port, head("POST", "/v1/workers/nobody/result", token=CLIENT, length=len(body))
                         + body.encode())
    assert (status, answer["error"]) == (404, "unknown_worker")  # read in full: not a 413
    # a chunked body without a token is refused before a chunk is read
    status, body = raw(port, head("POST", "/v1/workers/w0/result", chunked=True))
    assert (status, body["error"]) == (401, "missing_token")
    assert api.post("/v1/tasks", json={"prompt": "after all that"}).status_code == 202


# --- 4. separate credentials; results only from the worker the job went to -----------------------------------
def test_4_clients_and_workers_have_separate_credentials(tmp_path):
    with running_host(tmp_path, token=CLIENT, worker_token=WORKER, nodes=2) as url:
        as_client, as_worker = client(url, CLIENT), client(url, WORKER)
        reg = {"id": "w9", "addr": "127.0.0.1", "port": 29501}
        assert as_client.post("/v1/workers/register", json=reg).status_code == 403
        assert as_client.get("/v1/workers/w9/job", params={"wait": 0}).status_code == 403
        assert as_worker.post("/v1/tasks", json={"prompt": "p"}).status_code == 403
        assert as_worker.get("/v1/tasks").status_code == 403
        assert as_worker.post("/v1/workers/register", json=reg).status_code == 200
        assert as_client.post("/v1/tasks", json={"prompt": "p"}).status_code == 202


def test_4_a_result_counts_only_from_the_worker_its_job_went_to(tmp_path):
    with running_host(tmp_path, token=CLIENT, nodes=2) as url, client(url) as c:  # a token every worker holds
        workers = {"a": FakeWorker(url, "a", CLIENT, port=29501), "b": FakeWorker(url, "b", CLIENT, port=29502)}
        tid = c.post("/v1/tasks", json={"prompt": "a boat"}).json()["id"]
        for _ in range(500):
            busy = [s["worker"] for s in c.get("/v1/cluster").json()["servers"] if s["task"] == tid]
            if busy:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the task was never dispatched")
        (owner_id,) = busy
        owner = workers[owner_id]
        forger = workers["b" if owner_id == "a" else "a"]
        env = owner.job()
        forged, real = png((0, 0, 0)), png((250, 250, 0))
        r = forger.result(env, image_png=b64(forged))  # the whole envelope, ticket included, from the wrong worker
        assert (r.status_code, r.json()["error"]) == (403, "not_assigned")
        body = {"key": env["key"], "attempt": env["attempt"], "task_id": tid, "rank": 0, "ticket": "a guess",
                "exec_s": 0.01, "image_png": b64(forged)}
        r = forger.http.post(f"/v1/workers/{owner.id}/result", json=body)  # posing as the owner
        assert (r.status_code, r.json()["error"]) == (403, "wrong_ticket")
        assert task(c, tid)["state"] == "running"
        assert owner.result(env, image_png=b64(real)).status_code == 200
        assert task(c, tid)["state"] == "finished"
        assert c.get(f"/v1/tasks/{tid}/image").content == real


# --- 5. reads need the client token; worker addresses only to authenticated callers -------------------------
def test_5_reads_need_the_client_token_unless_public_read(tmp_path):
    with running_host(tmp_path / "closed", token=CLIENT) as url, client(url) as c:
        FakeWorker(url, "w0", token=CLIENT, addr="10.9.8.7", port=29555)
        tid = c.post("/v1/tasks", json={"prompt": "secret prompt"}).json()["id"]
        for path in ("/v1/tasks", f"/v1/tasks/{tid}", f"/v1/tasks/{tid}/image", "/v1/cluster", "/metrics"):
            r = httpx.get(url + path)
            assert (r.status_code, r.json()["error"]) == (401, "missing_token"), path
            assert "secret prompt" not in r.text and "10.9.8.7" not in r.text
            assert httpx.get(url + path, headers=bearer("nope")).status_code == 403, path
        assert c.get("/v1/tasks").json()["data"][0]["prompt"] == "secret prompt"
        (w,) = c.get("/v1/cluster").json()["workers"]
        assert (w["addr"], w["port"]) == ("10.9.8.7", 29555)
        assert httpx.get(url + "/healthz").status_code == 200
    with running_host(tmp_path / "demo", token=CLIENT, public_read=True) as url, client(url) as c:
        FakeWorker(url, "w0", token=CLIENT, addr="10.9.8.7", port=29555)
        r = httpx.get(url + "/v1/cluster")
        assert r.status_code == 200 and "10.9.8.7" not in r.text
        (w,) = r.json()["workers"]
        assert w["id"] == "w0" and (w["addr"], w["port"]) == (None, None)
        (w,) = c.get("/v1/cluster").json()["workers"]
        assert (w["addr"], w["port"]) == ("10.9.8.7", 29555)
        assert httpx.post(url + "/v1/tasks", json={"prompt": "p"}).status_code == 401  # writes still need it


# --- 6. a per-job deadline --------------------------------------------------------------------------------------
def test_6_a_job_past_its_deadline_is_abandoned_and_its_late_result_rejected(tmp_path):
    with running_host(tmp_path, token=CLIENT, worker_token=WORKER, time_scale=0.001, job_deadline_factor=1.0,
                      job_deadline_min_s=1.0) as url, client(url) as c:
        w = FakeWorker(url, "w0")
        tid = c.post("/v1/tasks", json={"prompt": "a slow one"}).json()["id"]
        env = w.job()
        for _ in range(600):  # the worker heartbeats that it runs the job, and never reports
            assert w.heartbeat(env["key"]).status_code == 200
            if task(c, tid)["attempt"] >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the attempt was never abandoned")
        r = w.result(env)
        assert (r.status_code, r.json()["error"]) == (409, "stale_result")
        for _ in range(20):  # its server was freed: the task runs again there (on a slow machine, maybe twice)
            again = w.job()
            assert again["attempt"] >= 2
            r = w.result(again)
            if r.status_code == 200:
                break
            assert r.json()["error"] == "stale_result"
        assert task(c, tid)["state"] == "finished"
        missed = [line for line in c.get("/metrics").text.splitlines() if line.startswith("eat_deadlines_missed_total")]
        assert missed and int(missed[0].split()[1]) >= 1


# --- found in the 10,000-task load run: a server held for an aborted job its worker no longer runs ---------------
def test_a_server_held_for_a_job_its_worker_no_longer_runs_is_freed(tmp_path, monkeypatch):
    """After a host kill -9, a worker's result thread and heartbeat thread both got 404 and both registered; the
    second registration still named the job whose (stale) result the first had just posted, so the host held
    that server for it forever. The queue's head needed all 8 servers: 8,164 accepted tasks never ran. The host
    now frees a held server once the worker's heartbeats say, for the redelivery patience, that it runs no
    such job."""
    from eatsched.serving import executor  # noqa: PLC0415

    monkeypatch.setattr(executor, "REDELIVER_MIN_S", 0.3)  # patience max(0.3 s, 5 heartbeats of 0.05 s)
    with running_host(tmp_path, token=CLIENT, worker_token=WORKER, heartbeat_s=0.05,
                      heartbeat_timeout_s=30.0) as url, client(url) as c:
        w = FakeWorker(url, "w0")
        aborted = "0" * 32 + "#1"  # a job of the host's previous life
        r = w.http.post("/v1/workers/register", json={"id": "w0", "addr": "127.0.0.1", "port": 29500,
                                                      "backend": "test", "running": aborted})
        assert r.status_code == 200, r.text
        tid = c.post("/v1/tasks", json={"prompt": "behind a held server"}).json()["id"]
        for _ in range(12):  # 0.6 s, twice the patience: the worker says it still runs it, so the server stays held
            assert w.heartbeat(aborted).status_code == 200
            assert w.http.get("/v1/workers/w0/job", params={"wait": 0.05}).status_code == 204
        assert task(c, tid)["state"] == "queued"
        for _ in range(200):  # now it runs nothing: after the patience the server is free and gets the task
            assert w.heartbeat(None).status_code == 200
            r = w.http.get("/v1/workers/w0/job", params={"wait": 0.05})
            if r.status_code == 200:
                break
        else:
            pytest.fail("the server stayed held for a job its worker no longer runs")
        assert w.result(r.json()).status_code == 200
        assert task(c, tid)["state"] == "finished"
        assert c.get("/v1/cluster").json()["workers"][0]["draining"] is None


def test_a_worker_registers_once_when_two_of_its_threads_see_404(tmp_path):
    """The worker side of the same run: a thread whose 404 was already answered by another thread's registration
    does not register again (a second registration takes the worker down on the host and may name a job it has
    finished since)."""
    from eatsched.gen.backends.simulated import SimulatedBackend  # noqa: PLC0415
    from eatsched.serving.worker import Worker, WorkerSettings  # noqa: PLC0415

    with running_host(tmp_path, token=CLIENT, worker_token=WORKER) as url, client(url) as c:
        wk = Worker(WorkerSettings(host=url, worker_id="w0", token=WORKER), SimulatedBackend(time_scale=0.0))
        try:
            seen = wk._registrations
            wk.register(seen)  # the first thread's 404
            wk.running = "0" * 32 + "#1"  # it ran a job and posted it meanwhile; the flag is cleared just after
            wk.register(seen)  # the second thread's 404, seen before the first registration: answered by it
            (w,) = c.get("/v1/cluster").json()["workers"]
            assert w["draining"] is None and wk._registrations == 1
            wk.register(wk._registrations)  # a 404 after that registration: the host forgot it, register again
            assert wk._registrations == 2
        finally:
            wk.http.close()


# --- 7. the rate limit keys on the peer; its table is bounded -------------------------------------------------
def test_7_x_forwarded_for_does_not_escape_the_rate_limit(tmp_path):
    with LocalCluster(tmp_path, nodes=1, workers=0, policy="fifo", rate_limit=0.01) as cluster:
        cluster.start_host()  # ``eat serve``, default burst 200
        with httpx.Client(base_url=cluster.url, timeout=30) as c:
            codes = [c.post("/v1/tasks", json={"prompt": f"p{i}"},
                            headers={"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"}).status_code
                     for i in range(240)]
    assert set(codes) == {202, 429} and codes[-1] == 429 and codes.count(429) >= 30


def test_7_x_forwarded_for_names_the_client_only_behind_a_named_proxy(tmp_path):
    with LocalCluster(tmp_path, nodes=1, workers=0, policy="fifo", rate_limit=0.01,
                      host_args=["--rate-burst", "2", "--forwarded-allow-ips", "127.0.0.1"]) as cluster:
        cluster.start_host()
        with httpx.Client(base_url=cluster.url, timeout=30) as c:
            codes = [c.post("/v1/tasks", json={"prompt": "p"}, headers={"X-Forwarded-For": "10.0.0.1"}).status_code
                     for _ in range(4)]
            other = c.post("/v1/tasks", json={"prompt": "p"}, headers={"X-Forwarded-For": "10.0.0.2"}).status_code
            metrics = c.get("/metrics").text
    assert codes == [202, 202, 429, 429] and other == 202
    assert "eat_rate_limit_clients 2" in metrics


def test_7_the_rate_limiter_remembers_a_bounded_number_of_clients(tmp_path):
    with running_host(tmp_path, rate_limit=1000, rate_clients_max=8) as url:
        for i in range(2, 22):  # 20 clients: every 127.0.0.0/8 address is this machine
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{i}")
            with httpx.Client(base_url=url, transport=transport, timeout=30) as c:
                assert c.post("/v1/tasks", json={"prompt": f"from 127.0.0.{i}"}).status_code == 202
        assert "eat_rate_limit_clients 8\n" in httpx.get(url + "/metrics").text


# --- 8. paging bounds ---------------------------------------------------------------------------------------
def test_8_paging_out_of_range_is_422_and_the_largest_offset_an_empty_page(api):
    for params in ({"offset": 2**63}, {"offset": 2**63 - 1}, {"offset": 2**64 + 7}, {"offset": -1}, {"offset": "1e3"},
                   {"limit": 0}, {"limit": 501}, {"limit": 2**63}):
        r = api.get("/v1/tasks", params=params)
        assert r.status_code == 422 and r.json()["error"] == "invalid_field", (params, r.text)
    r = api.get("/v1/tasks", params={"offset": 2**53 - 1})
    assert r.status_code == 200 and r.json()["data"] == []


# --- 9. strict request models, chunked 413, the OpenAPI document -------------------------------------------------
def test_9_no_coercion_no_empty_model_no_unknown_field(api):
    for fields in ({"patches": True}, {"patches": "2"}, {"patches": 2.5}, {"seed": True}, {"seed": "2"},
                   {"width": "512"}, {"model": ""}, {"prompt": 5}, {"prompt": ["a"]}, {"steps": 20}):
        r = api.post("/v1/tasks", json={"prompt": "a cat", **fields})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_field"), (fields, r.text)
    # integers as JSON Schema has them: 2.0 is the integer 2
    tid = api.post("/v1/tasks", json={"prompt": "a cat", "patches": 2.0, "seed": 11}).json()["id"]
    assert (task(api, tid)["patches"], task(api, tid)["seed"]) == (2, 11)


def test_9_a_chunked_body_over_the_limit_is_413(api):
    port = api.base_url.port
    body = json.dumps({"prompt": "x" * 6000}).encode()  # over this host's 4096 bytes
    status, answer = raw(port, head("POST", "/v1/tasks", token=CLIENT, chunked=True) + chunks(body))
    assert (status, answer["error"]) == (413, "body_too_large")
    small = json.dumps({"prompt": "a chunked cat"}).encode()
    status, answer = raw(port, head("POST", "/v1/tasks", token=CLIENT, chunked=True) + chunks(small, 5))
    assert status == 202, answer


def test_9_the_openapi_document_lists_every_status_with_the_error_schema(api):
    doc = api.get("/openapi.json").json()
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"detail", "error"}
    # what the API answers, tried for real: every (operation, status) must be in the document
    first = api.post("/v1/tasks", json={"prompt": "documented"})
    tid = first.json()["id"]
    anon = httpx.Client(base_url=str(api.base_url), timeout=30)
    tried = [
        ("post", "/v1/tasks", first),
        ("post", "/v1/tasks", api.post("/v1/tasks", content=b"{", headers={"content-type": "application/json"})),
        ("post", "/v1/tasks", anon.post("/v1/tasks", json={"prompt": "p"})),
        ("post", "/v1/tasks", anon.post("/v1/tasks", json={"prompt": "p"}, headers=bearer("bad"))),
        ("post", "/v1/tasks", api.post("/v1/tasks", content=b" " * 5000, headers={"content-type": "application/json"})),
        ("post", "/v1/tasks", api.post("/v1/tasks", json={"prompt": "p", "patches": 3})),
        ("get", "/v1/tasks", api.get("/v1/tasks", params={"limit": 0})),
        ("get", "/v1/tasks", anon.get("/v1/tasks")),
        ("get", "/v1/tasks/{task_id}", api.get("/v1/tasks/nope")),
        ("get", "/v1/tasks/{task_id}/image", api.get(f"/v1/tasks/{tid}/image")),
        ("get", "/v1/tasks/{task_id}/image", api.get("/v1/tasks/nope/image")),
        ("delete", "/v1/tasks/{task_id}", api.delete("/v1/tasks/nope")),
        ("delete", "/v1/tasks/{task_id}", api.delete(f"/v1/tasks/{tid}")),
        ("delete", "/v1/tasks/{task_id}", api.delete(f"/v1/tasks/{tid}")),
        ("get", "/v1/cluster", anon.get("/v1/cluster")),
        ("get", "/metrics", anon.get("/metrics", headers=bearer("bad"))),
        ("post", "/v1/workers/register", api.post("/v1/workers/register", json={"id": "has space"})),
        ("post", "/v1/workers/register", anon.post("/v1/workers/register", json={"id": "x"})),
        ("post", "/v1/workers/{worker_id}/heartbeat", api.post("/v1/workers/nobody/heartbeat", json={})),
        ("get", "/v1/workers/{worker_id}/job", api.get("/v1/workers/nobody/job", params={"wait": 0})),
        ("get", "/v1/workers/{worker_id}/job", api.get("/v1/workers/nobody/job", params={"wait": -1})),
        ("post", "/v1/workers/{worker_id}/result", api.post("/v1/workers/nobody/result", json={"rank": 0})),
        ("post", "/v1/workers/{worker_id}/result", api.post("/v1/workers/nobody/result", json={
            "key": "t#1", "attempt": 1, "task_id": "t", "rank": 0, "ticket": "x"})),
    ]
    anon.close()
    seen = set()
    for method, path, r in tried:
        documented = doc["paths"][path][method]["responses"]
        assert str(r.status_code) in documented, (method, path, r.status_code, r.text)
        seen.add(r.status_code)
        if r.status_code >= 400:
            assert set(r.json()) >= {"detail", "error"}
            schema = documented[str(r.status_code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, r.status_code)
    assert seen >= {200, 202, 400, 401, 403, 404, 409, 413, 422}
    assert "429" in doc["paths"]["/v1/tasks"]["post"]["responses"]
    assert doc["paths"]["/v1/tasks"]["post"]["security"] == [{"clientToken": []}]
    assert doc["paths"]["/v1/workers/{worker_id}/result"]["post"]["security"] == [{"workerToken": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


# --- schemathesis against /openapi.json -----------------------------------------------------------------------
SCHEMATHESIS_HOST = {"nodes": 4, "policy": "fifo", "token": CLIENT, "worker_token": WORKER, "rate_limit": 0,
                     "max_poll_s": 0.2}


def _document() -> dict:
    """The OpenAPI document of a host with ``SCHEMATHESIS_HOST``'s settings (built without serving)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(HostSettings(data_dir=tmp, **SCHEMATHESIS_HOST))
        doc = app.openapi()
        app.state.host.store.close()
    return doc


try:
    import schemathesis
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings
except ImportError:  # the dev extra (pip install -e .[dev]) brings it
    schemathesis = None

if schemathesis is not None:
    schema = schemathesis.openapi.from_dict(_document())

    @pytest.fixture(scope="module")
    def live_host(tmp_path_factory):
        with running_host(tmp_path_factory.mktemp("schemathesis"), **SCHEMATHESIS_HOST) as url:
            yield url

    @schema.parametrize()
    @hypothesis_settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def test_schemathesis_no_server_error_and_every_answer_as_documented(case, live_host):
        """Every check schemathesis has (server errors, status codes and schemas as documented, auth, negative
        and positive data, methods), on every operation, each route with its own token."""
        token = WORKER if case.operation.path.startswith("/v1/workers/") else CLIENT
        case.call_and_validate(base_url=live_host, headers=bearer(token))
else:
    @pytest.mark.skip(reason="schemathesis is not installed (pip install -e .[dev])")
    def test_schemathesis_no_server_error_and_every_answer_as_documented():
        pass
