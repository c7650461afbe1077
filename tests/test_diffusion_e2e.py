"""End to end (issue 6 acceptance): a host and 2 diffusers workers (tiny random SD pipeline, CPU, gloo) over
real HTTP on 127.0.0.1. A 2-patch task, a second 2-patch task that reuses the loaded group, then two
1-patch tasks (the first dissolves the group, the second reuses the 1-worker group it formed).
Measured init and exec times are printed (``pytest -s``) and checked for consistency."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("fastapi")

from eatsched.gen.tiny import write_tiny_clip, write_tiny_pipeline  # noqa: E402
from eatsched.serving.client import Client  # noqa: E402
from eatsched.serving.launch import LocalCluster  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    sd, clip = write_tiny_pipeline(root / "sd"), write_tiny_clip(root / "clip")
    c = LocalCluster(root / "host", nodes=2, workers=0, policy="adaptive", time_scale=0.01, heartbeat_s=0.5,
                     heartbeat_timeout_s=30.0)
    with c:
        c.start_host()
        for wid in ("w0", "w1"):
            c.worker_procs[wid] = c._spawn(["worker", "--host", c.url, "--id", wid, "--backend", "diffusers",
                                            "--model", str(sd), "--device", "cpu", "--clip-model", str(clip),
                                            "--warmup-steps", "2", "--threads", "1"], f"worker-{wid}.log")
        c.wait_workers(2, timeout=120)
        yield c


def _run(client: Client, prompt: str, patches: int, seed: int) -> dict:
    body = {"prompt": prompt, "patches": patches, "seed": seed, "width": SIZE, "height": SIZE}
    task_id = client._check(client.http.post("/v1/tasks", json=body)).json()["id"]
    return client.wait(task_id, timeout=300)


def test_two_diffusers_workers_generate_and_reuse_groups(cluster):
    from PIL import Image

    with Client(cluster.url) as client:
        runs = [("2-patch, cold", _run(client, "a red fox in fresh snow", 2, 1)),
                ("2-patch, same group", _run(client, "a lighthouse on a cliff", 2, 2)),
                ("1-patch, group dissolved", _run(client, "a bowl of ramen", 1, 3)),
                ("1-patch, 1-group reused", _run(client, "an astronaut riding a horse", 1, 4))]
        for label, t in runs:
            print(f"{label:26s} servers={t['servers']} steps={t['steps']} reload={t['reload']} "
                  f"init={t['init_s']:.2f}s exec={t['exec_s']:.2f}s clip={t['quality_measured']}")
            assert t["state"] == "finished", t
            assert len(t["servers"]) == t["patches"]
            image = Image.open(io.BytesIO(client.image(t["id"])))
            assert image.size == (SIZE, SIZE)
            assert t["quality_measured"] is not None and 0.0 <= t["quality_measured"] <= 1.0
            assert t["exec_s"] > 0

    cold, warm, split, again = (t for _, t in runs)
    assert cold["reload"] and cold["init_s"] > 0  # model load + process group rendezvous
    assert not warm["reload"] and warm["init_s"] == 0.0  # the loaded 2-group is reused
    assert sorted(warm["servers"]) == sorted(cold["servers"])
    assert split["reload"]  # one member of the 2-group: the group dissolves (the worker keeps its model)
    assert split["init_s"] < cold["init_s"]
    assert not again["reload"] and again["init_s"] == 0.0 and again["servers"] == split["servers"]
