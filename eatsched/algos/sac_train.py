"""The SAC family's training loop (``eat train --algo eat|eat-a|eat-d|eat-da|lad-ts``), CleanRL-style: collect from
``BatchedEATEnv`` (``num_envs`` clusters per policy forward), store transitions in a replay buffer on the training
device, run ``utd`` gradient updates per env step. Outputs under ``out``:

* ``policy.pt``: the deployable policy (encoder + actor + config; ``eat simulate --checkpoint``),
* ``best_policy.pt``: the policy at the periodic evaluation with the highest mean reward so far (on the validation
  seeds, ``core.seeds.VALIDATION_SEED0``, disjoint from the held-out seeds of ``eat evaluate``): off-policy
  training does not improve monotonically, and a short run often peaks before its end,
* ``train_state.pt``: everything ``--resume`` needs (networks, critics, optimizers, counters, RNG states; the
  replay buffer is not saved: a resumed run refills it with ``learning_starts`` steps of warm-up actions),
* ``train_log.csv`` / ``eval_log.csv`` (``training.TRAIN_COLUMNS`` / ``EVAL_COLUMNS``) and TensorBoard files in
  ``tb/`` (``train/...``, ``eval/...``, ``losses/...``, ``charts/SPS``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..core.config import EATConfig
from ..core.seeds import VALIDATION_SEED0
from ..sim.vector import BatchedEATEnv
from . import registry
from .sac import ReplayBuffer, SACAgent, SACArgs, graph_path_label, make_updater
from .sac_policy import SACPolicy, save_policy_checkpoint
from .training import (
    EVAL_COLUMNS,
    TRAIN_COLUMNS,
    Budget,
    CsvLog,
    EvalLines,
    best_logged_reward,
    progress_bar,
    tensorboard,
    validate,
)

DEFAULT_SAC_STEPS = 300_000
"""Env steps when neither steps nor minutes is given."""


def train_sac(algo: str, config: EATConfig, out: str | Path, *, steps: int | None = None,
              minutes: float | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
              resume: bool = False, overrides: dict | None = None, on_log: Callable[[dict], None] | None = None,
              on_eval: Callable[[dict], bool] | None = None) -> Path:
    """Train ``algo`` (one of the SAC family) on ``config``; returns the checkpoint path written under ``out``.
    ``overrides``: ``SACArgs`` fields on top of the algorithm's defaults (or of a resumed run's own). ``on_log`` is
    called with each train_log.csv row, ``on_eval`` with each eval_log.csv row plus ``wall_s`` and ``updates``; the
    run ends early (checkpoint written) when ``on_eval`` returns True."""
    overrides = dict(overrides or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available in this torch build / machine")
    budget = Budget(steps, minutes, default_steps=DEFAULT_SAC_STEPS)
    dev = torch.device(device)
    start_step = episodes_done = 0
    wall0 = 0.0
    state_path = out / "train_state.pt"
    st = None
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: no {state_path} to resume from")
        st = torch.load(state_path, map_location=dev, weights_only=False)
        if st["algo"] != algo:
            raise ValueError(f"--resume: {state_path} is a {st['algo']} run, not {algo}")
        saved_cfg = EATConfig.from_dict(st["config"])
        if saved_cfg.nodes != config.nodes or saved_cfg.queue_len != config.queue_len:
            raise ValueError(f"--resume: {state_path} was trained with nodes={saved_cfg.nodes}, "
                             f"queue_len={saved_cfg.queue_len}; the requested config differs")
    # a resumed run keeps its own hyperparameters (network sizes included); this call's overrides go on top
    args = (SACArgs.from_dict({**st["args"], **overrides}) if st is not None
            else registry.get(algo).default_args(**overrides))
    if (args.bc_updates > 0 or args.bc_weight > 0) and args.warmup_policy == "random":
        raise ValueError("bc_updates / bc_weight: behaviour cloning needs a hand-written warm-up scheduler "
                         f"(--warmup-policy {' | '.join(teacher_names())})")
    agent = SACAgent(args, config.queue_len, config.nodes, device=dev, seed=seed)
    if st is not None:
        agent.load_full_state(st["agent"])
        start_step, episodes_done, wall0 = st["step"], st["episodes"], st["wall_s"]
    # how updates run: a captured CUDA graph, or plain autograd
    update_path = graph_path_label(args.gpu_compile, args.gpu_tf32) if dev.type == "cuda" else "autograd"
    (out / "config.json").write_text(json.dumps({"algo": algo, "seed": seed, "device": device,
                                                 "update_path": update_path,
                                                 "config": config.to_dict(), "args": args.to_dict()},
                                                indent=1, default=str))

    envs = BatchedEATEnv(args.num_envs, config)
    obs, _ = envs.reset(seed=seed + 7919 * (start_step + 1) if resume else seed)
    record_teacher = args.warmup_policy != "random" and (args.bc_updates > 0 or args.bc_weight > 0)
    buffer = ReplayBuffer(args.buffer_size, args.num_envs, obs.shape[1:], config.action_dim, dev, args.gamma,
                          args.n_step, teacher=record_teacher)
    rng = np.random.default_rng([seed, start_step])
    learning_starts = start_step + args.learning_starts
    updater = None
    warmup = _warmup_actor(args, config, envs, rng)
    teacher = _teacher(args, config, envs) if record_teacher else None

    writer = tensorboard(out / "tb")
    if writer is not None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{k}|{v}|" for k, v in {**args.to_dict(), "algo": algo, "nodes": config.nodes,
                                       "rate": config.rate, "seed": seed}.items()))
    train_log = CsvLog(out / "train_log.csv", TRAIN_COLUMNS, append=resume)
    eval_log = CsvLog(out / "eval_log.csv", EVAL_COLUMNS, append=resume)

    best_reward = best_logged_reward(out / "eval_log.csv") if resume else -math.inf

    eval_lines = EvalLines(algo, not progress, start_step)  # one plain line per evaluation when there is no bar

    def evaluate(step: int) -> dict:
        nonlocal best_reward
        pol = SACPolicy(config, algo, args, _policy_state(agent), seed=VALIDATION_SEED0)
        row = {"step": step, **validate(pol, config, args.eval_episodes)}
        eval_log.write(**row)
        eval_lines(step, row)
        if row["mean_reward"] > best_reward:
            best_reward = row["mean_reward"]
            lo, hi = config.rate_span
            rates = f"rate {lo:g}" if lo == hi else f"rates {lo:g}-{hi:g}"
            label = (f"{algo}, {config.nodes} nodes, {rates}, best evaluation at {step} env steps "
                     f"(mean reward {best_reward:.1f}), seed {seed}, {device}")
            save_policy_checkpoint(out / "best_policy.pt", algo, config, args, _policy_state(agent), step, label)
        if writer is not None:
            for k in EVAL_COLUMNS[1:]:
                writer.add_scalar(f"eval/{k}", row[k], step)
        return row

    def save(step: int) -> Path:
        label = (f"{algo}, {config.nodes} nodes, rate {config.rate}, {step} env steps, {n_updates} updates, "
                 f"seed {seed}, {device}")
        p = save_policy_checkpoint(out / "policy.pt", algo, config, args, _policy_state(agent), step, label)
        tmp = state_path.with_suffix(".tmp")
        torch.save({"algo": algo, "config": config.to_dict(), "args": args.to_dict(), "agent": agent.full_state(),
                    "step": step, "episodes": episodes_done, "updates": n_updates,
                    "wall_s": wall0 + time.perf_counter() - t0}, tmp)
        tmp.replace(state_path)
        return p

    step = start_step
    recent_rewards: list[float] = []
    recent_lengths: list[int] = []
    ep_len = np.zeros(args.num_envs, np.int64)
    losses = None
    updates_due = 0.0
    n_updates = st.get("updates", 0) if st is not None else 0  # the label counts the run's updates, resumes included
    n_cloned = args.bc_updates if st is not None else 0  # a resumed run has had its warm start
    next_log, next_eval, next_ckpt = step + args.log_every, step + args.eval_every, step + args.checkpoint_every
    last_eval: dict = {}
    last_row_step = -1
    t0 = budget.start = time.perf_counter()
    sps_t, sps_step = t0, step

    with progress_bar(progress, "reward", "eval") as prog:
        task = prog.add_task(f"{algo} N={config.nodes} rate={config.rate}", total=1.0, reward="-", eval="-")
        while not budget.exhausted(step - start_step):
            teacher_actions = teacher(obs) if teacher is not None else None
            if step < learning_starts:
                actions = warmup(obs)
            else:
                with torch.inference_mode():
                    actions = agent.act(torch.as_tensor(obs, device=dev)).cpu().numpy()
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            ep_len += 1
            if "ended" in infos:
                for i, ret in zip(infos["ended"], infos["episode_return"], strict=True):
                    recent_rewards.append(float(ret))
                    recent_lengths.append(int(ep_len[i]))
                    ep_len[i] = 0
                    episodes_done += 1
            buffer.add_step(obs, actions, next_obs, rewards, terminated, truncated, infos, teacher_actions)
            obs = next_obs
            step += args.num_envs

            if step >= learning_starts and len(buffer) >= args.batch_size:
                if n_cloned < args.bc_updates:  # behaviour-cloning warm start, all at once, before plain SAC
                    for _ in range(args.bc_updates - n_cloned):
                        losses = agent.clone_update(buffer.sample(args.batch_size, agent.generator))
                        n_updates += 1
                    n_cloned = args.bc_updates
                if updater is None:
                    updater = make_updater(agent, buffer)
                updates_due += args.num_envs * args.utd
                while updates_due >= 1.0:
                    losses = updater()
                    updates_due -= 1.0
                    n_updates += 1

            if step >= next_log:
                next_log += args.log_every
                row = _train_row(step, episodes_done, recent_rewards, recent_lengths, losses, agent,
                                 wall0 + time.perf_counter() - t0)
                train_log.write(**row)
                last_row_step = step
                now = time.perf_counter()
                sps = (step - sps_step) / max(1e-9, now - sps_t)
                sps_t, sps_step = now, step
                if writer is not None:
                    for k in TRAIN_COLUMNS[2:7]:
                        if row[k] != "":
                            writer.add_scalar(("losses/" if k.startswith("loss") or k == "alpha" else "train/") + k,
                                              row[k], step)
                    writer.add_scalar("charts/SPS", sps, step)
                if on_log is not None:
                    on_log(row)
                if recent_rewards:
                    prog.update(task, reward=f"{row['episode_reward']:.1f}")
                recent_rewards.clear()
                recent_lengths.clear()
            if step >= next_eval:
                next_eval += args.eval_every
                last_eval = evaluate(step)
                prog.update(task, eval=f"{last_eval['mean_reward']:.1f}")
                if on_eval is not None and on_eval({**last_eval, "wall_s": wall0 + time.perf_counter() - t0,
                                                    "updates": n_updates}):
                    break
            if step >= next_ckpt:
                next_ckpt += args.checkpoint_every
                save(step)
            prog.update(task, completed=budget.fraction(step - start_step))
    if last_row_step != step:
        train_log.write(**_train_row(step, episodes_done, recent_rewards, recent_lengths, losses, agent,
                                   wall0 + time.perf_counter() - t0))
    if not last_eval or last_eval["step"] != step:
        evaluate(step)
    path = save(step)
    train_log.close()
    eval_log.close()
    if writer is not None:
        writer.close()
    return path


def teacher_names() -> tuple[str, ...]:
    """Hand-written schedulers that can act from the observation alone (a warm-up scheduler or a teacher; greedy
    needs the scheduler state, random teaches nothing)."""
    return tuple(n for n in registry.names(learned=False)
                 if n != "random" and not registry.make_policy(n, EATConfig(nodes=4)).needs_state)


def _teacher(args, config: EATConfig, envs) -> Callable[[np.ndarray], np.ndarray]:
    """The warm-up scheduler's own decision per env, without noise."""
    if args.warmup_policy not in teacher_names():
        raise ValueError(f"warmup_policy: random, {', '.join(teacher_names())}, got {args.warmup_policy!r}")
    pol = registry.make_policy(args.warmup_policy, config)

    def act(obs: np.ndarray) -> np.ndarray:
        masks = envs.action_masks
        return np.stack([pol.act(obs[i], {"action_mask": masks[i]}) for i in range(len(obs))])

    return act


def _warmup_actor(args, config: EATConfig, envs, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Actions of the warm-up steps: uniform (``warmup_policy="random"``), or a hand-written scheduler's
    decision per env plus Gaussian noise, so that the first updates learn from competent transitions."""
    if args.warmup_policy == "random":
        return lambda obs: rng.uniform(-1.0, 1.0, (len(obs), config.action_dim)).astype(np.float32)
    clean = _teacher(args, config, envs)

    def act(obs: np.ndarray) -> np.ndarray:
        a = clean(obs)
        return np.clip(a + rng.normal(0.0, args.warmup_noise, a.shape), -1.0, 1.0).astype(np.float32)

    return act


def _policy_state(agent) -> dict:
    import torch  # noqa: PLC0415

    with torch.no_grad():
        st = agent.policy_state()
    return {"encoder": {k: v.detach().cpu().clone() for k, v in st["encoder"].items()},
            "actor": {k: v.detach().cpu().clone() for k, v in st["actor"].items()},
            "memory": st["memory"].detach().cpu().clone()}


def _train_row(step, episodes, rewards, lengths, losses, agent, wall_s) -> dict:
    lc, la = ("", "") if losses is None else (float(losses[0]), float(losses[1]))
    return {"step": step, "episodes": episodes,
            "episode_reward": float(np.mean(rewards)) if rewards else "",
            "episode_length": float(np.mean(lengths)) if lengths else "",
            "loss_actor": la, "loss_critic": lc, "alpha": agent.alpha, "wall_s": round(wall_s, 3)}
