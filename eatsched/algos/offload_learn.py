"""Learned schedulers of the DEdgeAI offloading problem (``sim.offload``): DQN-TS, SAC-TS, D2SAC-TS and LAD-TS.

Plain torch, CleanRL style: one dataclass of hyperparameters per method (the authors' ``main_*.py`` values), the
update written out once per family (DQN; discrete SAC with a learned temperature, whose actor is an MLP for SAC-TS
or the SAC family's diffusion actor, ``nets.DiffusionActor``, for D2SAC-TS and LAD-TS).

As in the authors' code every station has its own agent: its own networks and a replay of its own last
``buffer_size`` decisions; it learns once per slot (one minibatch) once its replay holds more than
``learning_starts`` decisions. Here the B agents are one module: each network's weights are stacked over the
stations and the network is vmapped over them (``Stations``), so one call decides every task of a slot and one
update trains all B agents. This is the computation of B separate agents: losses are summed over stations and Adam
is elementwise (only its step count is shared: an agent whose replay fills later starts with a larger bias
correction), and an agent's weights change only after its slot's decisions (the authors update agent b after
station b's tasks; b decides again only in the next slot, on an observation that does not depend on this slot's
decisions).

D2SAC-TS runs the reverse diffusion chain over the action logits from Gaussian noise at every decision. LAD-TS starts
it from the latent action memory instead: the action probabilities stored for the same decision context, keyed by
(slot, station, task index) across episodes (initialized to Gaussian noise, as the authors'), stored back after each
decision; its replay keeps each decision's chain start and its successor's, which the update runs the chain from.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..sim.offload import OffloadConfig, OffloadSim
from .nets import DiffusionActor, mlp
from .offload_baselines import BASELINES, make_baseline, play_episode
from .training import CsvLog


# --- hyperparameters (one dataclass per method; defaults: the authors' main_*.py) ------------------------------
@dataclass
class DQNTSArgs:
    lr: float = 1e-4
    gamma: float = 0.95
    epsilon: float = 0.01
    """probability of a uniformly random target"""
    target_update: int = 200
    """updates between hard copies of the Q network into the target network"""
    buffer_size: int = 1000
    learning_starts: int = 300
    batch_size: int = 64
    hidden: int = 20


@dataclass
class SACTSArgs:
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha: float = 0.05
    """initial entropy temperature (learned)"""
    alpha_lr: float = 3e-4
    target_entropy: float = -1.0
    tau: float = 0.005
    """soft update rate of the target critics"""
    gamma: float = 0.95
    buffer_size: int = 1000
    learning_starts: int = 300
    batch_size: int = 64
    hidden: int = 20


@dataclass
class D2SACTSArgs(SACTSArgs):
    steps: int = 5
    """denoising steps of the actor's chain"""
    time_dim: int = 16
    beta_schedule: str = "vp"
    x0_clip: float = math.inf
    """clip of the chain's x0 prediction (the authors': none)"""
    latent_memory: bool = False
    """start the chain from the stored action probabilities of the same (slot, station, index)"""


@dataclass
class LADTSArgs(D2SACTSArgs):
    latent_memory: bool = True


METHODS = {"dqn-ts": DQNTSArgs, "sac-ts": SACTSArgs, "d2sac-ts": D2SACTSArgs, "lad-ts": LADTSArgs}
"""learned methods: name -> hyperparameter class. ``train_offload`` also plays the ``BASELINES``."""

LOG_COLUMNS = ("episode", "mean_delay_s", "tasks", "updates", "alpha", "wall_s")
"""``out/train_log.csv``: one row per episode (``mean_delay_s``: mean delay of that episode's tasks, while training)."""


# --- one network per station, run as one ------------------------------------------------------------------------
class Stations(nn.Module):
    """B independent copies of a network: weights stacked on a leading axis of B and the network vmapped over it
    (``torch.func``). Every input carries the same leading axis."""

    def __init__(self, make, n: int):
        super().__init__()
        members = [make() for _ in range(n)]
        params, buffers = stack_module_state(members)
        self._fn = [members[0].to("meta")]  # the function only (a list keeps it out of the module tree)
        self._names = list(params)
        self.weights = nn.ParameterList(nn.Parameter(params[k]) for k in self._names)
        self._buffer_names = list(buffers)
        for i, k in enumerate(self._buffer_names):
            self.register_buffer(f"buffer{i}", buffers[k])

    def forward(self, *args, **kwargs):
        state = dict(zip(self._names, self.weights, strict=True))
        state.update((k, getattr(self, f"buffer{i}")) for i, k in enumerate(self._buffer_names))
        return vmap(lambda s, a, kw: functional_call(self._fn[0], s, a, kw))(state, args, kwargs)


class TwinQ(nn.Module):
    """Two Q networks over the discrete targets: (2, N, A)."""

    def __init__(self, obs_dim: int, hidden: int, actions: int):
        super().__init__()
        self.q1, self.q2 = mlp([obs_dim, hidden, hidden, actions]), mlp([obs_dim, hidden, hidden, actions])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.q1(obs), self.q2(obs)])


def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class Batch(dict):
    """A minibatch of every station's replay: each field (B, batch, ...); ``latent`` fields only for LAD-TS."""

    __getattr__ = dict.get


# --- the agents ------------------------------------------------------------------------------------------------
class DQNTS(nn.Module):
    def __init__(self, args: DQNTSArgs, stations: int, obs_dim: int, gen: torch.Generator):
        super().__init__()
        self.args, self.gen, self.actions = args, gen, stations
        self.q = Stations(lambda: mlp([obs_dim, args.hidden, args.hidden, stations]), stations)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=args.lr)
        self.updates = 0

    @torch.no_grad()
    def act(self, obs: torch.Tensor, latent=None):
        greedy = self.q(obs).argmax(-1)
        explore = torch.rand(greedy.shape, generator=self.gen) < self.args.epsilon
        return torch.where(explore, torch.randint(0, self.actions, greedy.shape, generator=self.gen), greedy), None

    def update(self, b: Batch, ready: torch.Tensor) -> dict:
        if self.updates % self.args.target_update == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        self.updates += 1
        with torch.no_grad():
            target = b.reward + self.args.gamma * (1 - b.done) * self.q_target(b.next_obs).max(-1).values
        q = self.q(b.obs).gather(-1, b.action[..., None]).squeeze(-1)
        loss = (((q - target) ** 2).mean(-1) * ready).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {}


class DiscreteSAC(nn.Module):
    """SAC-TS (MLP actor), D2SAC-TS and LAD-TS (diffusion actor over the action logits)."""

    def __init__(self, args: SACTSArgs, stations: int, obs_dim: int, gen: torch.Generator):
        super().__init__()
        self.args, self.gen, self.actions = args, gen, stations
        h = args.hidden
        self.diffusion = isinstance(args, D2SACTSArgs)
        if self.diffusion:
            self.actor = Stations(lambda: DiffusionActor(obs_dim, stations, h, 2, args.time_dim, args.steps,
                                                         args.beta_schedule, args.x0_clip, -5.0, 1.0), stations)
        else:
            self.actor = Stations(lambda: mlp([obs_dim, h, h, stations]), stations)
        self.critic = Stations(lambda: TwinQ(obs_dim, h, stations), stations)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((stations,), math.log(args.alpha)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=args.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=args.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=args.alpha_lr)

    def probs(self, obs: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, A) action probabilities; a diffusion actor's chain starts at ``start`` (LAD-TS) or at noise."""
        if not self.diffusion:
            return F.softmax(self.actor(obs), -1)
        s, n = obs.shape[:2]
        noise = torch.randn((s, self.args.steps + 1, n, self.actions), generator=self.gen)
        logits, _ = self.actor(obs, noise=noise, start=noise[:, 0] if start is None else start)
        return F.softmax(logits, -1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, latent: torch.Tensor | None = None):
        p = self.probs(obs, latent)
        a = torch.multinomial(p.reshape(-1, self.actions), 1, generator=self.gen).reshape(p.shape[:-1])
        return a, p

    def update(self, b: Batch, ready: torch.Tensor) -> dict:
        alpha = self.log_alpha.exp().detach()[:, None]  # (B, 1)
        with torch.no_grad():
            p2 = self.probs(b.next_obs, b.next_latent)
            q2 = self.critic_target(b.next_obs).min(dim=1).values
            v2 = (p2 * (q2 - alpha[..., None] * torch.log(p2 + 1e-8))).sum(-1)
            target = b.reward + self.args.gamma * (1 - b.done) * v2
        q = self.critic(b.obs).gather(-1, b.action[:, None, :, None].expand(-1, 2, -1, 1)).squeeze(-1)
        critic_loss = (((q - target[:, None]) ** 2).mean(-1).sum(1) * ready).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        p = self.probs(b.obs, b.latent)
        logp = torch.log(p + 1e-8)
        with torch.no_grad():
            q_min = self.critic(b.obs).min(dim=1).values
        actor_loss = ((p * (alpha[..., None] * logp - q_min)).sum(-1).mean(-1) * ready).sum()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        entropy = -(p * logp).sum(-1).detach()
        alpha_loss = ((self.log_alpha.exp()[:, None] * (entropy - self.args.target_entropy)).mean(-1) * ready).sum()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        _soft_update(self.critic_target, self.critic, self.args.tau)
        return {"alpha": round(float(self.log_alpha.detach().exp().mean()), 6)}


# --- replay: one ring buffer per station ---------------------------------------------------------------------------
class StationReplay:
    def __init__(self, stations: int, capacity: int, obs_dim: int, actions: int, latent: bool):
        s, c = stations, capacity
        self.fields = {"obs": np.zeros((s, c, obs_dim), np.float32), "next_obs": np.zeros((s, c, obs_dim), np.float32),
                       "action": np.zeros((s, c), np.int64), "reward": np.zeros((s, c), np.float32),
                       "done": np.zeros((s, c), np.float32)}
        if latent:
            self.fields |= {"latent": np.zeros((s, c, actions), np.float32),
                            "next_latent": np.zeros((s, c, actions), np.float32)}
        self.capacity, self.ptr, self.size = c, np.zeros(s, np.int64), np.zeros(s, np.int64)

    def add(self, station: np.ndarray, rank: np.ndarray, **values) -> None:
        """One slot's decisions; ``rank``: each one's position among its station's (0, 1, ...)."""
        pos = (self.ptr[station] + rank) % self.capacity
        for k, v in values.items():
            self.fields[k][station, pos] = v
        counts = np.bincount(station, minlength=len(self.ptr))
        self.ptr = (self.ptr + counts) % self.capacity
        self.size = np.minimum(self.size + counts, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        idx = (rng.random((len(self.size), batch_size)) * np.maximum(self.size, 1)[:, None]).astype(np.int64)
        rows = np.arange(len(self.size))[:, None]
        return Batch({k: torch.from_numpy(v[rows, idx]) for k, v in self.fields.items()})


# --- the learner: acting, storing and learning over the shared simulation -------------------------------------------
@dataclass
class _Slot:
    """The pending tasks of one slot: who they are, their scaled observations and chain starts."""

    station: np.ndarray
    index: np.ndarray
    slot: int
    obs: np.ndarray
    latent: np.ndarray | None


class OffloadLearner:
    """One learned method on one ``OffloadSim``: ``episode(rng)`` plays an episode, learning as it goes."""

    def __init__(self, method: str, sim: OffloadSim, args=None, seed: int = 0):
        if method not in METHODS:
            raise ValueError(f"unknown offloading method {method!r}; choose from {', '.join(METHODS)}")
        self.method, self.sim = method, sim
        self.args = args = args if args is not None else METHODS[method]()
        s, cfg = sim.config.stations, sim.config
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        agent_cls = DQNTS if method == "dqn-ts" else DiscreteSAC
        self.agent = agent_cls(args, s, sim.obs_dim, self.gen)
        lad = getattr(args, "latent_memory", False)
        self.replay = StationReplay(s, args.buffer_size, sim.obs_dim, s, latent=lad)
        self.memory = self.rng.standard_normal((cfg.slots, s, cfg.tasks_max, s)).astype(np.float32) if lad else None
        self.updates = 0
        self.last_stats: dict = {}

    def _pending(self) -> _Slot:
        sim = self.sim
        idx = sim.pending()
        st, ix = sim.workload.station[idx], sim.workload.index[idx]
        latent = self.memory[sim.slot, st, ix] if self.memory is not None else None
        return _Slot(st, ix, sim.slot, sim.observe(idx) / sim.obs_scale, latent)

    def _pad(self, x: np.ndarray, cur: _Slot) -> torch.Tensor:
        """(n, ...) per task -> (B, most tasks of a station, ...), the layout the stacked agents take."""
        out = np.zeros((self.sim.config.stations, cur.index.max() + 1, *x.shape[1:]), x.dtype)
        out[cur.station, cur.index] = x
        return torch.from_numpy(out)

    def episode(self, rng: np.random.Generator) -> float:
        sim = self.sim
        sim.reset(rng=rng)
        cur = self._pending()
        while True:
            latent = self._pad(cur.latent, cur) if cur.latent is not None else None
            a, p = self.agent.act(self._pad(cur.obs, cur), latent)
            actions = a.numpy()[cur.station, cur.index]
            parts = sim.step_slot(actions)
            if self.memory is not None:
                self.memory[cur.slot, cur.station, cur.index] = p.numpy()[cur.station, cur.index]
            nxt = None if sim.done else self._pending()
            self._store(cur, actions, -parts.sum(axis=1), nxt)
            self._learn()
            if nxt is None:
                return float(sim.delays.mean())
            cur = nxt

    def _store(self, cur: _Slot, actions, reward, nxt: _Slot | None) -> None:
        """Each decision's successor is its station's next task: in this slot, else the first of the next slot
        (every station has a task in every slot); after the episode's last slot there is none (done)."""
        last = np.append(cur.station[1:] != cur.station[:-1], True)
        succ = np.append(np.arange(1, len(last)), 0)  # the next task of the slot (wrong where last, fixed below)
        next_obs = cur.obs[succ]
        next_latent = cur.latent[succ] if cur.latent is not None else None
        done = np.zeros(len(last), np.float32)
        if nxt is None:
            done[last] = 1.0
        else:
            first = np.searchsorted(nxt.station, cur.station[last])
            next_obs[last] = nxt.obs[first]
            if next_latent is not None:
                next_latent[last] = nxt.latent[first]
        values = {"obs": cur.obs, "next_obs": next_obs, "action": actions, "reward": reward, "done": done}
        if next_latent is not None:
            values |= {"latent": cur.latent, "next_latent": next_latent}
        self.replay.add(cur.station, cur.index, **values)

    def _learn(self) -> None:
        ready = self.replay.size > self.args.learning_starts
        if ready.any():
            batch = self.replay.sample(self.args.batch_size, self.rng)
            self.last_stats = self.agent.update(batch, torch.from_numpy(ready.astype(np.float32)))
            self.updates += 1

    @torch.no_grad()
    def greedy_episode(self, seed: int) -> float:
        """Play the workload of ``seed`` (``OffloadSim.reset(seed)``) with the greedy policy: each task's most
        probable target (DQN-TS: the largest Q), no exploration, no learning, nothing stored; LAD-TS's chain starts
        from its latent action memory, which stays as it is. The diffusion chain's noise comes from a generator
        seeded with ``seed``, so an evaluation is repeatable. Returns the mean delay (s)."""
        sim, agent = self.sim, self.agent
        sim.reset(seed)
        saved_gen, agent.gen = agent.gen, torch.Generator().manual_seed(seed)
        try:
            while not sim.done:
                cur = self._pending()
                obs = self._pad(cur.obs, cur)
                if isinstance(agent, DQNTS):
                    scores = agent.q(obs)
                else:
                    scores = agent.probs(obs, self._pad(cur.latent, cur) if cur.latent is not None else None)
                sim.step_slot(scores.argmax(-1).numpy()[cur.station, cur.index])
        finally:
            agent.gen = saved_gen
        return float(sim.delays.mean())


def load_offload_learner(path: str | Path, cfg: OffloadConfig | None = None) -> OffloadLearner:
    """The learner stored by ``train_offload`` (``out/agent.pt``), on a fresh ``OffloadSim`` of its config (or of
    ``cfg``: another workload of the same shape, the same number of stations)."""
    ck = torch.load(Path(path), map_location="cpu", weights_only=False)  # our own file: numpy memory inside
    cfg = cfg if cfg is not None else OffloadConfig(**ck["config"])
    learner = OffloadLearner(ck["method"], OffloadSim(cfg), METHODS[ck["method"]](**ck["args"]))
    learner.agent.load_state_dict(ck["agent"])
    if ck["memory"] is not None:
        if learner.memory is None or learner.memory.shape != ck["memory"].shape:
            raise ValueError(f"{path}: its latent action memory does not fit this config")
        learner.memory = ck["memory"]
    return learner


def train_offload(method: str, cfg: OffloadConfig, episodes: int, seed: int = 0, out: str | Path | None = None,
                  args=None) -> list[float]:
    """Train a learned method (``METHODS``) for ``episodes`` episodes of ``cfg``, or play a baseline (``BASELINES``)
    as many; workloads from ``np.random.default_rng(seed)``. Returns each episode's mean delay (s); with ``out``,
    also ``out/train_log.csv`` (``LOG_COLUMNS``) and, for a learned method, ``out/agent.pt``."""
    if method not in METHODS and method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join([*METHODS, *BASELINES])}")
    sim, rng = OffloadSim(cfg), np.random.default_rng(seed)
    learner = OffloadLearner(method, sim, args, seed) if method in METHODS else None
    policy = make_baseline(method, seed) if learner is None else None
    log = CsvLog(Path(out) / "train_log.csv", LOG_COLUMNS) if out is not None else None
    start, delays = time.perf_counter(), []
    for ep in range(episodes):
        delays.append(learner.episode(rng) if learner else play_episode(policy, sim, rng=rng))
        if log:
            stats = learner.last_stats if learner else {}
            log.write(episode=ep + 1, mean_delay_s=round(delays[-1], 6), tasks=len(sim.workload),
                      updates=learner.updates if learner else None, alpha=stats.get("alpha"),
                      wall_s=round(time.perf_counter() - start, 3))
    if log:
        log.close()
        if learner:
            torch.save({"method": method, "args": asdict(learner.args), "config": asdict(cfg),
                        "agent": learner.agent.state_dict(), "memory": learner.memory}, Path(out) / "agent.pt")
    return delays
