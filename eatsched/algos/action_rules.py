"""Rules on a learned policy's action that training and deployment share, written once for NumPy arrays and torch
tensors alike (no torch import here: the deployed policy decides in NumPy)."""

from __future__ import annotations

from ..core.state import SERVER_IDLE, SERVER_UP, TASK_CAN_START


def launch_when_idle(action, obs, queue_len: int):
    """``SACArgs.no_idle_wait``: ``action`` (..., A) with its launch entry set to 1 where ``obs`` (..., L + N, 7) has no
    busy server and some visible task can start. NumPy arrays or torch tensors alike (training and deployment share
    this one rule); returns a new array."""
    busy = (obs[..., queue_len:, SERVER_IDLE] < 0.5) & (obs[..., queue_len:, SERVER_UP] > 0.5)
    first = action * 0.0  # 1 in the launch entry, in the action's own type
    first[..., 0] = 1.0
    force = (~busy.any(-1) & (obs[..., :queue_len, TASK_CAN_START] > 0.5).any(-1))[..., None] * first
    return action * (1.0 - force) + force
