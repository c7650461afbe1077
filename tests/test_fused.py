"""The fused CPU path (``algos/fused.py`` + ``algos/cpu_kernels.py``) computes the same values and gradients as the
reference torch modules it replaces, and a whole SAC update on it follows the reference update."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eatsched.algos import cpu_kernels as K  # noqa: E402
from eatsched.algos import fused  # noqa: E402
from eatsched.algos.nets import AttentionEncoder, DiffusionActor, GaussianActor, TwinCritic  # noqa: E402
from eatsched.algos.sac import ReplayBuffer, SACAgent, args_for  # noqa: E402


def _both(run):
    """``run()`` on the reference path and on the fused path (same parameters, same inputs)."""
    out = {}
    for mode in (False, True):
        old, fused.FUSED_ENABLED = fused.FUSED_ENABLED, mode
        try:
            out[mode] = run()
        finally:
            fused.FUSED_ENABLED = old
    return out[False], out[True]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    scale = max(float(b.abs().max()), 1e-6)
    assert float((a - b).abs().max()) <= rel * scale, (float((a - b).abs().max()), scale)


def test_exp_and_mish_kernels_match_float64():
    x = np.linspace(-85, 85, 200_001, dtype=np.float32)
    e = np.empty_like(x)

    @K.par
    def fexp_all(src, dst):
        for i in K.nb.prange(src.size):
            dst[i] = K.fexp(src[i])

    fexp_all(x, e)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - ref) / ref) < 3e-7

    xs = np.linspace(-30, 30, 60_001, dtype=np.float32)
    y, d = xs.copy(), np.empty_like(xs)
    K.mish_grad_(y, d)
    t = torch.from_numpy(xs).double().requires_grad_()
    m = torch.nn.functional.mish(t)
    (g,) = torch.autograd.grad(m.sum(), t)
    assert np.max(np.abs(y - m.detach().numpy()) / np.maximum(1.0, np.abs(xs))) < 2e-6
    assert np.max(np.abs(d - g.numpy())) < 2e-6
    y2 = xs.copy()
    K.mish_(y2)
    np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-12)  # the same function (FMA contraction may differ)


@pytest.mark.parametrize("batch", [1, 37])
def test_encoder_matches_reference_with_two_blocks(batch):
    torch.manual_seed(0)
    rows = 9
    enc = AttentionEncoder(rows, d_model=16, heads=4, layers=2)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.2 * torch.randn_like(p))
    obs = torch.randn(batch, rows, 7)
    obs[:, :, 0] = (torch.rand(batch, rows) < 0.4).float()
    g = torch.randn(batch, enc.out_dim)

    def run():
        enc.zero_grad()
        out = enc(obs)
        (out * g).sum().backward()
        with torch.no_grad():
            plain = enc(obs)
        return out.detach(), plain, {n: p.grad.clone() for n, p in enc.named_parameters()}

    ref, got = _both(run)
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[0], 1e-5)
    for name in ref[2]:
        _close(got[2][name], ref[2][name])


@pytest.mark.parametrize("start", [False, True])
def test_diffusion_chain_matches_reference(start):
    torch.manual_seed(1)
    actor = DiffusionActor(state_dim=24, action_dim=5, hidden=32, layers=3, time_dim=8, steps=6,
                           beta_schedule="vp", x0_clip=1.0, log_std_min=-5.0, log_std_max=1.0)
    state = torch.randn(41, 24)
    noise = torch.randn(7, 41, 5)
    x_start = torch.randn(41, 5) * 2 if start else None
    gm, gs = torch.randn(41, 5), torch.randn(41, 5)

    def run():
        actor.zero_grad()
        s = state.clone().requires_grad_()
        mean, log_std = actor(s, noise=noise, start=x_start)
        ((mean * gm).sum() + (log_std * gs).sum()).backward()
        with torch.no_grad():
            plain = actor(state, noise=noise, start=x_start)[0]
        return mean.detach(), plain, s.grad, {n: p.grad.clone() for n, p in actor.named_parameters()}

    ref, got = _both(run)
    # the x0 clip (1.0) is active for some entries and not for others, so both gradient branches are checked
    with torch.no_grad():
        cond = actor.in_s(state) + actor.in_x.bias
        temb = actor.in_t(actor.time_mlp(actor.time_table))
    x_t = noise[0] if x_start is None else x_start
    _, (_, masks, _, _) = fused.chain_forward(actor, cond, temb, x_t, noise, fused.chain_params(actor), save=True)
    assert 0.05 < float(masks.mean()) < 0.95
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[0], 1e-5)
    _close(got[2], ref[2])
    for name in ref[3]:
        _close(got[3][name], ref[3][name])


@pytest.mark.parametrize("state_grad", [True, False])
def test_gaussian_actor_matches_reference(state_grad):
    torch.manual_seed(4)
    actor = GaussianActor(state_dim=18, action_dim=5, hidden=24, layers=3, log_std_min=-5.0, log_std_max=1.0)
    state = torch.randn(29, 18) * 2
    gm, gs = torch.randn(29, 5), torch.randn(29, 5)

    def run():
        actor.zero_grad()
        s = state.clone().requires_grad_(state_grad)
        mean, log_std = actor(s)
        ((mean * gm).sum() + (log_std * gs).sum()).backward()
        with torch.no_grad():
            plain = actor(state)[0]
        return mean.detach(), plain, s.grad, {n: p.grad.clone() for n, p in actor.named_parameters()}

    ref, got = _both(run)
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[0], 1e-5)
    if state_grad:
        _close(got[2], ref[2])
    else:
        assert got[2] is None and ref[2] is None
    for name in ref[3]:
        _close(got[3][name], ref[3][name])


@pytest.mark.parametrize("weight_grads", [True, False])
def test_twin_critic_matches_reference(weight_grads):
    torch.manual_seed(2)
    critic = TwinCritic(state_dim=20, action_dim=4, hidden=32, layers=3)
    state, action = torch.randn(33, 20), torch.rand(33, 4) * 2 - 1
    g = torch.randn(2, 33)

    def run():
        critic.zero_grad(set_to_none=True)
        s = state.clone().requires_grad_()
        q = critic(s, action, weight_grads=weight_grads)
        (q * g).sum().backward()
        grads = [None if p.grad is None else p.grad.clone() for p in critic.parameters()]
        return q.detach(), s.grad, grads

    ref, got = _both(run)
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[1])
    for a, b in zip(got[2], ref[2], strict=True):
        if not weight_grads:
            assert a is None and b is None
        else:
            _close(a, b)


@pytest.mark.parametrize("algo", ["eat", "lad-ts", "eat-da", "eat-d"])
def test_update_follows_the_reference_update(algo):
    """Three updates from the same state and the same batch give the same losses on both paths (the random
    draws come from the agent's generator in the same order)."""
    agent = SACAgent(args_for(algo, batch_size=64), queue_len=3, nodes=2, seed=3)
    obs_shape = (agent.token_rows, 7)
    buf = ReplayBuffer(256, 4, obs_shape, agent.action_dim, torch.device("cpu"), gamma=0.95)
    rng = np.random.default_rng(0)
    for _ in range(40):
        o = rng.uniform(0, 1, (4, *obs_shape)).astype(np.float32)
        o[:, :, 0] = rng.integers(0, 2, (4, obs_shape[0]))
        act = rng.uniform(-1, 1, (4, agent.action_dim))
        buf.add(o, act, rng.normal(size=4), np.zeros(4), np.zeros(4), o[::-1].copy())
    batch = buf.sample(64, torch.Generator().manual_seed(0))
    start = copy.deepcopy(agent.full_state())

    def run():
        agent.load_full_state(copy.deepcopy(start))
        return torch.stack([agent.update(batch) for _ in range(3)])

    ref, got = _both(run)
    assert torch.isfinite(got).all()
    _close(got, ref, 1e-3)
