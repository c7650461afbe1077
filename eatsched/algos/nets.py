"""Networks of the SAC family: encoders (attention over the token matrix, or the flat state), actors (reverse-DDPM
diffusion denoiser, or Gaussian MLP) and twin critics. EAT and its ablations are combinations of these parts
(``registry.REGISTRY``); all sizes come from ``sac.SACArgs``.
This is the one definition of each network: training runs it, and the single-decision path (``fastpath``) is
built from these modules.

Every actor returns the *pre-tanh* mean and log-std; ``squash`` draws the Gaussian sample and applies tanh exactly
once (the authors' code applied it twice, so steps could never reach s_max; SPEC section 5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.state import N_FEATURES
from .features import encoder_inputs, with_warm_eta


# --- encoders -------------------------------------------------------------------------------------------------
class FlatEncoder(nn.Module):
    """The MLP ablations' "encoder": the flat state vector itself (the actor and critic MLPs do the work)."""

    def __init__(self, token_rows: int, queue_len: int = 0, warm_eta: bool = False, **_):
        super().__init__()
        self.rows, self.queue_len, self.warm_eta = token_rows, queue_len, warm_eta
        self.out_dim = token_rows * encoder_inputs(warm_eta)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tok = obs.reshape(obs.shape[0], self.rows, N_FEATURES)
        return (with_warm_eta(tok, self.queue_len) if self.warm_eta else tok).reshape(obs.shape[0], -1)


class AttentionEncoder(nn.Module):
    """Task and server rows as tokens: a linear token embedding plus a type embedding (task / server) and a learned
    slot embedding (task slots are ordered oldest first, and the actor scores slots), then ``layers`` pre-norm
    transformer blocks (self-attention and a Mish MLP, each with a residual), a final layer norm, and the tokens
    flattened (slot identity is kept, so the actor can address slots). With ``warm_eta`` each token gets the
    ``features.with_warm_eta`` column first (``SACArgs.warm_eta``)."""

    def __init__(self, token_rows: int, d_model: int = 32, heads: int = 4, layers: int = 1, queue_len: int = 0,
                 warm_eta: bool = False, **_):
        super().__init__()
        self.rows, self.d, self.heads = token_rows, d_model, heads
        self.queue_len, self.warm_eta = queue_len, warm_eta
        self.embed = nn.Linear(encoder_inputs(warm_eta), d_model)
        self.type_embed = nn.Embedding(2, d_model)
        self.slot_embed = nn.Parameter(torch.zeros(token_rows, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = token_rows * d_model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tok = obs.reshape(obs.shape[0], self.rows, N_FEATURES)
        if self.warm_eta:
            tok = with_warm_eta(tok, self.queue_len)
        kind = tok[:, :, 0:1]  # 0 = task row, 1 = server row
        x = self.embed(tok) + self.type_embed.weight[0] * (1 - kind) + self.type_embed.weight[1] * kind
        x = x + self.slot_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x).reshape(obs.shape[0], -1)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # plain softmax attention: at 18 tokens this beats the CPU flash-attention kernel several times over
        w = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d // self.heads)), dim=-1)
        a = (w @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.ff2(F.mish(self.ff1(self.norm2(x))))


ENCODERS = {"attention": AttentionEncoder, "flat": FlatEncoder}


# --- actors ---------------------------------------------------------------------------------------------------
def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Mish())
    return nn.Sequential(*layers)


class GaussianActor(nn.Module):
    """Plain SAC actor: an MLP trunk with a mean head and a log-std head (EAT-D, EAT-DA)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int, log_std_min: float,
                 log_std_max: float, **_):
        super().__init__()
        self.trunk = mlp([state_dim] + [hidden] * layers)
        self.act = nn.Mish()
        self.mean, self.log_std = nn.Linear(hidden, action_dim), nn.Linear(hidden, action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, state: torch.Tensor, noise: torch.Tensor | None = None, start: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        h = self.act(self.trunk(state))
        return self.mean(h), _bound(self.log_std(h), self.log_std_min, self.log_std_max)


class DiffusionActor(nn.Module):
    """Reverse DDPM chain over the action vector, conditioned on the encoded state (EAT, EAT-A, LAD-TS).

    The denoiser eps(x_t, t, s) is an MLP on [x_t, time embedding(t), s] (hidden ``layers`` x ``hidden``, Mish).
    Its first layer is written as three matmuls, W_x x_t + W_s s + W_t emb(t): the state and time parts are the
    same at every step of the chain, so they are computed once per chain instead of ``steps`` times (same
    function, a fraction of the FLOPs). The chain's output x_0 (clipped to +-``x0_clip``) is the pre-tanh mean;
    ``x0_clip_grad="straight"`` lets gradients through the clip (a clipped prediction otherwise gets none and stays
    clipped: behaviour cloning of the +-1 choices stalls there);
    a linear layer on the mean gives the log-std. Gradients flow through every step of the chain.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int, time_dim: int, steps: int,
                 beta_schedule: str, x0_clip: float, log_std_min: float, log_std_max: float,
                 x0_clip_grad: str = "zero", **_):
        super().__init__()
        if x0_clip_grad not in ("zero", "straight"):
            raise ValueError(f"x0_clip_grad: zero or straight, got {x0_clip_grad!r}")
        self.action_dim, self.steps, self.x0_clip = action_dim, steps, x0_clip
        self.straight = x0_clip_grad == "straight"
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.Mish(), nn.Linear(2 * time_dim, time_dim))
        self.in_x = nn.Linear(action_dim, hidden)
        self.in_s = nn.Linear(state_dim, hidden, bias=False)
        self.in_t = nn.Linear(time_dim, hidden, bias=False)
        self.body = mlp([hidden] * layers + [action_dim])
        self.log_std = nn.Linear(action_dim, action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        betas = beta_schedule_values(beta_schedule, steps)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        # x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps ; posterior q(x_{t-1} | x_t, x0) = N(c0 x0 + ct x_t, var)
        self.register_buffer("sqrt_recip_abar", torch.sqrt(1.0 / abar))
        self.register_buffer("sqrt_recipm1_abar", torch.sqrt(1.0 / abar - 1.0))
        self.register_buffer("coef_x0", betas * torch.sqrt(abar_prev) / (1.0 - abar))
        self.register_buffer("coef_xt", (1.0 - abar_prev) * torch.sqrt(alphas) / (1.0 - abar))
        var = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.register_buffer("post_std", torch.sqrt(var.clamp(min=1e-20)))
        self.register_buffer("time_table", sinusoidal(torch.arange(steps, dtype=torch.float32), time_dim))
        # the same coefficients as Python floats: scalar arithmetic without 0-dim tensor ops in the chain
        self._coef = [(float(self.sqrt_recip_abar[t]), float(self.sqrt_recipm1_abar[t]), float(self.coef_x0[t]),
                       float(self.coef_xt[t]), float(self.post_std[t])) for t in range(steps)]

    def forward(self, state: torch.Tensor, noise: torch.Tensor | None = None, start: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """Pre-tanh mean and log-std. ``noise`` (steps + 1, B, A) fixes every random draw of the chain (x_T and
        the posterior noise; used to check the NumPy path against this one); ``start`` replaces x_T (LAD-TS)."""
        b = state.shape[0]
        if noise is None:
            noise = torch.randn((self.steps + 1, b, self.action_dim), generator=generator, device=state.device,
                                dtype=state.dtype)
        x = noise[0] if start is None else start
        cond = self.in_s(state) + self.in_x.bias  # the state part of layer 1, once per chain
        temb = self.in_t(self.time_mlp(self.time_table))  # (steps, hidden): the time part, once per chain
        # layer 1 at step t is one addmm: [x_t, onehot(t)] @ [W_x; temb] + cond. Adding temb[t] as a matmul
        # row keeps autograd from materializing a (steps, B, hidden) gradient for a per-step slice.
        w_aug = torch.cat([self.in_x.weight.t(), temb], dim=0)
        onehot = torch.eye(self.steps, device=state.device, dtype=state.dtype)
        for t in reversed(range(self.steps)):
            a, b, c0, ct, std = self._coef[t]
            x_aug = torch.cat([x, onehot[t].expand(x.shape[0], self.steps)], dim=1)
            eps = self.body(F.mish(torch.addmm(cond, x_aug, w_aug)))
            raw = torch.add(x * a, eps, alpha=-b)
            x0 = raw.clamp(-self.x0_clip, self.x0_clip)
            if self.straight:  # the same value; the gradient passes the clip as if it were not there
                x0 = raw + (x0 - raw).detach()
            x = torch.add(x0 * c0, x, alpha=ct)
            if t > 0:
                x = torch.add(x, noise[t + 1], alpha=std)
        mean = x
        return mean, _bound(self.log_std(mean), self.log_std_min, self.log_std_max)


ACTORS = {"diffusion": DiffusionActor, "gaussian": GaussianActor}


def _bound(log_std: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Smoothly map an unbounded log-std into [lo, hi] (CleanRL's tanh rescaling)."""
    return lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1.0)


def beta_schedule_values(name: str, steps: int) -> torch.Tensor:
    """DDPM noise schedule: ``linear`` (1e-4 .. 2e-2 scaled to the number of steps), ``cosine`` (Nichol &
    Dhariwal) or ``vp`` (the variance-preserving schedule Diffusion-QL uses for short chains)."""
    if name == "linear":
        scale = 1000.0 / steps
        return torch.linspace(scale * 1e-4, min(0.999, scale * 0.02), steps, dtype=torch.float32)
    if name == "cosine":
        s = 0.008
        x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
        abar = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
        abar = abar / abar[0]
        return torch.clip(1 - abar[1:] / abar[:-1], 0, 0.999).float()
    if name == "vp":
        t = torch.arange(1, steps + 1, dtype=torch.float64)
        b_max, b_min = 10.0, 0.1
        alpha = torch.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * t - 1) / steps**2)
        return (1 - alpha).float()
    raise ValueError(f"beta_schedule: choose linear, cosine or vp, got {name!r}")


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(1, half - 1))
    args = t[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


# --- critics --------------------------------------------------------------------------------------------------
class TwinCritic(nn.Module):
    """Two Q networks evaluated as one batched MLP (weights stacked on a leading axis of 2: one ``baddbmm`` per
    layer instead of two ``addmm``). Input [state features, action]; ``layers`` x ``hidden`` with Mish."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int, **_):
        super().__init__()
        sizes = [state_dim + action_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(2, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, state: torch.Tensor, action: torch.Tensor, weight_grads: bool = True) -> torch.Tensor:
        """(2, B) Q values. ``weight_grads=False``: gradients reach the inputs only (the actor's loss), which
        spares the backward its weight-gradient matmuls."""
        x = torch.cat([state, action], dim=-1)
        weights, biases = list(self.weights), list(self.biases)
        if not weight_grads:
            weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
        h = torch.baddbmm(biases[0], x.expand(2, *x.shape), weights[0])
        for w, b in zip(weights[1:], biases[1:], strict=True):
            h = torch.baddbmm(b, F.mish(h), w)
        return h.squeeze(-1)


def squash(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None):
    """Gaussian sample (reparameterized) and tanh, applied exactly once; returns (action, log-prob)."""
    std = log_std.exp()
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + std * eps
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
    log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_prob
