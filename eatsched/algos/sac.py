"""One soft actor-critic core for EAT, EAT-A, EAT-D, EAT-DA and LAD-TS (SPEC section 3), in plain PyTorch.

The five algorithms differ only in the encoder and the actor (their ``variant`` in ``registry.REGISTRY``); every
hyperparameter is a field of ``SACArgs`` with the paper's value as default (Tables VII, VIII; lr and weight decay
from the authors' code).
The update reads like the equations (CleanRL ``sac_continuous_action.py``): target under ``no_grad``, one block
each for critic, actor and temperature, soft update last. It runs unchanged on the CPU or, captured as one
CUDA graph together with the replay sampling, on a GPU (``GraphedUpdate``).

Design choices worth knowing:
* The encoder belongs to the critic and is trained by the critic loss only; the actor reads detached features
  (as in DrQ / SAC-AE), so one encoder serves both and the target critic has a soft-updated copy.
* The critics see the action with the scores of visible tasks that cannot start replaced by -1: the env ignores
  those scores (it launches the best-scored task *that can start*), so Q should not depend on them.
* LAD-TS keeps a latent action memory: one stored pre-tanh action per *decision context*. The key is
  (startable visible tasks, idle servers, patch-count class of the oldest task, whether some task can start
  without a cold start): the discrete quantities that decide which choices exist and what a good one is, with the
  continuous waiting and busy times left out so that contexts recur often enough for the memory to help. The
  chain starts from the stored action instead of Gaussian noise and its output is stored back at each decision.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._memory import retain_freed_memory
from ..core.config import parse_field_values
from ..core.kernel import MAX_PATCHES
from ..core.state import SERVER_IDLE, TASK_CAN_START, TASK_PATCHES, TASK_READY
from .action_rules import launch_when_idle
from .nets import ACTORS, ENCODERS, TwinCritic, squash


@dataclass
class SACArgs:
    """Hyperparameters of the SAC family (paper defaults)."""

    encoder: str = "attention"
    """state encoder: ``attention`` (tokens) or ``flat`` (the MLP ablations)"""
    actor: str = "diffusion"
    """actor: ``diffusion`` (reverse DDPM denoiser) or ``gaussian`` (MLP)"""
    latent_memory: bool = False
    """LAD-TS: start the chain from the stored action of the same decision context"""
    hidden: int = 256
    """width of the actor's hidden layers (paper: 256)"""
    layers: int = 2
    """hidden layers of the actor (paper: 2, Mish)"""
    critic_hidden: int = 256
    """width of the critics' hidden layers (paper: 256)"""
    critic_layers: int = 2
    """hidden layers of each critic (paper: 2)"""
    time_dim: int = 16
    """diffusion time embedding size (paper: 16)"""
    diffusion_steps: int = 10
    """denoising steps of the actor's chain (paper: 10)"""
    beta_schedule: str = "vp"
    """noise schedule of the chain: vp | linear | cosine"""
    x0_clip: float = 3.0
    """clip of the chain's x0 prediction (pre-tanh units; tanh(3) = 0.995)"""
    x0_clip_grad: str = "zero"
    """gradient of that clip: ``zero`` outside it (the plain clamp) or ``straight`` (straight-through: the forward
    value is the same, the gradient passes as if unclipped, so a prediction stuck past the clip can come back)"""
    d_model: int = 32
    """attention encoder: token width"""
    heads: int = 4
    """attention encoder: heads"""
    attn_layers: int = 1
    """attention encoder: transformer blocks"""
    log_std_min: float = -5.0
    """lower bound of the actor's log-std"""
    log_std_max: float = 1.0
    """upper bound of the actor's log-std"""
    alpha: float = 0.05
    """entropy temperature (paper: 0.05); the initial value when ``autotune``"""
    autotune: bool = False
    """learn alpha towards ``target_entropy``"""
    target_entropy_scale: float = 1.0
    """target entropy = -scale * action_dim (with ``autotune``)"""
    tau: float = 0.005
    """soft update rate of the target critic (paper: 0.005)"""
    gamma: float = 0.95
    """discount (paper: 0.95)"""
    batch_size: int = 512
    """minibatch size (paper: 512)"""
    lr: float = 3e-4
    """learning rate of actor, critics and alpha (authors' code: 3e-4)"""
    weight_decay: float = 0.005
    """decoupled weight decay (AdamW) of the actor and critics (authors' code: 0.005)"""
    n_step: int = 1
    """n-step returns (1 = plain TD)"""
    utd: float = 0.25
    """gradient updates per environment step (update-to-data ratio)"""
    buffer_size: int = 200_000
    """replay capacity in transitions"""
    num_envs: int = 16
    """environments collected per policy forward"""
    learning_starts: int = 5_000
    """env steps of warm-up actions (``warmup_policy``) before learning starts"""
    warmup_policy: str = "random"
    """who acts during the warm-up: ``random`` (uniform actions, as the paper) or a hand-written scheduler
    (``adaptive``, ``fifo``) whose actions, with Gaussian noise ``warmup_noise``, seed the replay buffer"""
    warmup_noise: float = 0.3
    """std of the noise on a hand-written warm-up policy's actions (clipped to [-1, 1])"""
    bc_updates: int = 0
    """behaviour-cloning warm start: when learning starts, ``bc_updates`` supervised updates train the encoder and
    the actor to reproduce the warm-up scheduler's (``warmup_policy``) actions on the replay's states; SAC follows
    (0 = off, the paper's method)"""
    no_idle_wait: bool = False
    """a no-op while no server is busy becomes a launch of the best-scored task that can start: nothing can free up,
    so waiting only delays (and with no arrival left, waits until the time limit); False = the paper's actor,
    whose every no-op is taken"""
    warm_eta: bool = False
    """an observation feature for the encoder (``features.with_warm_eta``): per visible task, the time until a busy
    group of its size holding its model frees up (0 if it can start warm now). ``patient`` decides on it; in the raw
    tokens it is spread over a task row and every server row (False = the paper's token matrix alone)"""
    bc_weight: float = 0.0
    """teacher kept as a regularizer during SAC (TD3+BC style): the actor loss becomes the SAC loss divided by the
    batch's mean |Q| plus ``bc_weight`` times the squared distance of the deterministic action to the warm-up
    scheduler's own action on the same state, which collection records for every transition (0 = off, the paper's
    method)"""
    log_every: int = 2_000
    """env steps between rows of train_log.csv"""
    eval_every: int = 5_000
    """env steps between evaluations on held-out seeds (each also refreshes ``best_policy.pt``)"""
    eval_episodes: int = 20
    """episodes per evaluation (workload seeds 1_000_000 ..)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (one is always written at the end)"""
    gpu_compile: bool = True
    """on CUDA: compile the update with torch.compile (fused elementwise kernels) before capturing it as a CUDA
    graph; costs ~35 s once per run, falls back to the plain update if compiling fails"""
    gpu_tf32: bool = True
    """on CUDA: the captured update's matmuls in TF32 (fp32 range and accumulation, 10-bit mantissa inputs)"""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SACArgs:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


TEACHER_RECIPE = {"warmup_policy": "patient", "bc_updates": 1500, "bc_weight": 1.0, "gamma": 0.99,
                  "x0_clip_grad": "straight", "no_idle_wait": True, "warm_eta": True}
"""``SACArgs`` of the shipped EAT family (docs/learning.md): clone ``patient`` (1500 supervised updates, through the
clip), keep it as a TD3+BC prior, discount 0.99 per decision, never wait on an idle cluster, and see each task's wait
for a warm group (``warm_eta``)."""
RECIPE_SETTING = {"reward": "response", "mode": "event"}
"""``EATConfig`` fields the shipped EAT family trains with: the response reward (return = w_q sum quality - w_r sum
response) and event mode (a wait jumps to the next arrival or completion). Evaluation uses SPEC's defaults."""


def parse_overrides(items) -> dict:
    """``eat train --sac KEY=VALUE`` strings as ``SACArgs`` overrides (``ConfigError``, a ValueError, names a bad
    key or value)."""
    return parse_field_values(SACArgs, items, "--sac", "SAC hyperparameter")


def build_policy_nets(args: SACArgs, queue_len: int, nodes: int) -> tuple[nn.Module, nn.Module]:
    """The deployable part of an agent, encoder and actor, with the sizes ``args`` and the cluster give."""
    token_rows, action_dim = queue_len + nodes, 2 + queue_len
    encoder = ENCODERS[args.encoder](token_rows, d_model=args.d_model, heads=args.heads, layers=args.attn_layers,
                                     queue_len=queue_len, warm_eta=args.warm_eta)
    actor = ACTORS[args.actor](encoder.out_dim, action_dim, hidden=args.hidden, layers=args.layers,
                               time_dim=args.time_dim, steps=args.diffusion_steps, beta_schedule=args.beta_schedule,
                               x0_clip=args.x0_clip, log_std_min=args.log_std_min, log_std_max=args.log_std_max,
                               x0_clip_grad=args.x0_clip_grad)
    return encoder, actor


def context_key(obs, queue_len: int, nodes: int):
    """LAD-TS decision context of token matrices (..., L + N, 7), NumPy or torch alike (see the module docstring):
    (startable visible tasks, idle servers, patch-count class of the oldest task, some task can start warm)."""
    L = queue_len
    startable = obs[..., :L, TASK_CAN_START].sum(-1).round()
    idle = obs[..., L:, SERVER_IDLE].sum(-1).round()
    k = (obs[..., 0, TASK_PATCHES] * MAX_PATCHES).round()
    k_class = sum(k >= v for v in (1, 2, 4, 8))  # log2(k) + 1 for k = 1, 2, 4, 8; 0 for an empty slot
    ready = obs[..., :L, TASK_READY].sum(-1) > 0
    return ((startable * (nodes + 1) + idle) * 5 + k_class) * 2 + ready


def context_count(queue_len: int, nodes: int) -> int:
    return (queue_len + 1) * (nodes + 1) * 5 * 2


BC_TARGET = 0.9
"""Where cloning aims the teacher's +-1 action entries (``SACAgent.bc_loss``)."""


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, L + N, 7)
    action: torch.Tensor  # (B, A) in [-1, 1]
    reward: torch.Tensor  # (B,) n-step discounted reward sum
    discount: torch.Tensor  # (B,) gamma^m, 0 where the episode terminated (truncation bootstraps)
    next_obs: torch.Tensor  # (B, L + N, 7)
    teacher: torch.Tensor | None = None  # (B, A) the warm-up scheduler's action on obs, when recorded


class ReplayBuffer:
    """Preallocated ring of (T, E) transitions (T steps of E parallel envs) as tensors on the training device, so
    n-step windows are consecutive rows of one env and sampling is a handful of tensor ops (capturable in a CUDA
    graph: the fill level lives in a device tensor). Terminated and ended (terminated or truncated) are stored
    apart: returns stop at either, but only termination stops bootstrapping."""

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, action_dim: int, device: torch.device,
                 gamma: float, n_step: int = 1, teacher: bool = False):
        """``teacher``: also keep a teacher action per transition (``SACArgs.bc_weight``)."""
        self.T = max(n_step + 1, capacity // num_envs)
        self.E, self.gamma, self.n = num_envs, gamma, n_step
        T, E = self.T, self.E
        self.obs = torch.zeros((T, E, *obs_shape), device=device)
        self.next_obs = torch.zeros((T, E, *obs_shape), device=device)
        self.action = torch.zeros((T, E, action_dim), device=device)
        self.reward = torch.zeros((T, E), device=device)
        self.terminated = torch.zeros((T, E), device=device)
        self.ended = torch.zeros((T, E), device=device)
        self.teacher = torch.zeros((T, E, action_dim), device=device) if teacher else None
        self.pos = 0  # next row to write
        self.rows = 0  # rows filled
        self.rows_t = torch.zeros((), dtype=torch.float32, device=device)  # the same, for in-graph sampling
        self.oldest_t = torch.zeros((), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return self.rows * self.E

    def add(self, obs, action, reward, terminated, ended, next_obs, teacher=None) -> None:
        p = self.pos
        for dst, src in ((self.obs, obs), (self.action, action), (self.reward, reward),
                         (self.terminated, terminated), (self.ended, ended), (self.next_obs, next_obs),
                         (self.teacher, teacher)):
            if dst is not None:
                dst[p].copy_(torch.as_tensor(src, dtype=torch.float32), non_blocking=True)
        self.pos = (p + 1) % self.T
        self.rows = min(self.rows + 1, self.T)
        self.rows_t.fill_(float(self.rows))
        self.oldest_t.fill_((self.pos - self.rows) % self.T)

    def add_step(self, obs, action, next_obs, reward, terminated, truncated, infos, teacher=None) -> None:
        """Store one ``BatchedEATEnv.step`` of every env. An env that auto-reset returns its next episode's first
        observation; the stored next state is its episode's last one (``infos["final_obs"]``)."""
        real_next = next_obs
        if "ended" in infos:
            real_next = next_obs.copy()
            real_next[infos["ended"]] = infos["final_obs"]
        self.add(obs, action, reward, terminated, terminated | truncated, real_next, teacher)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        dev = self.reward.device
        j = (torch.rand(batch_size, generator=generator, device=dev) * self.rows_t).long()  # logical row, 0 = oldest
        e = (torch.rand(batch_size, generator=generator, device=dev) * self.E).long()
        first = (self.oldest_t + j) % self.T
        teacher = None if self.teacher is None else self.teacher[first, e]
        if self.n == 1:
            return Batch(self.obs[first, e], self.action[first, e], self.reward[first, e],
                         self.gamma * (1.0 - self.terminated[first, e]), self.next_obs[first, e], teacher)
        ret = torch.zeros(batch_size, device=dev)
        disc = torch.ones(batch_size, device=dev)
        alive = torch.ones(batch_size, device=dev)
        last = first
        for k in range(self.n):
            valid = alive * ((j + k).float() < self.rows_t).float()
            row = (first + k) % self.T
            ret = ret + valid * disc * self.reward[row, e]
            last = torch.where(valid > 0, row, last)
            disc = torch.where(valid > 0, disc * self.gamma, disc)
            alive = valid * (1.0 - self.ended[row, e])
        return Batch(self.obs[first, e], self.action[first, e], ret, disc * (1.0 - self.terminated[last, e]),
                     self.next_obs[last, e], teacher)


class SACAgent(nn.Module):
    """Encoder + actor + twin critics (+ target copies, temperature, optimizers) for one EATConfig."""

    def __init__(self, args: SACArgs, queue_len: int, nodes: int, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__()
        retain_freed_memory()  # activations of a batch of 512 are made and freed many times per update
        self.args, self.queue_len, self.nodes = args, queue_len, nodes
        self.token_rows, self.action_dim = queue_len + nodes, 2 + queue_len
        with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG untouched
            torch.manual_seed(seed)
            self.encoder, self.actor = build_policy_nets(args, queue_len, nodes)
            self.critic = TwinCritic(self.encoder.out_dim, self.action_dim, args.critic_hidden, args.critic_layers)
            self.register_buffer("memory", torch.randn(context_count(queue_len, nodes), self.action_dim)
                                 if args.latent_memory else torch.zeros(0, self.action_dim))
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(args.alpha)), requires_grad=args.autotune)
        self.target_entropy = -args.target_entropy_scale * self.action_dim
        self.to(device)
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        cuda = self.device.type == "cuda"
        opt = dict(lr=args.lr, weight_decay=args.weight_decay, **_adam_flags(cuda))
        self.critic_opt = torch.optim.AdamW([*self.encoder.parameters(), *self.critic.parameters()], **opt)
        self.actor_opt = torch.optim.AdamW(list(self.actor.parameters()), **opt)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=args.lr, **_adam_flags(cuda)) if args.autotune else None
        self.clone_opt: torch.optim.Optimizer | None = None  # made by the first clone_update
        self.actor_params = list(self.actor.parameters())
        self.critic_params = [*self.encoder.parameters(), *self.critic.parameters()]
        self.online = [*self.encoder.parameters(), *self.critic.parameters()]
        self.target = [*self.target_encoder.parameters(), *self.target_critic.parameters()]

    # --- acting -----------------------------------------------------------------------------------------
    def policy(self, obs: torch.Tensor, feats: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """Pre-tanh mean and log-std of the action distribution (and the LAD-TS context keys, or None)."""
        if feats is None:
            feats = self.encoder(obs)
        keys = start = None
        if self.args.latent_memory:
            keys = context_key(obs, self.queue_len, self.nodes).long()
            start = self.memory[keys]
        mean, log_std = self.actor(feats, noise=noise, start=start, generator=self.generator)
        return mean, log_std, keys

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions in [-1, 1] for a batch of observations; LAD-TS stores each chain output back."""
        mean, log_std, keys = self.policy(obs)
        if keys is not None:
            self.memory[keys] = mean
        a = torch.tanh(mean) if deterministic else squash(mean, log_std, self.generator)[0]
        return launch_when_idle(a, obs, self.queue_len) if self.args.no_idle_wait else a

    def masked(self, action: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Scores of visible tasks that cannot start do not affect the env; the critics see -1 there."""
        can_start = obs[:, : self.queue_len, TASK_CAN_START] > 0.5
        return torch.cat([action[:, :2], torch.where(can_start, action[:, 2:], -1.0)], dim=1)

    # --- learning ---------------------------------------------------------------------------------------
    def clone_update(self, b: Batch) -> torch.Tensor:
        """One behaviour-cloning update (``SACArgs.bc_updates``): encoder and actor learn, by their own optimizer, to
        give the teacher's action (the batch's own where none was recorded) as the deterministic action. Returns
        the losses as ``update`` does (critic and alpha 0)."""
        if self.clone_opt is None:
            self.clone_opt = torch.optim.AdamW([*self.encoder.parameters(), *self.actor.parameters()],
                                               lr=self.args.lr, weight_decay=self.args.weight_decay,
                                               **_adam_flags(self.device.type == "cuda"))
        mean, _, _ = self.policy(b.obs)
        loss = self.bc_loss(mean, b)
        self.clone_opt.zero_grad(set_to_none=False)
        loss.backward()
        self.clone_opt.step()
        target = list(self.target_encoder.parameters())
        if target:  # the target encoder starts from the cloned features (the flat encoder has no weights)
            with torch.no_grad():
                torch._foreach_copy_(target, list(self.encoder.parameters()))
        zero = torch.zeros((), device=loss.device)
        return torch.stack([zero, loss.detach(), zero])

    @staticmethod
    def bc_loss(mean: torch.Tensor, b: Batch) -> torch.Tensor:
        """Squared distance of the deterministic action tanh(mean) to the teacher's, summed over the action. The
        teacher's +-1 entries (launch or wait, the chosen slot) are aimed at +-``BC_TARGET`` instead, a finite
        pre-tanh target (atanh 0.9 = 1.47), so cloning never pushes the output towards infinity."""
        target = (b.action if b.teacher is None else b.teacher).clamp(-BC_TARGET, BC_TARGET)
        return (torch.tanh(mean) - target).pow(2).sum(-1).mean()

    def update(self, b: Batch) -> torch.Tensor:
        """One gradient update of critics, actor (and alpha), then the soft target update. Returns the
        losses (critic, actor, alpha) as one tensor, without a host sync. With ``bc_weight`` > 0 and recorded
        teacher actions, the actor is kept near the teacher (``SACArgs.bc_weight``)."""
        alpha = self.log_alpha.exp().detach()

        # critic: y = r + gamma^n (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s'))
        with torch.no_grad():
            next_mean, next_log_std, _ = self.policy(b.next_obs)
            next_action, next_log_prob = squash(next_mean, next_log_std, self.generator)
            q_next = self.target_critic(self.target_encoder(b.next_obs), self.masked(next_action, b.next_obs))
            y = b.reward + b.discount * (q_next.min(0).values - alpha * next_log_prob)
        feats = self.encoder(b.obs)
        q = self.critic(feats, self.masked(b.action, b.obs))
        critic_loss = F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=False)
        critic_loss.backward(inputs=self.critic_params)
        self.critic_opt.step()

        # actor: maximize min_i Q_i(s, a~pi) - alpha log pi(a|s); gradients through the whole chain
        feats = feats.detach()
        mean, log_std, _ = self.policy(b.obs, feats)
        action, log_prob = squash(mean, log_std, self.generator)
        q_pi = self.critic(feats, self.masked(action, b.obs), weight_grads=False).min(0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        if self.args.bc_weight > 0 and b.teacher is not None:  # TD3+BC: Q normalized, the teacher as a prior
            actor_loss = (actor_loss / q_pi.abs().mean().detach().clamp(min=1e-3)
                          + self.args.bc_weight * self.bc_loss(mean, b))
        self.actor_opt.zero_grad(set_to_none=False)
        actor_loss.backward(inputs=self.actor_params)
        self.actor_opt.step()

        # temperature
        if self.alpha_opt is not None:
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=False)
            alpha_loss.backward(inputs=[self.log_alpha])
            self.alpha_opt.step()
        else:
            alpha_loss = torch.zeros((), device=critic_loss.device)

        # soft update of the target encoder and critics
        with torch.no_grad():
            torch._foreach_lerp_(self.target, self.online, self.args.tau)
        return torch.stack([critic_loss.detach(), actor_loss.detach(), alpha_loss.detach()])

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # --- checkpoints ------------------------------------------------------------------------------------
    def policy_state(self) -> dict:
        """What deployment needs: encoder, actor and LAD-TS memory (no critics, no optimizers)."""
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(), "memory": self.memory.cpu()}

    def load_policy_state(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.memory.copy_(state["memory"])

    def full_state(self) -> dict:
        return {"model": self.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "actor_opt": self.actor_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict() if self.alpha_opt else None,
                "generator": self.generator.get_state()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        if self.alpha_opt is not None and state.get("alpha_opt"):
            self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])


def _adam_flags(cuda: bool) -> dict:
    """Fused Adam (one kernel for all parameters) where it exists. On CUDA it keeps its step counts on the
    device, so it can be captured in a CUDA graph, with a handful of kernels instead of foreach's dozens."""
    if cuda:
        return {"fused": True, "capturable": True}
    return {"fused": True} if _cpu_fused_adam_ok() else {"foreach": True}


_FUSED_OK: bool | None = None


def _cpu_fused_adam_ok() -> bool:
    global _FUSED_OK
    if _FUSED_OK is None:
        try:
            p = nn.Parameter(torch.zeros(2))
            opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
            p.grad = torch.ones(2)
            opt.step()
            _FUSED_OK = True
        except (RuntimeError, TypeError):
            _FUSED_OK = False
    return _FUSED_OK


class GraphedUpdate:
    """Replay sampling plus one full update (critic, actor, alpha, soft update) captured as one CUDA graph:
    a replay launches the whole update with one call, which is what makes small networks fast on a GPU.

    At batch 512 the update is ~1,100 kernels of a few microseconds each, so their number sets the speed.
    ``compile`` first runs the update through torch.compile, whose Inductor backend fuses the elementwise work
    between the matmuls (~800 kernels left); ``tf32`` captures the matmuls in TF32. Both only act during the
    warm-up and capture: the flag is restored afterwards, and replays run the captured kernels."""

    def __init__(self, agent: SACAgent, buffer: ReplayBuffer, batch_size: int, warmup: int = 3,
                 compile: bool = False, tf32: bool = False):
        self.agent, self.buffer, self.batch_size = agent, buffer, batch_size
        gen = agent.generator
        self.compiled = False
        update = agent.update
        if compile:
            update = torch.compile(agent.update)
            self.compiled = True
        prev_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for i in range(warmup):
                    try:
                        update(buffer.sample(batch_size, gen))
                    except Exception as e:  # noqa: BLE001  (Inductor/Triton failures vary by version)
                        if not self.compiled or i > 0:
                            raise
                        warnings.warn(f"torch.compile of the SAC update failed ({type(e).__name__}: {e}); "
                                      "capturing the plain update instead", stacklevel=2)
                        torch._dynamo.reset()
                        update, self.compiled = agent.update, False
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            if hasattr(self.graph, "register_generator_state"):
                self.graph.register_generator_state(gen)
            with torch.cuda.graph(self.graph):
                self.losses = update(buffer.sample(batch_size, gen))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        self.path = graph_path_label(self.compiled, tf32)

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.losses


def graph_path_label(compiled: bool, tf32: bool) -> str:
    """How a captured update runs, as ``eat bench train`` and ``config.json`` name it."""
    return "cuda graph" + " + compile" * compiled + " + tf32" * tf32


def make_updater(agent: SACAgent, buffer: ReplayBuffer, graph: bool | None = None,
                 compile: bool | None = None, tf32: bool | None = None):
    """A callable doing one update from the buffer: a CUDA graph on GPUs (unless ``graph=False``; compiled and
    in TF32 as ``SACArgs.gpu_compile`` / ``gpu_tf32`` say unless given), eager else."""
    use_graph = agent.device.type == "cuda" if graph is None else graph
    if use_graph:
        a = agent.args
        return GraphedUpdate(agent, buffer, a.batch_size, compile=a.gpu_compile if compile is None else compile,
                             tf32=a.gpu_tf32 if tf32 is None else tf32)
    return lambda: agent.update(buffer.sample(agent.args.batch_size, agent.generator))
