"""PPO (SB3), Genetic (PyGAD) and Harmony search: training, budgets, logs, checkpoints, the policy interface."""

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("pygad")

from eatsched.algos import registry  # noqa: E402
from eatsched.algos.ppo import BatchedVecEnv, PPOArgs  # noqa: E402
from eatsched.algos.search import SearchArgs, SequenceFitness, SequencePolicy  # noqa: E402
from eatsched.algos.training import EVAL_COLUMNS as EVAL_LOG_COLUMNS  # noqa: E402
from eatsched.algos.training import TRAIN_COLUMNS as TRAIN_LOG_COLUMNS  # noqa: E402


def train_ppo(config, out, *, args=None, **kw):
    return registry.train("ppo", config, out, overrides=asdict(args) if args else None, **kw)


def load_ppo(config, checkpoint=None, seed=0):
    return registry.make_policy("ppo", config, checkpoint=checkpoint, seed=seed)


def train_search(algo, config, out, *, args=None, **kw):
    return registry.train(algo, config, out, overrides=asdict(args) if args else None, **kw)


def load_search(algo, config, checkpoint=None, seed=0):
    return registry.make_policy(algo, config, checkpoint=checkpoint, seed=seed)
from eatsched.core.config import EATConfig  # noqa: E402
from eatsched.sim.env import EATEnv  # noqa: E402
from eatsched.sim.rollout import simulate  # noqa: E402

TINY = EATConfig(nodes=4, rate=0.1, tasks_per_episode=8)
TINY_PPO = PPOArgs(num_envs=4, n_steps=64, batch_size=32, n_epochs=4, hidden=(32, 32), eval_every=512,
                   eval_episodes=2)
TINY_SEARCH = SearchArgs(horizon=48, train_seeds=3, population=12, generations=6, parents_mating=4,
                         memory_size=12, improvisations=24, eval_every=4, eval_episodes=2)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# --- our env with a standard RL library ------------------------------------------------------------------
def test_sb3_check_env_and_short_learn():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env

    env = EATEnv(TINY, flat=True)
    check_env(env, warn=False)
    model = PPO("MlpPolicy", EATEnv(TINY, flat=True), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128
    assert model._n_updates >= 1


def test_batched_vecenv_reports_episodes_like_sb3_expects():
    venv = BatchedVecEnv(3, TINY)
    venv.seed(5)
    obs = venv.reset()
    assert obs.shape == (3, TINY.token_rows * 7)
    rng = np.random.default_rng(0)
    running = np.zeros(3)
    finished = 0
    for _ in range(400):
        obs, rewards, dones, infos = venv.step(rng.uniform(-1, 1, (3, TINY.action_dim)).astype(np.float32))
        running += rewards
        for b in np.flatnonzero(dones):
            info = infos[b]
            assert info["terminal_observation"].shape == (TINY.token_rows * 7,)
            assert info["episode"]["r"] == pytest.approx(running[b], rel=1e-5)
            assert not info["TimeLimit.truncated"]  # 8 tasks finish long before the time limit
            running[b] = 0.0
            finished += 1
        assert not any(infos[b] for b in np.flatnonzero(~dones))
    assert finished >= 3


# --- PPO ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    path = train_ppo(TINY, out, steps=2048, seed=3, progress=False, args=TINY_PPO)
    return out, path


def test_train_ppo_writes_checkpoint_and_contract_logs(ppo_run):
    out, path = ppo_run
    assert path == out / "policy.zip" and path.is_file()
    header, rows = read_csv(out / "train_log.csv")
    assert tuple(header) == TRAIN_LOG_COLUMNS
    assert len(rows) == 8  # 2048 steps / 256 per rollout, one row per update (8 x 32 gradient steps)
    steps = [int(r[0]) for r in rows]
    assert steps == list(range(256, 2049, 256))
    assert all(r[4] != "" and r[5] != "" and r[6] == "" for r in rows)  # actor/critic losses; no alpha in PPO
    header, evals = read_csv(out / "eval_log.csv")
    assert tuple(header) == EVAL_LOG_COLUMNS
    assert [int(r[0]) for r in evals] == [512, 1024, 1536, 2048]
    assert list((out / "tb").rglob("events.out.tfevents*"))
    saved = json.loads((out / "config.json").read_text())
    assert saved["algo"] == "ppo" and EATConfig.from_dict(saved["config"]) == TINY


def test_ppo_checkpoint_round_trips(ppo_run):
    _, path = ppo_run
    a, b = load_ppo(TINY, path, seed=1), load_ppo(TINY, path, seed=1)
    env = EATEnv(TINY, flat=True)
    obs, info = env.reset(seed=11)
    for _ in range(30):
        act = a.act(obs, info)
        np.testing.assert_array_equal(act, b.act(obs, info))
        sb3, _ = a.model.predict(obs, deterministic=True)  # our fast path equals SB3's own predict
        np.testing.assert_allclose(act, sb3, atol=1e-6)
        assert act.shape == (TINY.action_dim,) and np.all(np.abs(act) <= 1.0)
        obs, _, term, trunc, info = env.step(act)
        if term or trunc:
            obs, info = env.reset()
    res = simulate(a, TINY, episodes=2, seed=0).summary()
    assert res["policy"] == "ppo" and res["tasks_completed"] == 16


def test_ppo_loading_refuses_other_cluster_sizes(ppo_run):
    _, path = ppo_run
    with pytest.raises(ValueError, match="nodes=4.*nodes=8"):
        load_ppo(TINY.replace(nodes=8), path)
    with pytest.raises(ValueError, match="queue_len"):
        load_ppo(TINY.replace(queue_len=6), path)
    with pytest.raises(FileNotFoundError, match="eat train --algo ppo --nodes 6"):
        load_ppo(TINY.replace(nodes=6), None)


def test_ppo_minutes_budget_stops_and_still_saves(tmp_path):
    path = train_ppo(TINY, tmp_path, minutes=0.002, seed=0, progress=False, args=TINY_PPO)
    policy = load_ppo(TINY, path)
    assert policy.model.num_timesteps < 2048
    assert (tmp_path / "eval_log.csv").is_file()


# --- Genetic / Harmony ------------------------------------------------------------------------------------
def test_batched_fitness_equals_replaying_in_single_envs():
    seeds = [7, 8]
    fitness = SequenceFitness(TINY, seeds)
    rng = np.random.default_rng(0)
    seqs = rng.uniform(-1, 1, (3, 20, TINY.action_dim)).astype(np.float32)  # short: the cyclic rule is used
    batched = fitness(seqs)
    for p in range(3):
        policy = SequencePolicy(TINY, seqs[p])
        returns = [simulate(policy, TINY, episodes=1, seed=s).summary()["mean_reward"] for s in seeds]
        assert batched[p] == pytest.approx(np.mean(returns), rel=1e-9)
    assert fitness.episodes == 6 and fitness.env_steps > 6


@pytest.mark.parametrize("algo", ["genetic", "harmony"])
def test_search_improves_on_its_initial_population(algo, tmp_path):
    path = train_search(algo, TINY, tmp_path, seed=0, progress=False, args=TINY_SEARCH)
    with np.load(path) as z:
        best, initial = float(z["best_fitness"]), float(z["initial_fitness"])
        sequence = z["sequence"]
    assert best > initial  # real improvement on the fixed training workloads
    assert sequence.shape == (TINY_SEARCH.horizon, TINY.action_dim) and np.all(np.abs(sequence) <= 1.0)
    header, rows = read_csv(tmp_path / "train_log.csv")
    assert tuple(header) == TRAIN_LOG_COLUMNS
    rounds = TINY_SEARCH.generations if algo == "genetic" else 1 + TINY_SEARCH.improvisations
    assert len(rows) == rounds
    best_per_row = [float(r[2]) for r in rows]
    assert best_per_row == sorted(best_per_row) and best_per_row[-1] == pytest.approx(best)
    assert int(rows[-1][0]) > int(rows[0][0]) > 0
    _, evals = read_csv(tmp_path / "eval_log.csv")
    assert len(evals) >= 2

    # the checkpoint replays the sequence and restarts it on reset()
    policy = load_search(algo, TINY, path, seed=1)
    first = [policy.act(None, {}) for _ in range(3)]
    policy.reset(seed=2)
    np.testing.assert_array_equal(policy.act(None, {}), first[0])
    np.testing.assert_array_equal(np.stack(first), sequence[:3])
    res = simulate(policy, TINY, episodes=3, seed=TINY_SEARCH.first_train_seed).summary()
    assert res["mean_reward"] == pytest.approx(best, rel=1e-9)  # fitness = mean return on the training seeds

    with pytest.raises(ValueError, match="nodes=4.*nodes=8"):
        load_search(algo, TINY.replace(nodes=8), path)
    other = "harmony" if algo == "genetic" else "genetic"
    with pytest.raises(ValueError, match=f"not {other!r}"):
        load_search(other, TINY, path)


def test_search_step_budget_and_missing_checkpoint(tmp_path):
    path = train_search("harmony", TINY, tmp_path, steps=3000, seed=1, progress=False, args=TINY_SEARCH)
    _, rows = read_csv(tmp_path / "train_log.csv")
    used = [int(r[0]) for r in rows]
    assert used[-1] >= 3000 and used[-2] < 3000  # stops right after the batch that reached the budget
    assert path.is_file()
    with pytest.raises(FileNotFoundError, match="eat train --algo genetic --nodes 6"):
        load_search("genetic", TINY.replace(nodes=6))
    with pytest.raises(ValueError, match="not both"):
        train_search("genetic", TINY, tmp_path, steps=10, minutes=1.0, progress=False)


SHIPPED = [(4, 0.05), (8, 0.10), (12, 0.15)]


@pytest.mark.parametrize("algo", ["genetic", "harmony"])
@pytest.mark.parametrize(("nodes", "rate"), SHIPPED)
def test_shipped_search_checkpoints_load_and_run(algo, nodes, rate):
    cfg = EATConfig(nodes=nodes, rate=rate)
    policy = load_search(algo, cfg)  # checkpoint=None: the shipped file for this cluster size
    assert policy.sequence.shape == (2048, cfg.action_dim)
    res = simulate(policy, cfg, episodes=1, seed=0).summary()
    assert res["tasks_completed"] == cfg.tasks_per_episode


@pytest.mark.parametrize(("nodes", "rate"), SHIPPED)
def test_shipped_ppo_checkpoints_load_and_run(nodes, rate):
    cfg = EATConfig(nodes=nodes, rate=rate)
    policy = load_ppo(cfg)
    assert EATConfig.from_dict(policy.model.eat_config) == cfg
    res = simulate(policy, cfg, episodes=1, seed=0).summary()
    assert res["tasks_completed"] == cfg.tasks_per_episode
