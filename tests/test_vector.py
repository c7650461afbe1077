import numpy as np

from eatsched.core.workload import Workload
from eatsched.sim.env import EATEnv
from eatsched.sim.vector import BatchedEATEnv


def test_batched_env_matches_single_envs_step_for_step():
    n = 6
    venv = BatchedEATEnv(n, nodes=8, rate=0.12, parallel=False)
    obs, _ = venv.reset(seed=3)
    workloads = []
    for b in range(n):
        t = venv._tasks[b, : int(venv._clock[b]["n_tasks"])]
        workloads.append(Workload(t["arrival"].copy(), t["patches"].copy(), t["model"].copy()))
    singles = [EATEnv(nodes=8, rate=0.12) for _ in range(n)]
    sobs = [e.reset(options={"workload": w})[0] for e, w in zip(singles, workloads, strict=True)]
    np.testing.assert_array_equal(obs, np.stack(sobs))
    rng = np.random.default_rng(0)
    live = np.ones(n, bool)
    for _ in range(400):
        a = rng.uniform(-1, 1, (n, 12)).astype(np.float32)
        obs, r, term, trunc, infos = venv.step(a)
        for b in range(n):
            if not live[b]:
                continue
            o, rs, te, tr, _ = singles[b].step(a[b])
            assert rs == r[b] and te == term[b] and tr == trunc[b]
            if te or tr:
                live[b] = False
                k = list(infos["ended"]).index(b)
                np.testing.assert_array_equal(infos["final_obs"][k], o)
            else:
                np.testing.assert_array_equal(obs[b], o)
        if not live.any():
            break
    assert not live.any()
    assert len(venv.pop_episode_metrics()) >= n


def test_parallel_and_serial_batches_agree():
    a, b = BatchedEATEnv(300, nodes=4, rate=0.05, parallel=True), BatchedEATEnv(300, nodes=4, rate=0.05, parallel=False)
    oa, _ = a.reset(seed=1)
    ob, _ = b.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(50):
        act = rng.uniform(-1, 1, (300, 12)).astype(np.float32)
        ra = a.step(act)
        rb = b.step(act)
        for x, y in zip(ra[:4], rb[:4], strict=True):
            np.testing.assert_array_equal(x, y)
