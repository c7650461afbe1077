"""Bad input gets a specific 4xx and the host keeps serving (real HTTP on 127.0.0.1, host in a thread)."""

import contextlib
import threading
import time

import httpx
import pytest
import uvicorn

from eatsched.serving.api import create_app
from eatsched.serving.launch import free_port
from eatsched.serving.settings import HostSettings

TOKEN = "tok-123"


@contextlib.contextmanager
def running_host(tmp_path, **kw):
    settings = HostSettings(port=free_port(), data_dir=str(tmp_path), nodes=4, policy="fifo", **kw)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with running_host(tmp_path_factory.mktemp("api"), token=TOKEN, public_read=True, max_prompt_chars=100,
                      rate_limit=0) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c


def check(r, status, error):
    assert r.status_code == status, r.text
    assert r.json()["error"] == error, r.text


def test_accepts_a_good_task_and_serves_it(host):
    r = host.post("/v1/tasks", json={"prompt": "a cat", "patches": 2, "seed": 7})
    assert r.status_code == 202
    t = host.get(f"/v1/tasks/{r.json()['id']}").json()
    assert t["state"] == "queued" and t["patches"] == 2 and t["seed"] == 7 and t["model"] == "sd-v1-4"


def test_malformed_json_is_400(host):
    check(host.post("/v1/tasks", content=b'{"prompt": "a cat",', headers={"content-type": "application/json"}),
          400, "malformed_json")


def test_missing_prompt_is_422(host):
    r = host.post("/v1/tasks", json={"patches": 1})
    check(r, 422, "missing_field")
    assert r.json()["fields"] == ["prompt"]


def test_prompt_too_long_is_422(host):
    check(host.post("/v1/tasks", json={"prompt": "x" * 101}), 422, "prompt_too_long")


@pytest.mark.parametrize("k, error", [(3, "bad_patches"), (0, "bad_patches"), (8, "patches_exceed_cluster")])
def test_bad_patches_are_422(host, k, error):
    check(host.post("/v1/tasks", json={"prompt": "a cat", "patches": k}), 422, error)


@pytest.mark.parametrize("body, detail", [
    ({"width": 100}, "width: Input should be a multiple of 8"),
    ({"height": 4096}, "height: Input should be less than or equal to 2048"),
    ({"seed": -1, "width": 0}, "seed: Input should be greater than or equal to 0; "
                               "width: Input should be greater than or equal to 64"),
])
def test_out_of_range_fields_are_422(host, body, detail):
    r = host.post("/v1/tasks", json={"prompt": "a cat", **body})
    check(r, 422, "invalid_field")
    assert r.json()["detail"] == detail


def test_unknown_model_is_422(host):
    r = host.post("/v1/tasks", json={"prompt": "a cat", "model": "dall-e"})
    check(r, 422, "unknown_model")
    assert "sd-v1-4" in r.json()["detail"]


def test_wrong_or_missing_token_is_rejected(host):
    url = str(host.base_url)
    check(httpx.post(f"{url}/v1/tasks", json={"prompt": "a cat"}), 401, "missing_token")
    check(httpx.post(f"{url}/v1/tasks", json={"prompt": "a cat"}, headers={"Authorization": "Bearer nope"}),
          403, "wrong_token")
    check(httpx.post(f"{url}/v1/workers/register", json={"id": "intruder"}, headers={"Authorization": "Bearer x"}),
          403, "wrong_token")
    assert "intruder" not in str(host.get("/v1/cluster").json()["workers"])
    # reads stay open
    assert httpx.get(f"{url}/v1/cluster").status_code == 200


def test_unknown_task_is_404(host):
    check(host.get("/v1/tasks/does-not-exist"), 404, "unknown_task")
    check(host.get("/v1/tasks/does-not-exist/image"), 404, "unknown_task")
    check(host.delete("/v1/tasks/does-not-exist"), 404, "unknown_task")


def test_image_of_unfinished_task_is_409(host):
    tid = host.post("/v1/tasks", json={"prompt": "a dog"}).json()["id"]  # no workers: stays queued
    check(host.get(f"/v1/tasks/{tid}/image"), 409, "not_finished")


def test_cancel_queued_task_then_not_again(host):
    tid = host.post("/v1/tasks", json={"prompt": "a bird"}).json()["id"]
    assert host.delete(f"/v1/tasks/{tid}").status_code == 200
    assert host.get(f"/v1/tasks/{tid}").json()["state"] == "cancelled"
    check(host.delete(f"/v1/tasks/{tid}"), 409, "not_cancellable")


def test_body_too_large_is_413(host):
    check(host.post("/v1/tasks", content=b"{" + b" " * 70000 + b"}", headers={"content-type": "application/json"}),
          413, "body_too_large")


def test_paging_and_metrics_and_page(host):
    for i in range(3):
        host.post("/v1/tasks", json={"prompt": f"page test {i}"})
    page = host.get("/v1/tasks", params={"limit": 2, "offset": 0}).json()
    assert len(page["data"]) == 2 and page["count"] >= 3
    assert page["data"][0]["prompt"] == "page test 2"  # newest first
    check(host.get("/v1/tasks", params={"state": "bogus"}), 422, "bad_state")
    text = host.get("/metrics").text
    assert "eat_queue_length" in text and 'eat_tasks{state="queued"}' in text
    assert "<form" in host.get("/").text
    assert "/v1/tasks" in host.get("/openapi.json").json()["paths"]


def test_host_keeps_serving_after_bad_input(host):
    assert host.post("/v1/tasks", json={"prompt": "still here"}).status_code == 202


def test_submission_rate_limit_is_429(tmp_path):
    with running_host(tmp_path, rate_limit=1.0, rate_burst=3) as url:
        codes = [httpx.post(f"{url}/v1/tasks", json={"prompt": f"burst {i}"}).status_code for i in range(5)]
        assert codes[:3] == [202, 202, 202] and codes[3] == 429
        r = httpx.post(f"{url}/v1/tasks", json={"prompt": "again"})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert httpx.get(f"{url}/v1/cluster").status_code == 200
