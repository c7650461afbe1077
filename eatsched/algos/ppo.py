"""PPO baseline (paper VI-A) through Stable-Baselines3, on the batched simulator.

``BatchedVecEnv`` adapts our ``BatchedEATEnv`` (all envs stepped by one compiled call) to SB3's ``VecEnv``
API, so a rollout costs one policy forward and one kernel call per step for all envs. ``train_ppo`` writes
``out/policy.zip`` (SB3 format; the full ``EATConfig`` and the algorithm name are stored in its ``data``
entry as ``eat_config`` / ``eat_algo``), the contract's ``train_log.csv`` / ``eval_log.csv`` and SB3's
TensorBoard files under ``out/tb/``. ``load_ppo`` wraps a checkpoint as a deterministic ``Policy``.

SB3 seeds through the global ``random`` / numpy / torch generators (its ``seed=`` argument); training saves
and restores those generators, so a caller's global random state is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from ..core.config import EATConfig
from ..core.policy import Policy
from ..sim.vector import BatchedEATEnv
from . import registry
from .training import EVAL_COLUMNS, TRAIN_COLUMNS, Budget, CsvLog, EvalLines, validate

ALGO = "ppo"


@dataclass(frozen=True)
class PPOArgs:
    """PPO hyperparameters; paper VI-A / SPEC section 3 values where they are given."""

    learning_rate: float = 3e-4
    """Adam learning rate (the authors' code)"""
    gamma: float = 0.95
    """discount, as for the paper's other agents"""
    gae_lambda: float = 0.95
    """GAE lambda (paper)"""
    clip_range: float = 0.2
    """PPO ratio clip (paper)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient (paper)"""
    vf_coef: float = 0.5
    """value loss coefficient (paper)"""
    max_grad_norm: float = 0.5
    """gradient clipping norm (paper)"""
    num_envs: int = 16
    """parallel simulated clusters per rollout (one compiled step for all)"""
    n_steps: int = 256
    """steps per env per rollout (rollout size = num_envs * n_steps)"""
    batch_size: int = 256
    """minibatch size of the PPO epochs"""
    n_epochs: int = 10
    """passes over each rollout"""
    hidden: tuple[int, ...] = (256, 256)
    """hidden layers of the actor and of the critic (separate networks), as the paper's 2 x 256"""
    default_steps: int = 200_000
    """env steps when neither steps nor minutes is given"""
    eval_every: int = 20_000
    """env steps between evaluations on held-out seeds"""
    eval_episodes: int = 10
    """held-out episodes per evaluation"""
    torch_threads: int = 1
    """torch CPU threads while training (restored afterwards); these small networks gain nothing from more"""

    def __post_init__(self):
        if min(self.num_envs, self.n_steps, self.batch_size, self.n_epochs, self.eval_every, self.eval_episodes) < 1:
            raise ValueError("num_envs, n_steps, batch_size, n_epochs, eval_every and eval_episodes must be >= 1")
        if (self.num_envs * self.n_steps) % self.batch_size:
            raise ValueError("batch_size must divide num_envs * n_steps")


# --- the batched simulator as an SB3 VecEnv ---------------------------------------------------------
class BatchedVecEnv(VecEnv):
    """SB3 view of ``BatchedEATEnv(flat=True)``: ``dones = terminated | truncated``; an ended env's info has
    ``terminal_observation``, ``TimeLimit.truncated`` (time limit, not a terminal state: SB3 bootstraps
    through it) and SB3's ``episode`` record ``{"r", "l"}``. ``seed(s)`` seeds the next ``reset``."""

    def __init__(self, num_envs: int, config: EATConfig):
        self.env = BatchedEATEnv(num_envs, config, flat=True)
        self.render_mode = None
        super().__init__(num_envs, self.env.single_observation_space, self.env.single_action_space)
        self._actions = np.zeros((num_envs, config.action_dim), np.float32)
        self._lengths = np.zeros(num_envs, np.int64)

    def reset(self):
        seed = self._seeds[0]
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions[:] = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, extra = self.env.step(self._actions)
        self._lengths += 1
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for i, b in enumerate(extra.get("ended", ())):
            infos[b] = {
                "terminal_observation": extra["final_obs"][i],
                "TimeLimit.truncated": bool(truncated[b] and not terminated[b]),
                "episode": {"r": float(extra["episode_return"][i]), "l": int(self._lengths[b])},
            }
            self._lengths[b] = 0
        return obs, rewards.astype(np.float32), terminated | truncated, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        raise NotImplementedError(f"BatchedVecEnv has no per-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


# --- the policy ----------------------------------------------------------------------------------------
class PPOPolicy(Policy):
    """A trained SB3 PPO model acting deterministically (the Gaussian's mean, clipped to [-1, 1])."""

    name = ALGO

    def __init__(self, config: EATConfig, model: PPO):
        super().__init__(config)
        self.model = model

    def act(self, observation, info):
        # = model.predict(obs, deterministic=True) (the Gaussian's mean, clipped to the action space) without
        # SB3's per-call input checks, which cost more than the forward pass at batch 1
        policy = self.model.policy
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(observation, np.float32).reshape(1, -1), device=policy.device)
            latent = policy.mlp_extractor.forward_actor(policy.extract_features(x, policy.pi_features_extractor))
            mean = policy.action_net(latent)
        return np.clip(mean[0].cpu().numpy(), -1.0, 1.0).astype(np.float32)


# --- training --------------------------------------------------------------------------------------------
class _TrainMonitor(BaseCallback):
    """CSV rows after every PPO update, held-out evaluations, the budget check and the progress bar."""

    def __init__(self, config: EATConfig, out: Path, args: PPOArgs, budget: Budget, progress: bool):
        super().__init__()
        self.config, self.args, self.budget = config, args, budget
        self.train_log = CsvLog(out / "train_log.csv", TRAIN_COLUMNS)
        self.eval_log = CsvLog(out / "eval_log.csv", EVAL_COLUMNS)
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.episodes = 0
        self.logged_updates = 0
        self.last_eval = 0
        self.evaluated_updates = 0
        self.last_reward = float("nan")
        self.eval_lines = EvalLines(ALGO, not progress)  # one plain line per evaluation when there is no bar
        self.progress = None
        if progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     TextColumn("step {task.fields[step]}  reward {task.fields[reward]}"),
                                     TimeElapsedColumn())
            self.bar = self.progress.add_task(f"ppo N={config.nodes} rate={config.rate}", total=1.0, step=0,
                                              reward="-")

    def _on_training_start(self) -> None:
        if self.progress is not None:
            self.progress.start()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.returns.append(ep["r"])
                self.lengths.append(ep["l"])
        # a step budget is SB3's total_timesteps (it ends after a full rollout and its update); minutes stop here
        return self.budget.minutes is None or not self.budget.exhausted(self.num_timesteps)

    def _on_rollout_start(self) -> None:
        self._log_update()

    def _on_training_end(self) -> None:
        self._log_update()
        if self.evaluated_updates != self.model._n_updates:
            self._evaluate()
        self.train_log.close()
        self.eval_log.close()
        if self.progress is not None:
            self.progress.stop()

    def _log_update(self) -> None:
        """A row for the update that just ran (SB3 records its losses after the log dump, before the next rollout)."""
        n_updates = self.model._n_updates
        if n_updates == self.logged_updates:
            return
        self.logged_updates = n_updates
        values = self.model.logger.name_to_value
        self.episodes += len(self.returns)
        if self.returns:
            self.last_reward = float(np.mean(self.returns))
        self.train_log.write(step=self.num_timesteps, episodes=self.episodes, episode_reward=self.last_reward,
                             episode_length=float(np.mean(self.lengths)) if self.lengths else None,
                             loss_actor=values.get("train/policy_gradient_loss"),
                             loss_critic=values.get("train/value_loss"), wall_s=round(self.budget.elapsed_s, 3))
        self.returns.clear()
        self.lengths.clear()
        if self.num_timesteps - self.last_eval >= self.args.eval_every:
            self._evaluate()
        if self.progress is not None:
            self.progress.update(self.bar, completed=self.budget.fraction(self.num_timesteps), step=self.num_timesteps,
                                 reward=f"{self.last_reward:.1f}")

    def _evaluate(self) -> None:
        self.last_eval = self.num_timesteps
        self.evaluated_updates = self.model._n_updates
        row = validate(PPOPolicy(self.config, self.model), self.config, self.args.eval_episodes)
        self.eval_log.write(step=self.num_timesteps, **row)
        self.eval_lines(self.num_timesteps, row)
        for k, v in row.items():
            self.model.logger.record(f"eval/{k}", v)


@contextlib.contextmanager
def _global_rng_preserved():
    """SB3 seeds and samples from the global generators; give the caller's states back afterwards."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def train_ppo(algo: str, config: EATConfig, out, *, steps: int | None = None, minutes: float | None = None,
              seed: int = 0, device: str = "cpu", progress: bool = True, resume: bool = False,
              overrides: dict | None = None) -> Path:
    """Train PPO on ``config``; returns ``out/policy.zip`` (written also when stopped early or by Ctrl-C).
    ``overrides``: ``PPOArgs`` fields."""
    if resume:
        raise ValueError("--resume: a PPO run cannot be resumed (SB3 keeps no replayable state); start a new --out")
    args = PPOArgs(**(overrides or {}))
    budget = Budget(steps, minutes, default_steps=args.default_steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    with _global_rng_preserved():
        venv = BatchedVecEnv(args.num_envs, config)
        venv.seed(seed)
        model = PPO(
            "MlpPolicy", venv, learning_rate=args.learning_rate, n_steps=args.n_steps, batch_size=args.batch_size,
            n_epochs=args.n_epochs, gamma=args.gamma, gae_lambda=args.gae_lambda, clip_range=args.clip_range,
            ent_coef=args.ent_coef, vf_coef=args.vf_coef, max_grad_norm=args.max_grad_norm,
            policy_kwargs={"net_arch": {"pi": list(args.hidden), "vf": list(args.hidden)}},
            tensorboard_log=str(out / "tb"), seed=seed, device=device, verbose=0,
        )
        model.eat_config = config.to_dict()
        model.eat_algo = ALGO
        monitor = _TrainMonitor(config, out, args, budget, progress)
        total = budget.steps if budget.steps is not None else 10**12  # minutes: the callback stops it
        try:
            model.learn(total_timesteps=total, callback=monitor, log_interval=1, tb_log_name="ppo",
                        progress_bar=False)
        except KeyboardInterrupt:
            pass  # keep what was learned: saved below
        finally:
            torch.set_num_threads(threads)
    path = out / "policy.zip"
    model.save(path)
    (out / "config.json").write_text(json.dumps({"algo": ALGO, "config": config.to_dict(), "args": asdict(args),
                                                 "seed": seed, "steps": int(model.num_timesteps)}, indent=1))
    return path


def load_ppo(algo: str, config: EATConfig, path: Path, seed: int = 0) -> Policy:
    """The PPO policy of a ``policy.zip`` (``registry.make_policy`` finds the file)."""
    try:
        model = PPO.load(path, device="cpu")
    except Exception as e:  # SB3 raises many kinds on a foreign or damaged file
        raise ValueError(f"{path} is not a PPO checkpoint of this project ({type(e).__name__}: {e})") from None
    saved = getattr(model, "eat_config", None)
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is an SB3 model without an embedded eatsched config; retrain it with `eat train`")
    registry.check_compatible(algo, saved, config, path, getattr(model, "eat_algo", None))
    policy = PPOPolicy(config, model)
    policy.trained_config = saved
    return policy
