"""Features a learned policy's encoder may add to the observation, computed from the observation itself (so the
env and SPEC's token matrix stay as they are), written once for NumPy arrays and torch tensors alike: training runs
them in torch, the single-decision path (``fastpath``) in NumPy."""

from __future__ import annotations

import numpy as np

from ..core.kernel import MAX_PATCHES
from ..core.state import (
    N_FEATURES,
    SERVER_BUSY_FOR,
    SERVER_GROUP,
    SERVER_IDLE,
    SERVER_MODEL,
    SERVER_UP,
    TASK_MODEL,
    TASK_PATCHES,
    TASK_PRESENT,
    TASK_READY,
)

WARM_ETA_CAP = 1.0
"""The warm-ETA column's largest value (in time_scale units: 100 model s by default): "no such group soon"."""


def _xp(x):
    """The array module of ``x`` (torch is imported only when a tensor comes in)."""
    if isinstance(x, np.ndarray):
        return np
    import torch  # noqa: PLC0415

    return torch


def with_warm_eta(tok, queue_len: int):
    """Token matrices (..., L + N, 7) -> (..., L + N, 8): a last column that, for each visible task, says how long
    (time_scale units, at most ``WARM_ETA_CAP``) until a busy group of exactly its size holding its model frees up:
    0 if it can start warm now, the cap if no such group is busy. Server rows and empty slots get 0. It is the
    quantity ``patient`` decides on; in the raw tokens it is spread over a task row and every server row."""
    xp = _xp(tok)
    L = queue_len
    task, srv = tok[..., :L, :], tok[..., L:, :]
    nodes = srv.shape[-2]
    k = task[..., TASK_PATCHES] * MAX_PATCHES  # (..., L)
    size = srv[..., SERVER_GROUP] * nodes  # (..., N)
    busy = (srv[..., SERVER_IDLE] < 0.5) & (srv[..., SERVER_UP] > 0.5)
    match = ((xp.abs(size[..., None, :] - k[..., :, None]) < 0.5)
             & (xp.abs(srv[..., None, :, SERVER_MODEL] - task[..., :, None, TASK_MODEL]) < 1e-4)
             & busy[..., None, :])  # (..., L, N)
    wait = srv[..., None, :, SERVER_BUSY_FOR] + (~match) * (2.0 * WARM_ETA_CAP)
    eta = xp.clip(xp.amin(wait, -1), None, WARM_ETA_CAP)
    eta = eta * (task[..., TASK_READY] < 0.5) * task[..., TASK_PRESENT]
    col = tok[..., :1] * 0.0
    col[..., :L, 0] = eta
    cat = np.concatenate if xp is np else xp.cat
    return cat([tok, col], -1)


def encoder_inputs(warm_eta: bool) -> int:
    """Columns the encoder reads per token."""
    return N_FEATURES + int(warm_eta)
