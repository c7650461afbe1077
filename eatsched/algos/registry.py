"""Every scheduler the project knows, in one table: what it is, how it is made, trained and stored.

The CLI's choices and help, ``eat evaluate``'s default list, shipped-checkpoint lookup and the compatibility check
of a checkpoint against a cluster are all derived from ``REGISTRY``. Adding a scheduler is one ``Algorithm`` entry
here plus its module.

Entries name their code as ``"module:attribute"`` strings, resolved on first use, so that listing the schedulers
imports neither torch nor Stable-Baselines3 (the ``learn`` extra is optional).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.config import EATConfig
from ..core.policy import Policy

FAMILIES = ("heuristic", "sac", "ppo", "search")


@dataclass(frozen=True)
class Algorithm:
    name: str
    family: str
    """``heuristic`` (hand-written, no checkpoint), ``sac`` (the SAC family), ``ppo``, ``search``"""
    summary: str
    make: str
    """``module:callable``: ``(algo, config, checkpoint: Path | None, seed) -> Policy``; a heuristic's class"""
    train: str | None = None
    """``module:callable``: ``(algo, config, out, *, steps, minutes, seed, device, progress, resume, overrides)``"""
    args: str | None = None
    """``module:Dataclass`` of the hyperparameters (``eat train --sac`` / overrides are its fields)"""
    variant: dict[str, Any] = field(default_factory=dict)
    """hyperparameters that make this algorithm what it is (the SAC family: encoder, actor, latent memory)"""
    checkpoint_ext: str | None = None
    """suffix of its checkpoint file (``policy.{ext}``, shipped as ``{name}-n{nodes}.{ext}``)"""

    @property
    def learned(self) -> bool:
        return self.checkpoint_ext is not None

    def default_args(self, **overrides):
        """The hyperparameter dataclass with this algorithm's variant and ``overrides`` applied."""
        if self.args is None:
            raise ValueError(f"{self.name} has no hyperparameters")
        return _resolve(self.args)(**{**self.variant, **overrides})


_SAC = dict(family="sac", make="eatsched.algos.sac_policy:load_sac", train="eatsched.algos.sac_train:train_sac",
            args="eatsched.algos.sac:SACArgs", checkpoint_ext="pt")
_SEARCH = dict(family="search", make="eatsched.algos.search:load_search", train="eatsched.algos.search:train_search",
               args="eatsched.algos.search:SearchArgs", checkpoint_ext="npz")

REGISTRY: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("eat", summary="EAT: attention encoder + diffusion actor in SAC (the paper's method)",
              variant=dict(encoder="attention", actor="diffusion"), **_SAC),
    Algorithm("eat-a", summary="EAT without attention (flat state, diffusion actor)",
              variant=dict(encoder="flat", actor="diffusion"), **_SAC),
    Algorithm("eat-d", summary="EAT without diffusion (attention encoder, Gaussian actor)",
              variant=dict(encoder="attention", actor="gaussian"), **_SAC),
    Algorithm("eat-da", summary="plain SAC (flat state, Gaussian actor)",
              variant=dict(encoder="flat", actor="gaussian"), **_SAC),
    Algorithm("lad-ts", summary="LAD-TS: diffusion actor started from a latent action memory",
              variant=dict(encoder="flat", actor="diffusion", latent_memory=True), **_SAC),
    Algorithm("ppo", family="ppo", summary="PPO (Stable-Baselines3) on the flat state",
              make="eatsched.algos.ppo:load_ppo", train="eatsched.algos.ppo:train_ppo",
              args="eatsched.algos.ppo:PPOArgs", checkpoint_ext="zip"),
    Algorithm("genetic", summary="genetic search over open-loop action sequences (PyGAD)", **_SEARCH),
    Algorithm("harmony", summary="harmony search over open-loop action sequences", **_SEARCH),
    Algorithm("random", family="heuristic", summary="uniform random actions",
              make="eatsched.algos.heuristics:RandomPolicy"),
    Algorithm("fifo", family="heuristic", summary="oldest task that can start, 26 steps",
              make="eatsched.algos.heuristics:FifoPolicy"),
    Algorithm("greedy", family="heuristic", summary="best immediate reward over visible tasks x steps (paper)",
              make="eatsched.algos.heuristics:GreedyPolicy"),
    Algorithm("adaptive", family="heuristic", summary="oldest task without a cold start if any, else oldest; 16 steps",
              make="eatsched.algos.heuristics:AdaptivePolicy"),
    Algorithm("patient", family="heuristic",
              summary="adaptive, but waits up to 25 s for a warm group instead of a cold start; 16 steps",
              make="eatsched.algos.heuristics:PatientPolicy"),
    Algorithm("hol", family="heuristic", summary="head-of-line FIFO: the oldest task, no-op while it cannot start",
              make="eatsched.algos.heuristics:HolPolicy"),
)}

SHIPPED_RATES = {4: 0.05, 8: 0.10, 12: 0.15}
"""Arrival rate each shipped checkpoint was trained at (the middle of the paper's grid for its cluster size)."""
SHIPPED_RATE_RANGES = {4: (0.04, 0.3), 8: (0.08, 0.6), 12: (0.12, 0.9)}
"""Arrival rates (tasks/s, one drawn per episode) the shipped EAT checkpoints were trained over: from below the
paper grid's middle rate to above the heavy rate of the learning issue (0.25, 0.5, 0.75)."""


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get(name: str, what: str = "algorithm") -> Algorithm:
    algo = REGISTRY.get(name.lower())
    if algo is None:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(REGISTRY)}")
    return algo


def names(family: str | None = None, *, learned: bool | None = None) -> tuple[str, ...]:
    """Registered names, in table order, optionally of one family or only the learned (or hand-written) ones."""
    return tuple(a.name for a in REGISTRY.values()
                 if (family is None or a.family == family) and (learned is None or a.learned == learned))


def make_policy(name: str, config: EATConfig, *, checkpoint: str | Path | None = None, seed: int = 0) -> Policy:
    """A scheduler by name. Hand-written ones take no checkpoint; learned ones load the given one, else the shipped
    checkpoint for ``config.nodes``."""
    algo = get(name, "policy")
    if not algo.learned:
        if checkpoint:
            raise ValueError(f"policy {algo.name!r} is hand-written and takes no --checkpoint")
        return _resolve(algo.make)(config, seed=seed)
    try:
        make = _resolve(algo.make)
    except ImportError as e:  # the `learn` extra is not installed
        raise ValueError(f"policy {algo.name!r} is not available in this build ({e}); hand-written policies: "
                         f"{', '.join(names(learned=False))}") from None
    return make(algo.name, config, resolve_checkpoint(algo.name, config, checkpoint), seed)


def outside_training(policy: Policy, config: EATConfig) -> str | None:
    """A warning when a learned policy is run at an arrival rate outside the range it was trained on (None if
    inside, or if the policy is hand-written)."""
    if policy.trained_config is None:
        return None
    try:
        lo, hi = EATConfig.from_dict(policy.trained_config).rate_span
    except ValueError:  # a configuration this version cannot rebuild (e.g. a trace that is not here)
        return None
    if lo - 1e-12 <= config.rate <= hi + 1e-12:
        return None
    trained = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
    return (f"{policy.name} was trained at rate {trained} tasks/s and is evaluated at {config.rate:g}: outside the "
            f"training range, its numbers say little about what it learned")


def train(name: str, config: EATConfig, out: str | Path, *, steps: int | None = None, minutes: float | None = None,
          seed: int = 0, device: str = "cpu", progress: bool = True, resume: bool = False,
          overrides: dict | None = None, on_log: Callable[[dict], None] | None = None) -> Path:
    """Train ``name`` on ``config`` under ``out``; returns the checkpoint path. ``overrides``: hyperparameters
    (fields of the algorithm's args dataclass). ``on_log``: called with each train_log.csv row, in the training's
    thread (the SAC family; the others do not call it)."""
    algo = get(name)
    if algo.train is None:
        raise ValueError(f"{algo.name} is hand-written; nothing to train (learned: {', '.join(names(learned=True))})")
    if steps is not None and minutes is not None:
        raise ValueError("give a budget in steps or in minutes, not both")
    hook = {"on_log": on_log} if on_log is not None and algo.family == "sac" else {}
    return _resolve(algo.train)(algo.name, config, Path(out), steps=steps, minutes=minutes, seed=seed, device=device,
                                progress=progress, resume=resume, overrides=dict(overrides or {}), **hook)


# --- checkpoints ----------------------------------------------------------------------------------------------
def shipped_checkpoint(name: str, nodes: int) -> Path:
    """Where the shipped checkpoint of ``name`` for ``nodes`` servers lives (whether or not it exists)."""
    algo = get(name)
    folder = resources.files("eatsched") / "data" / "checkpoints"
    return Path(str(folder / f"{algo.name}-n{nodes}.{algo.checkpoint_ext}"))


def resolve_checkpoint(name: str, config: EATConfig, checkpoint: str | Path | None) -> Path:
    """The checkpoint to load: the given file (or ``DIR/policy.{ext}``), else the shipped one for the cluster size."""
    algo = get(name)
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            path = path / f"policy.{algo.checkpoint_ext}"
        if not path.is_file():
            raise FileNotFoundError(f"{algo.name} checkpoint {str(path)!r} does not exist")
        return path
    path = shipped_checkpoint(algo.name, config.nodes)
    if not path.is_file():
        rate = SHIPPED_RATES.get(config.nodes, config.rate)
        run = f"runs/{algo.name}-n{config.nodes}"
        raise FileNotFoundError(
            f"no shipped {algo.name} checkpoint for {config.nodes} nodes ({path.name}); train one with "
            f"`eat train --algo {algo.name} --nodes {config.nodes} --rate {rate} --out {run}` and pass "
            f"--checkpoint {run}/policy.{algo.checkpoint_ext}")
    return path


def checkpoint_in(name: str, nodes: int, folder: Path | None) -> Path | None:
    """``eat evaluate --checkpoints DIR``: ``DIR/{name}-n{nodes}.{ext}`` for a learned algorithm (None without a
    folder: the shipped one is used; hand-written ones have none)."""
    algo = get(name)
    if not algo.learned or folder is None:
        return None
    path = Path(folder) / f"{algo.name}-n{nodes}.{algo.checkpoint_ext}"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path.name} in {folder}")
    return path


def shipped_or_none(name: str, nodes: int) -> Path | None:
    """The shipped checkpoint file of a learned algorithm if there is one (None for hand-written ones)."""
    algo = get(name)
    if not algo.learned:
        return None
    path = shipped_checkpoint(name, nodes)
    return path if path.is_file() else None


def check_compatible(name: str, saved_config: dict, config: EATConfig, path: Path,
                     saved_algo: str | None = None) -> None:
    """A checkpoint holds one algorithm, and its network sizes depend on the cluster size and the visible queue
    length: refuse a mismatch with the option that fixes it."""
    if saved_algo is not None and saved_algo != name:
        raise ValueError(f"checkpoint {path} holds a {saved_algo!r} policy, not {name!r}; use --policy {saved_algo}")
    for key in ("nodes", "queue_len"):
        have, want = saved_config.get(key), getattr(config, key)
        if have != want:
            option = "--nodes" if key == "nodes" else "--set queue_len=..."
            raise ValueError(
                f"checkpoint {path} was trained with {key}={have}, but the requested cluster has {key}={want}; a "
                f"{name} policy only runs on the size it was trained for (train one with `eat train --algo {name} "
                f"{option.replace('...', str(want)) if key == 'queue_len' else f'--nodes {want}'} ...` or pick a "
                f"matching checkpoint)")
