"""The policy interface every scheduler implements, in the simulator and on the serving host alike."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernel
from .config import EATConfig


class StateView(NamedTuple):
    """Read-only access to the scheduler state a decision is made on (batch of one):
    ``servers, tasks, clock, params, step_time, init_time`` as in ``core.state``. The simulator
    (``EATEnv.state_arrays``) and the host expose the same arrays."""

    servers: np.ndarray
    tasks: np.ndarray
    clock: np.ndarray
    params: np.ndarray
    step_time: np.ndarray
    init_time: np.ndarray


class Policy:
    """``act(observation, info) -> action`` in [-1, 1]^(2 + L).

    ``observation`` is the token matrix (L + N, 7) or its flat view; ``info`` carries ``action_mask``.
    Policies that price decisions with the scheduler core (``greedy``) also need ``attach(view)``.
    """

    name = "policy"
    needs_state = False
    trained_config: dict | None = None
    """A learned policy's training configuration (``EATConfig.to_dict()``), to warn about evaluating it elsewhere"""

    def __init__(self, config: EATConfig, seed: int = 0):
        """``seed``: where a policy draws random numbers, its first stream (deterministic policies ignore it)."""
        self.config = config
        self.view: StateView | None = None

    def reset(self, seed: int | None = None) -> None:
        """Called at the start of every episode."""

    def attach(self, view: StateView) -> None:
        self.view = StateView(*view)

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    # --- helpers to write actions ------------------------------------------------------------------
    def tokens(self, observation: np.ndarray) -> np.ndarray:
        return observation.reshape(self.config.token_rows, -1)

    def launch(self, slot: int, steps: int) -> np.ndarray:
        """The action that starts visible task ``slot`` with ``steps`` denoising steps."""
        cfg = self.config
        a = np.full(cfg.action_dim, -1.0, np.float32)
        a[0] = 1.0
        a[1] = kernel.encode_steps(steps, cfg.s_min, cfg.s_max)
        a[2 + slot] = 1.0
        return a

    def wait(self) -> np.ndarray:
        a = np.full(self.config.action_dim, -1.0, np.float32)
        return a
