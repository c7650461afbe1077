"""The SAC family (EAT, EAT-A, EAT-D, EAT-DA, LAD-TS): training, checkpoints, the diffusion chain, squashing, the
NumPy decision path. Tiny networks through ``SACArgs`` keep the file fast."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny networks: a second thread only adds synchronization (and the CPU is shared)

from eatsched.algos import make_policy, registry  # noqa: E402
from eatsched.algos.nets import DiffusionActor, squash  # noqa: E402
from eatsched.algos.sac import ReplayBuffer, SACAgent, context_key  # noqa: E402
from eatsched.algos.sac_policy import SACPolicy  # noqa: E402
from eatsched.algos.training import EVAL_COLUMNS, TRAIN_COLUMNS, best_logged_reward  # noqa: E402
from eatsched.core import kernel  # noqa: E402
from eatsched.core.config import EATConfig  # noqa: E402
from eatsched.sim.env import EATEnv  # noqa: E402
from eatsched.sim.rollout import simulate  # noqa: E402

ALGOS = registry.names("sac")


def args_for(algo: str, **overrides):
    return registry.get(algo).default_args(**overrides)


def train(algo, config, out, *, resume=False, **kw):
    budget = {k: kw.pop(k) for k in ("steps", "minutes", "seed", "progress") if k in kw}
    return registry.train(algo, config, out, resume=resume, overrides=kw, **budget)

TINY = dict(hidden=16, critic_hidden=16, d_model=8, heads=2, time_dim=8, batch_size=32, num_envs=4,
            learning_starts=64, log_every=64, eval_every=200, eval_episodes=1, checkpoint_every=10_000, utd=1.0,
            diffusion_steps=4)
CFG = EATConfig(nodes=2, rate=0.05, patch_choices=(1, 2), tasks_per_episode=6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each algorithm trained for 256 updates on a 2-node cluster."""
    out = {}
    for algo in ALGOS:
        d = tmp_path_factory.mktemp(algo)
        path = train(algo, CFG, d, steps=320, seed=3, progress=False, **TINY)
        out[algo] = (d, path)
    return out


@pytest.mark.parametrize("algo", list(ALGOS))
def test_trains_logs_and_round_trips(trained, algo):
    d, path = trained[algo]
    assert path == d / "policy.pt" and path.exists()
    with open(d / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == TRAIN_COLUMNS and int(rows[-1]["step"]) == 320
    assert any(r["loss_critic"] not in ("", None) for r in rows)  # updates happened (320 - 64 steps at utd 1)
    assert all(np.isfinite(float(r["loss_critic"])) for r in rows if r["loss_critic"])
    with open(d / "eval_log.csv") as f:
        ev = list(csv.DictReader(f))
    assert tuple(ev[0]) == EVAL_COLUMNS and len(ev) >= 2
    assert any(p.name.startswith("events") for p in (d / "tb").iterdir())
    # best_policy.pt is the policy of the evaluation with the highest mean reward (first one on ties)
    best_row = max(ev, key=lambda r: float(r["mean_reward"]))
    best = torch.load(d / "best_policy.pt", weights_only=True)
    assert best["step"] == int(best_row["step"])
    replay = simulate(make_policy(algo, CFG, checkpoint=str(d / "best_policy.pt"), seed=1_000_000), CFG,
                      TINY["eval_episodes"], seed=1_000_000)
    assert replay.summary()["mean_reward"] == pytest.approx(float(best_row["mean_reward"]))
    # same actions after reload with the same seed, through the public loader
    a = simulate(make_policy(algo, CFG, checkpoint=str(path), seed=5), CFG, 2, seed=11)
    b = simulate(SACPolicy.from_checkpoint(path, CFG, seed=5), CFG, 2, seed=11)
    assert a.tasks == b.tasks and a.summary()["mean_reward"] == b.summary()["mean_reward"]


def test_checkpoint_embeds_config_and_no_critics(trained):
    ckpt = torch.load(trained["eat"][1], weights_only=True)
    assert ckpt["algo"] == "eat" and EATConfig.from_dict(ckpt["config"]) == CFG
    assert set(ckpt["policy"]) == {"encoder", "actor", "memory"}


def test_nodes_mismatch_fails_clearly(trained):
    with pytest.raises(ValueError, match="nodes=2.*nodes=4"):
        make_policy("eat", CFG.replace(nodes=4), checkpoint=str(trained["eat"][1]))
    with pytest.raises(ValueError, match="holds a 'eat' policy"):
        make_policy("eat-a", CFG, checkpoint=str(trained["eat"][1]))


def test_missing_shipped_checkpoint_names_the_train_command():
    with pytest.raises(FileNotFoundError, match="eat train --algo eat-d --nodes 5"):
        make_policy("eat-d", EATConfig(nodes=5, rate=0.1))


def test_resume_continues_counting(trained, tmp_path):
    d = tmp_path / "run"
    train("eat-da", CFG, d, steps=160, seed=1, progress=False, **TINY)
    first = torch.load(d / "policy.pt", weights_only=True)["label"]
    # the resumed run keeps its own network sizes without being told them; this call's overrides go on top
    train("eat-da", CFG, d, steps=160, seed=1, progress=False, resume=True, utd=0.5)
    with open(d / "train_log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps[-1] == 320 and steps == sorted(steps)
    ckpt = torch.load(d / "policy.pt", weights_only=True)
    assert ckpt["step"] == 320 and ckpt["args"]["hidden"] == TINY["hidden"] and ckpt["args"]["utd"] == 0.5
    n_updates = lambda label: int(label.split(" updates")[0].rsplit(" ", 1)[1])  # noqa: E731
    assert n_updates(ckpt["label"]) > n_updates(first) > 0  # the label counts the updates of both parts


def test_diffusion_chain_has_configured_steps_and_gradients_reach_first_layer():
    for steps in (3, 10):
        actor = DiffusionActor(20, 6, hidden=16, layers=2, time_dim=8, steps=steps, beta_schedule="vp", x0_clip=3.0,
                               log_std_min=-5, log_std_max=1)
        g = torch.Generator().manual_seed(0)
        state = torch.randn(5, 20, generator=g)
        calls = []
        actor.body.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        mean, log_std = actor(state, generator=g)
        assert len(calls) == steps
        assert mean.shape == (5, 6) == log_std.shape
        mean.sum().backward()
        assert actor.in_x.weight.grad is not None and actor.in_x.weight.grad.abs().sum() > 0
        assert actor.in_s.weight.grad.abs().sum() > 0


def test_actions_in_range_and_tanh_applied_once():
    g = torch.Generator().manual_seed(0)
    action, logp = squash(torch.full((1000, 12), 4.0), torch.full((1000, 12), -5.0), g)
    assert action.min() >= -1 and action.max() <= 1 and torch.isfinite(logp).all()
    assert action.min() > 0.99  # one tanh: a large mean saturates (tanh(tanh(x)) could never exceed 0.762)
    cfg = EATConfig()
    assert kernel.decode_steps(float(action[0, 1]), cfg.s_min, cfg.s_max) == cfg.s_max


def test_policy_can_reach_s_max():
    """A policy whose actor mean for the steps slot is large launches tasks with s_max steps in the simulator."""
    agent = SACAgent(args_for("eat-da", hidden=16, critic_hidden=16), CFG.queue_len, CFG.nodes, seed=0)
    with torch.no_grad():
        agent.actor.mean.weight.zero_()
        agent.actor.mean.bias.copy_(torch.tensor([3.0, 3.0] + [0.0] * CFG.queue_len))
    pol = SACPolicy(CFG, "eat-da", agent.args, agent.policy_state())
    res = simulate(pol, CFG, 1, seed=0)
    assert {t["steps"] for t in res.tasks if t["steps"] > 0} == {CFG.s_max}
    env = EATEnv(CFG)
    obs, info = env.reset(seed=0)
    assert np.all(np.abs(pol.act(obs, info)) <= 1)


@pytest.mark.parametrize(("algo", "warm_eta"), [(a, False) for a in ALGOS] + [("eat", True), ("eat-da", True)])
def test_numpy_fast_path_matches_torch(algo, warm_eta):
    cfg = EATConfig(nodes=4, rate=0.1)
    agent = SACAgent(args_for(algo, hidden=32, d_model=16, warm_eta=warm_eta), cfg.queue_len, cfg.nodes, seed=2)
    pol = SACPolicy(cfg, algo, agent.args, agent.policy_state())
    env = EATEnv(cfg)
    obs, info = env.reset(seed=4)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        noise = torch.randn((agent.args.diffusion_steps + 1, 1, cfg.action_dim), generator=g)
        with torch.no_grad():
            mean_t, _, keys = agent.policy(torch.from_numpy(obs)[None], noise=noise)
        if keys is not None:  # LAD-TS: both paths start from the memory and store their output back
            assert int(keys[0]) == int(context_key(obs, cfg.queue_len, cfg.nodes))  # NumPy and torch agree
            agent.memory[keys] = mean_t
        mean_np = pol.mean(obs, noise[:, 0].numpy())
        np.testing.assert_allclose(mean_np, mean_t[0].numpy(), rtol=1e-4, atol=1e-4)
        obs, _, te, tr, info = env.step(np.tanh(mean_np))
        if te or tr:
            obs, info = env.reset()


def test_n_step_returns_stop_at_episode_end():
    buf = ReplayBuffer(8, 1, (1,), 1, torch.device("cpu"), gamma=0.5, n_step=3)
    for t, (r, term) in enumerate([(1.0, 0), (2.0, 0), (4.0, 1), (8.0, 0), (16.0, 0)]):
        buf.add(torch.full((1, 1), float(t)), torch.zeros(1, 1), torch.tensor([r]), torch.tensor([float(term)]),
                torch.tensor([float(term)]), torch.full((1, 1), float(t + 1)))
    b = buf.sample(256, torch.Generator().manual_seed(0))
    for o, r, disc, nxt in zip(b.obs[:, 0], b.reward, b.discount, b.next_obs[:, 0], strict=True):
        t = int(o)
        want = {0: (1 + 0.5 * 2 + 0.25 * 4, 0.0, 3), 1: (2 + 0.5 * 4, 0.0, 3), 2: (4.0, 0.0, 3),
                3: (8 + 0.5 * 16, 0.25, 5), 4: (16.0, 0.5, 5)}[t]
        assert float(r) == pytest.approx(want[0]) and float(disc) == pytest.approx(want[1]) and int(nxt) == want[2]


@pytest.mark.parametrize("nodes,rate", [(4, 0.05), (8, 0.10), (12, 0.15)])
def test_shipped_checkpoints_load_and_act(nodes, rate):
    cfg = EATConfig(nodes=nodes, rate=rate)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=0)
    for algo in ALGOS:
        pol = make_policy(algo, cfg)  # no --checkpoint: the shipped one
        assert isinstance(pol, SACPolicy) and f"{nodes} nodes" in pol.label
        a = pol.act(obs, info)
        assert a.shape == (cfg.action_dim,) and np.all(np.abs(a) <= 1)


def test_resumed_run_keeps_best_evaluation_from_its_log(tmp_path):
    log = tmp_path / "eval_log.csv"
    assert best_logged_reward(log) == -np.inf  # no log yet
    log.write_text("step,mean_reward,mean_quality,mean_response_s,efficiency\n"
                   "5000,301.5,0.2,30,0.007\n10000,312.25,0.2,29,0.008\n15000,305,0.2,29,0.0075\n")
    assert best_logged_reward(log) == 312.25


def test_warmup_actions_come_from_the_named_heuristic():
    from eatsched.algos.heuristics import AdaptivePolicy
    from eatsched.algos.sac_train import _warmup_actor
    from eatsched.sim.vector import BatchedEATEnv

    cfg = EATConfig(nodes=4, queue_len=6, rate=0.3)
    envs = BatchedEATEnv(4, cfg)
    obs, _ = envs.reset(seed=5)
    rng = np.random.default_rng(0)
    exact = _warmup_actor(args_for("eat", warmup_policy="adaptive", warmup_noise=0.0), cfg, envs, rng)
    ref = AdaptivePolicy(cfg)
    launched = 0
    for _ in range(30):
        acts = exact(obs)
        masks = envs.action_masks
        for i in range(4):
            np.testing.assert_array_equal(acts[i], ref.act(obs[i], {"action_mask": masks[i]}))
        launched += int((acts[:, 0] > 0).sum())
        obs, *_ = envs.step(acts)
    assert launched > 0
    noisy = _warmup_actor(args_for("eat", warmup_policy="adaptive"), cfg, envs, rng)(obs)
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0 and len(np.unique(noisy)) > 10
    with pytest.raises(ValueError, match="warmup_policy"):
        _warmup_actor(args_for("eat", warmup_policy="greedy"), cfg, envs, rng)


SHIPPED_PINS = {
    "eat-n8": (388.4375, 162, [1.0, -0.1991, 0.6999, -0.9633]),
    "eat-a-n8": (347.8115, 32, [1.0, -0.9951, -0.9951, -0.9951]),
    "eat-d-n12": (385.8979, 437, [1.0, -0.182, 0.8528, -0.614]),
    "eat-da-n4": (313.9686, 423, [1.0, -0.1281, 0.9484, -0.9832]),
    "lad-ts-n4": (145.0702, 4321, [1.0, 0.9951, -0.9951, 0.9951]),
    "eat-n4": (314.878, 418, [1.0, -0.1861, 0.8918, -0.9102]),
}
"""Per shipped checkpoint: episode reward, decisions and the first action's first four entries (rounded to 1e-4),
seed 7, re-pinned when the SAC family's recipe checkpoints (docs/learning.md) were shipped on 2026-12-02 (more
decisions than before: they wait in tick mode)."""


@pytest.mark.parametrize("key", list(SHIPPED_PINS))
def test_shipped_checkpoints_give_the_pinned_actions(key):
    algo, nodes = key.rsplit("-n", 1)
    cfg = EATConfig(nodes=int(nodes), rate=registry.SHIPPED_RATES[int(nodes)])
    pol = make_policy(algo, cfg, seed=7)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=7)
    pol.reset(seed=7)
    first = [round(float(x), 4) for x in pol.act(obs, info)[:4]]
    pol.reset(seed=7)
    res = simulate(pol, cfg, 1, seed=7)
    reward, decisions, want_first = SHIPPED_PINS[key]
    assert first == pytest.approx(want_first, abs=2e-4)
    assert res.episodes[0]["reward"] == pytest.approx(reward, abs=1e-3) and res.episodes[0]["decisions"] == decisions


@pytest.mark.parametrize("algo", ["eat", "eat-a", "eat-da"])  # attention and flat encoders (no weights), both actors
def test_teacher_actions_are_recorded_and_cloned(algo):
    """With a teacher (``bc_weight``), the replay keeps the warm-up scheduler's clean action beside the noisy one
    taken, cloning moves the actor towards the clean one, and the regularized SAC update runs."""
    import torch

    from eatsched.algos.sac_train import _teacher
    from eatsched.sim.vector import BatchedEATEnv

    cfg = EATConfig(nodes=4, queue_len=6, rate=0.3)
    args = args_for(algo, warmup_policy="patient", bc_weight=1.0, warm_eta=True, x0_clip_grad="straight", **TINY)
    envs = BatchedEATEnv(4, cfg)
    obs, _ = envs.reset(seed=3)
    teach = _teacher(args, cfg, envs)
    buf = ReplayBuffer(4_000, 4, obs.shape[1:], cfg.action_dim, torch.device("cpu"), 0.99, teacher=True)
    rng = np.random.default_rng(0)
    for _ in range(64):
        t = teach(obs)
        a = np.clip(t + rng.normal(0, 0.3, t.shape), -1, 1).astype(np.float32)
        nxt, r, term, trunc, infos = envs.step(a)
        buf.add_step(obs, a, nxt, r, term, trunc, infos, t)
        obs = nxt
    b = buf.sample(32)
    assert b.teacher is not None and not torch.equal(b.teacher, b.action)
    assert set(b.teacher[:, 0].tolist()) <= {-1.0, 1.0}  # launch or wait, exactly as the scheduler wrote it
    agent = SACAgent(args, cfg.queue_len, cfg.nodes)

    def distance():
        with torch.no_grad():
            mean, _, _ = agent.policy(b.obs)
        return float((torch.tanh(mean) - b.teacher).pow(2).sum(-1).mean())

    before = distance()
    for _ in range(200):
        agent.clone_update(buf.sample(32, agent.generator))
    assert distance() < 0.5 * before
    losses = agent.update(buf.sample(32, agent.generator))
    assert torch.isfinite(losses).all()


def test_no_idle_wait_turns_a_pointless_wait_into_a_launch():
    """With no busy server nothing can free up: the guard launches (NumPy and torch alike); with a busy server, or
    with nothing that can start, the policy's wait stands."""
    import torch

    from eatsched.algos.action_rules import launch_when_idle
    from eatsched.core.state import SERVER_IDLE, TASK_CAN_START

    cfg = EATConfig(nodes=4, queue_len=3)
    obs = np.zeros((3, cfg.token_rows, 7), np.float32)
    obs[:, cfg.queue_len:, 6] = 1.0  # every server up
    obs[:, cfg.queue_len:, SERVER_IDLE] = 1.0
    obs[:, 0, TASK_CAN_START] = 1.0
    obs[1, cfg.queue_len, SERVER_IDLE] = 0.0  # env 1: one server busy
    obs[2, 0, TASK_CAN_START] = 0.0  # env 2: nothing can start
    wait = np.full((3, cfg.action_dim), -0.5, np.float32)
    out = launch_when_idle(wait, obs, cfg.queue_len)
    assert out[:, 0].tolist() == [1.0, -0.5, -0.5]
    np.testing.assert_array_equal(out[:, 1:], wait[:, 1:])
    torch.testing.assert_close(launch_when_idle(torch.tensor(wait), torch.tensor(obs), cfg.queue_len),
                               torch.tensor(out))


def test_on_eval_can_end_a_run_early(tmp_path):
    """``train_sac(on_eval=...)``: each evaluation row (with wall time and updates) reaches the hook, and True ends
    the run there with its checkpoint written (what ``eat bench train --to-adaptive`` uses)."""
    from eatsched.algos.sac_train import train_sac

    seen = []

    def hook(row):
        seen.append(row)
        return True

    path = train_sac("eat-da", CFG, tmp_path, steps=5_000, seed=0, progress=False, on_eval=hook,
                     overrides=dict(TINY, eval_every=128))
    assert len(seen) == 1 and {"efficiency", "wall_s", "updates", "step"} <= set(seen[0])
    assert path.is_file() and seen[0]["step"] < 5_000
    rows = list(csv.DictReader(open(tmp_path / "eval_log.csv")))
    assert int(rows[-1]["step"]) == seen[0]["step"]


def test_warm_eta_is_the_wait_for_a_busy_group_of_the_tasks_size_and_model():
    """``features.with_warm_eta`` against a plain loop over tasks and servers, on states of a loaded cluster; NumPy
    and torch give the same column, and the encoders read one more input per token with it."""
    from eatsched.algos.features import WARM_ETA_CAP, with_warm_eta
    from eatsched.core import state as S

    cfg = EATConfig(nodes=8, rate=0.6)
    env = EATEnv(cfg)
    obs, info = env.reset(seed=5)
    rng = np.random.default_rng(0)
    L, checked = cfg.queue_len, 0
    for _ in range(300):
        out = with_warm_eta(obs, L)
        assert out.shape == (*obs.shape[:-1], obs.shape[-1] + 1)
        np.testing.assert_array_equal(out[:, :-1], obs)
        assert np.all(out[L:, -1] == 0)
        for i in range(L):
            task, want = obs[i], 0.0
            if task[S.TASK_PRESENT] > 0.5 and task[S.TASK_READY] < 0.5:
                want = WARM_ETA_CAP
                for srv in obs[L:]:
                    if (srv[S.SERVER_UP] > 0.5 and srv[S.SERVER_IDLE] < 0.5
                            and round(srv[S.SERVER_GROUP] * cfg.nodes) == round(task[S.TASK_PATCHES] * 8)
                            and abs(srv[S.SERVER_MODEL] - task[S.TASK_MODEL]) < 1e-4):
                        want = min(want, float(srv[S.SERVER_BUSY_FOR]))
                checked += want not in (0.0, WARM_ETA_CAP)
            assert out[i, -1] == pytest.approx(want)
        torch.testing.assert_close(with_warm_eta(torch.from_numpy(obs), L), torch.from_numpy(out))
        obs, _, te, tr, info = env.step(rng.uniform(-1, 1, cfg.action_dim).astype(np.float32))
        if te or tr:
            obs, info = env.reset(seed=6)
    assert checked > 0  # some task saw a busy group it could wait for
    for algo in ("eat", "eat-da"):
        plain = SACAgent(args_for(algo, **TINY), cfg.queue_len, cfg.nodes, seed=0).encoder
        extra = SACAgent(args_for(algo, warm_eta=True, **TINY), cfg.queue_len, cfg.nodes, seed=0).encoder
        assert extra.out_dim - plain.out_dim == (0 if algo == "eat" else cfg.queue_len + cfg.nodes)
