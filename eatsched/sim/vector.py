"""BatchedEATEnv: many EAT environments stepped by one compiled call per step (for fast training).

Same semantics as ``EATEnv`` (the same kernel runs both; ``tests/test_vector.py`` replays a batched
env's workloads and actions in single envs and compares every reward and observation). Episodes
auto-reset in the same step: the returned observation of an env whose episode just ended is the first
observation of its next episode, and ``infos["final_obs"]`` holds the last one.
"""

from __future__ import annotations

import os
from collections import deque

import gymnasium as gym
import numba
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from .._memory import retain_freed_memory
from ..core import kernel
from ..core.config import EATConfig
from ..core.metrics import summarize
from ..core.state import N_FEATURES, allocate, make_params, make_time_tables, observation_high
from ..core.workload import make_arrivals


def _use_usable_cores() -> None:
    """Numba starts one thread per CPU of the machine; under a CPU affinity mask (containers, taskset) that
    oversubscribes the cores we may use, so cap its threads at those."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return
    if "NUMBA_NUM_THREADS" not in os.environ and numba.get_num_threads() > usable:
        numba.set_num_threads(usable)


PARALLEL_MIN_ENVS = 256
"""From this many envs on, steps are spread over the CPU cores."""
WORKLOAD_BLOCK = 1024
"""Episodes' workloads drawn at once for auto-resets."""
MAX_PENDING_BATCHES = 4096
"""Steps' worth of ended episodes kept for ``pop_episode_metrics`` (older ones are dropped)."""


class BatchedEATEnv(VectorEnv):
    """``num_envs`` independent clusters with one config; actions (num_envs, 2 + L) in [-1, 1].

    Seeding: ``reset(seed=s)`` seeds one generator for all workloads of the batch (episodes are drawn
    in one vectorized call), so runs are reproducible from ``s``; the episodes differ from those of
    single envs seeded ``s``.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, config: EATConfig | None = None, *, flat: bool = False,
                 parallel: bool | None = None, copy_obs: bool = True, **overrides):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = cfg = (config or EATConfig()).replace(**overrides)
        retain_freed_memory()  # workload blocks and observation copies are large arrays made every few steps
        self.num_envs = num_envs
        self.flat = flat
        self.copy_obs = copy_obs  # False: step() returns the internal buffer, valid until the next step
        self.arrivals = make_arrivals(cfg)
        self._params = make_params(cfg)
        self._step_time, self._init_time = make_time_tables(cfg)
        self._speeds = np.asarray(cfg.server_speeds, np.float64)
        self._servers, self._tasks, self._clock = allocate(cfg, num_envs, self.arrivals.max_tasks)
        self._obs = np.zeros((num_envs, cfg.token_rows, N_FEATURES), np.float32)
        self._info = np.zeros((num_envs, kernel.N_INFO), np.float64)
        self._mask = np.zeros((num_envs, cfg.queue_len), np.bool_)
        self._actions = np.zeros((num_envs, cfg.action_dim), np.float32)
        self._returns = np.zeros(num_envs, np.float64)
        self.rng = np.random.default_rng()
        use_parallel = num_envs >= PARALLEL_MIN_ENVS if parallel is None else parallel
        if use_parallel:
            _use_usable_cores()
        self._step_fn = kernel.step_batch_parallel if use_parallel else kernel.step_batch
        self._step_args = (self._servers, self._tasks, self._clock, self._params, self._step_time,
                           self._init_time, self._actions, self._obs, self._info, self._mask)
        self._step_kernel = kernel.bind(self._step_fn, *self._step_args)
        self._reset_kernel = None
        self._pool: tuple[np.ndarray, ...] | None = None  # pre-drawn workloads, handed out from _pool_pos
        self._pool_pos = 0
        # task rows of ended episodes, kept as raw bytes (a structured fancy-index copy costs ~6x more) until
        # pop_episode_metrics; bounded so that a caller that never pops does not grow memory without end
        self._task_bytes = self._tasks.view(np.uint8).reshape(num_envs, -1)
        self._ended: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=MAX_PENDING_BATCHES)
        self._ended_idx = np.zeros(num_envs, np.int64)
        self._harvest = kernel.bind(kernel.harvest_ended, self._ended_idx, self._obs, self._returns, self._clock,
                                    self._task_bytes)
        self._collect = kernel.bind(kernel.collect_step, self._info, self._returns, np.empty(num_envs),
                                    np.empty(num_envs, np.bool_), np.empty(num_envs, np.bool_), self._ended_idx)

        single_act = spaces.Box(-1.0, 1.0, (cfg.action_dim,), np.float32)
        high = observation_high(cfg)
        if flat:
            high = high.reshape(-1)
        single_obs = spaces.Box(np.zeros_like(high), high, high.shape, np.float32)
        self.single_action_space = single_act
        self.single_observation_space = single_obs
        self.action_space = gym.vector.utils.batch_space(single_act, num_envs)
        self.observation_space = gym.vector.utils.batch_space(single_obs, num_envs)

    # --- API ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self._pool = None  # workloads drawn from the old generator are not reused
        self._reset_envs(np.arange(self.num_envs))
        self._ended.clear()
        return self._observations(), {}

    def step(self, actions):
        self._actions[:] = actions
        self._step_kernel(*self._step_args)
        n = self.num_envs
        rewards, terminated, truncated = np.empty(n), np.empty(n, np.bool_), np.empty(n, np.bool_)
        n_ended = self._collect(self._info, self._returns, rewards, terminated, truncated, self._ended_idx)
        infos: dict = {}
        if n_ended:
            ended = self._ended_idx[:n_ended].copy()
            final_obs, ep_return, rows, counts = self._harvest(ended, self._obs, self._returns, self._clock,
                                                               self._task_bytes)
            infos["final_obs"] = final_obs.reshape(n_ended, -1) if self.flat else final_obs
            infos["ended"] = ended
            infos["episode_return"] = ep_return
            self._ended.append((rows, counts, ep_return))
            self._reset_envs(ended, zero_returns=False)  # harvest_ended zeroed them
        return self._observations(), rewards, terminated, truncated, infos

    def pop_episode_metrics(self) -> list[dict]:
        """Metrics of the episodes that ended since the last call (for training logs)."""
        out = []
        for raw, counts, returns in self._ended:
            rows = raw.view(self._tasks.dtype)
            for r, n, ret in zip(rows, counts, returns, strict=True):
                m = summarize(r[:n])
                m["reward"] = float(ret)
                out.append(m)
        self._ended.clear()
        return out

    # --- internals ---------------------------------------------------------------------------------
    def _reset_envs(self, idx: np.ndarray, zero_returns: bool = True) -> None:
        arrival, patches, models, counts = self.next_workloads(idx)
        args = (self._servers, self._tasks, self._clock, self._params, self._speeds, np.asarray(idx, np.int64),
                arrival, patches, models, counts, self._obs, self._info, self._mask)
        if self._reset_kernel is None:  # bound on first use, to the types the workloads come in
            self._reset_kernel = kernel.bind(kernel.reset_many, *args)
        try:
            self._reset_kernel(*args)
        except TypeError:  # workloads of other array types (an override of next_workloads): dispatch
            kernel.reset_many(*args)
        if zero_returns:
            self._returns[idx] = 0.0

    def next_workloads(self, idx: np.ndarray):
        """Workloads for the episodes about to start in envs ``idx``: ``(arrival, patches, models, counts)``,
        row q for env ``idx[q]`` (float64 / int64 arrays, rows padded past ``counts[q]``). Drawn from the
        arrival process in blocks of ``WORKLOAD_BLOCK`` episodes (one vectorized draw serves many steps'
        auto-resets); override to replay fixed workloads (``algos.search`` does)."""
        n = len(idx)
        if self._pool is None or self._pool_pos + n > len(self._pool[3]):
            self._pool = self.arrivals.sample_batch(self.rng, max(WORKLOAD_BLOCK, n))
            self._pool_pos = 0
        a = self._pool_pos
        self._pool_pos += n
        return tuple(x[a:a + n] for x in self._pool)

    def _observations(self) -> np.ndarray:
        obs = self._obs.reshape(self.num_envs, -1) if self.flat else self._obs
        return obs.copy() if self.copy_obs else obs

    @property
    def action_masks(self) -> np.ndarray:
        """(num_envs, L) bool: visible tasks that can start now."""
        return self._mask.copy()
