"""The host's engine without HTTP: dispatch, results, failures, draining and re-delivery, driven by
hand-written worker messages (the vLLM-style scheduler test: real store and core, no network)."""

import asyncio
import time

import pytest

from eatsched.serving.engine import Rejected
from eatsched.serving.host import Host
from eatsched.serving.settings import HostSettings


@pytest.fixture
def host(tmp_path):
    h = Host(HostSettings(data_dir=str(tmp_path), nodes=4, policy="fifo", heartbeat_s=0.1, heartbeat_timeout_s=0.5))
    for j in range(4):
        h.register(worker_id=f"w{j}", speed=1.0, addr="127.0.0.1", port=29500 + j, backend="test", running=None)
    yield h
    h.store.close()


def submit(h, k, prompt="p"):
    return h.submit(prompt=prompt, negative_prompt=None, patches=k, model="sd-v1-4", seed=1, width=64, height=64,
                    client=None)["id"]


def collect(h, worker):
    """What the worker's long poll would return right now."""
    return asyncio.run(h.next_job(worker, 0.0))


def report(h, worker, env, **kw):
    job = env["job"]
    payload = {"key": env["key"], "attempt": env["attempt"], "task_id": job["task_id"], "rank": job["group"]["rank"],
               "init_s": 0.0, "exec_s": 0.01, "reloaded": False, "image_png": None} | kw
    return h.on_result(worker, payload)


def test_dispatch_gives_every_member_its_rank_and_finishing_frees_the_group(host):
    tid = submit(host, 2)
    (launch,) = host.schedule()
    members = [host.sched.names[j] for j in launch.servers]
    envs = [collect(host, m) for m in members]
    assert [e["job"]["group"]["rank"] for e in envs] == [0, 1]
    assert {e["job"]["group"]["group_id"] for e in envs} == {envs[0]["job"]["group"]["group_id"]}
    assert envs[0]["job"]["group"]["master_port"] == host.workers[members[0]].port
    assert report(host, members[0], envs[0], init_s=0.3, reloaded=True)
    assert host.store.get(tid)["state"] == "running"  # waits for every member
    assert report(host, members[1], envs[1], init_s=0.2, reloaded=True)
    t = host.task_public(host.store.get(tid))
    assert t["state"] == "finished" and t["init_s"] == 0.3 and t["reload"] is True
    # the same group is reused for the next 2-patch task: same group id, no init predicted
    submit(host, 2)
    (again,) = host.schedule()
    assert again.reuse and again.servers == launch.servers


def test_worker_error_requeues_and_the_other_member_drains(host):
    tid = submit(host, 2)
    (launch,) = host.schedule()
    a, b = (host.sched.names[j] for j in launch.servers)
    ea, eb = collect(host, a), collect(host, b)
    assert report(host, a, ea, error="RuntimeError: CUDA out of memory")
    assert host.store.get(tid)["state"] == "queued" and host.sched.queued_ids() == [tid]
    assert host.workers[b].draining == eb["key"]  # b may still be computing its patch
    relaunch = host.schedule()
    assert relaunch and launch.servers[1] not in relaunch[0].servers
    assert not report(host, b, eb)  # stale attempt: ignored, but b is free again
    assert host.workers[b].draining is None
    assert [x["state"] for x in host.store.transitions(tid)] == ["queued", "running", "queued", "running"]


def test_silent_worker_is_marked_down_and_its_task_runs_elsewhere(host):
    tid = submit(host, 1)
    (launch,) = host.schedule()
    dead = host.sched.names[launch.servers[0]]
    collect(host, dead)
    host.workers[dead].last_seen -= 10.0
    host.executor._last_check = time.monotonic()
    host.check_heartbeats()
    assert not host.workers[dead].up and host.store.get(tid)["state"] == "queued"
    (second,) = host.schedule()
    other = host.sched.names[second.servers[0]]
    assert other != dead
    env = collect(host, other)
    assert report(host, other, env)
    assert host.store.get(tid)["state"] == "finished" and host.store.get(tid)["attempt"] == 2
    assert not host.heartbeat(dead, None)  # told to register again
    host.register(worker_id=dead, speed=1.0, addr="127.0.0.1", port=1, backend="test", running=None)
    assert host.workers[dead].up and host.sched.names.index(dead) == launch.servers[0]


def test_host_stall_is_not_worker_silence(host):
    for w in host.workers.values():
        w.last_seen -= 2.0  # nobody was heard for 2 s ...
    host.executor._last_check = time.monotonic() - 2.0  # ... because the host's own loop did not run
    host.check_heartbeats()
    assert all(w.up for w in host.workers.values())


def test_lost_job_is_delivered_again(host):
    submit(host, 1)
    (launch,) = host.schedule()
    w = host.sched.names[launch.servers[0]]
    env = collect(host, w)
    host.workers[w].delivered_at -= 10.0  # collected long ago, yet the worker says it runs nothing
    host.heartbeat(w, None)
    assert collect(host, w)["key"] == env["key"]


def test_task_fails_after_max_attempts_of_worker_errors(tmp_path):
    h = Host(HostSettings(data_dir=str(tmp_path), nodes=1, policy="fifo", max_attempts=2))
    h.register(worker_id="w0", speed=1.0, addr="127.0.0.1", port=1, backend="test", running=None)
    tid = submit(h, 1)
    for _ in range(2):
        h.schedule()
        assert report(h, "w0", collect(h, "w0"), error="ValueError: broken pipeline")
    assert h.store.get(tid)["state"] == "failed" and h.sched.queue_length == 0
    assert "broken pipeline" in h.store.transitions(tid)[-1]["detail"]
    h.store.close()


def test_in_process_submissions_pass_the_api_gate(host):
    """``submit`` (the benchmark's path) refuses what the HTTP API refuses, with the API's codes and messages."""
    for fields, error in [({"prompt": "  "}, "empty_prompt"), ({"prompt": "p", "patches": 3}, "bad_patches"),
                          ({"prompt": "p", "patches": 8}, "patches_exceed_cluster"),
                          ({"prompt": "p", "model": "dall-e"}, "unknown_model"),
                          ({"prompt": "p", "width": 100, "seed": -1}, "invalid_field")]:
        with pytest.raises(Rejected) as e:
            host.submit(**fields)
        assert (e.value.status, e.value.error) == (422, error)
    assert e.value.detail == "seed: Input should be greater than or equal to 0; width: Input should be a multiple of 8"
    assert host.sched.queue_length == 0 and host.store.counts()["queued"] == 0
    row = host.submit(prompt="p")  # defaults filled in by the gate
    assert (row["patches"], row["model"], row["width"]) == (1, "sd-v1-4", 512)


def test_worker_liveness_and_speed_are_read_from_the_scheduler(host):
    j = host.workers["w2"].index
    host.sched.server_down(j)
    assert not host.workers["w2"].up and host.workers["w2"].speed == host.sched.speed_of(j)
    assert not host.heartbeat("w2", None)
