"""EATEnv: the edge-cluster AIGC scheduling problem of SPEC section 2 as a Gymnasium environment."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..core import kernel
from ..core.config import EATConfig
from ..core.metrics import summarize, task_log
from ..core.state import (
    ACTIVE,
    N_FEATURES,
    TERMINATED,
    TRUNCATED,
    allocate,
    make_params,
    make_time_tables,
    observation_high,
)
from ..core.workload import Workload, make_arrivals


class EATEnv(gym.Env):
    """
    ## Description
    An edge cluster of N GPU servers receives text-to-image tasks. Task i arrives at a_i, asks for one
    model type and k_i in {1, 2, 4(, 8)} patches that must run at the same time on k_i idle servers
    (gang scheduling). At each decision the agent either waits or starts one visible task with s
    denoising steps (more steps: higher quality, longer execution). The server selector (paper V-B4)
    reuses an idle group of the right size and model when there is one (no cold start); otherwise every
    chosen server initializes (a *reload*). Times come from a profile (``core.profiles``).

    ## Action Space
    ``Box(-1, 1, (2 + L,), float32)``; u = (a + 1) / 2.

    | Num   | Action                 | Meaning                                                          |
    |-------|------------------------|------------------------------------------------------------------|
    | 0     | execute                | u >= 0.5 (a >= 0): start a task now                              |
    | 1     | steps                  | s = round(s_min + u (s_max - s_min)), halves round up           |
    | 2..   | task scores            | the highest-scored visible task that can start is launched       |

    With ``paper_literal=True`` the highest-scored visible task is taken and the step is a no-op if it
    cannot start. Empty slots never win.

    ## Observation Space
    ``Box(0, hi, (L + N, 7), float32)``: a token matrix, L task rows (oldest first) then N server rows.
    Times are divided by ``time_scale`` and clipped at ``time_limit / time_scale``.

    | Col | Task row (type 0)                      | Server row (type 1)                       |
    |-----|----------------------------------------|-------------------------------------------|
    | 0   | type = 0                               | type = 1                                  |
    | 1   | present (0 for an empty slot)          | idle                                      |
    | 2   | waiting time                           | remaining busy time                       |
    | 3   | patch count / 8                        | loaded model (index + 1) / n_models       |
    | 4   | model (index + 1) / n_models           | group size / N                            |
    | 5   | can start now (k <= idle servers)      | speed / max speed                         |
    | 6   | an idle group of its model and size    | up (always 1 in the simulator)            |
    |     | exists (starts without cold start)     |                                           |

    ``flat=True`` returns the same numbers as a vector of length (L + N) * 7 for MLP policies.

    ## Rewards
    Launching task i at time t earns
    ``min(r_max, w_t / (w_w Wbar + (t - a_i) + init_i + exec_i)) + w_q q(s_i) - w_p [q(s_i) < Q_min]``,
    Wbar the mean waiting time of the visible queue after i leaves it. A step that launches nothing
    earns 0.

    ## Starting State
    All servers idle, nothing loaded; the clock jumps to the first arrival.

    ## Episode End
    * Termination: every task of the episode has finished.
    * Truncation: the clock reaches ``time_limit`` (1024 s) with tasks unfinished.

    Time does not advance after a launch. After a no-op it advances by ``tick`` (tick mode) or to the
    next arrival/completion (event mode). Whenever no visible task can start, the clock jumps to the
    next arrival or completion, so every step is a real decision.

    ## Info
    ``action_mask`` (L,) bool: visible tasks that can start now; ``time``, ``queued``, ``launched``,
    ``finished``, ``reloads``; at the episode's end also ``episode`` (the per-episode metrics).

    ``reset(options={"workload": Workload(...)})`` replays a given workload instead of drawing one.

    ## Arguments
    ``gymnasium.make("eatsched/EAT-v0", nodes=8, rate=0.1, ...)``: any ``EATConfig`` field as a keyword,
    or ``config=EATConfig(...)``; ``flat=True`` for the vector view.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, config: EATConfig | None = None, *, flat: bool = False, render_mode: str | None = None,
                 **overrides):
        self.config = cfg = (config or EATConfig()).replace(**overrides)
        self.flat = flat
        self.render_mode = render_mode
        self.arrivals = make_arrivals(cfg)
        self._params = make_params(cfg)
        self._step_time, self._init_time = make_time_tables(cfg)
        self._servers, self._tasks, self._clock = allocate(cfg, 1, self.arrivals.max_tasks)
        self._obs = np.zeros((1, cfg.token_rows, N_FEATURES), np.float32)
        self._action = np.zeros((1, cfg.action_dim), np.float32)
        self._info_vec = np.zeros((1, kernel.N_INFO), np.float64)
        self._mask = np.zeros((1, cfg.queue_len), np.bool_)
        self._speeds = np.asarray(cfg.server_speeds, np.float64)
        self._step_args = (self._servers, self._tasks, self._clock, self._params, self._step_time,
                           self._init_time, self._action, self._obs, self._info_vec, self._mask)
        self._step_kernel = kernel.bind(kernel.step_batch, *self._step_args)
        w = self.arrivals.sample(np.random.default_rng(0))  # only to fix the argument types
        self._reset_kernel = kernel.bind(kernel.reset_batch, self._servers, self._tasks, self._clock, self._params,
                                         self._speeds, w.arrival, w.patches, w.models, self._obs, self._info_vec,
                                         self._mask)
        # views made once: slicing costs as much as the kernel's work at 100k steps/s
        self._obs0 = self._obs[0]
        self._obs0_flat = self._obs0.reshape(-1)
        self._mask0 = self._mask[0]
        self._info0 = self._info_vec[0]
        self._action0 = self._action[0]
        self._ended = True  # no episode until reset()
        self.workload: Workload | None = None
        self.episode_return = 0.0

        self.action_space = spaces.Box(-1.0, 1.0, (cfg.action_dim,), np.float32)
        high = observation_high(cfg)
        shape = (cfg.token_rows, N_FEATURES)
        if flat:
            high, shape = high.reshape(-1), (cfg.token_rows * N_FEATURES,)
        self.observation_space = spaces.Box(np.zeros(shape, np.float32), high, shape, np.float32)

    # --- Gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        w = (options or {}).get("workload") or self.arrivals.sample(self.np_random)
        if len(w) > self._tasks.shape[1]:
            raise ValueError(f"workload has {len(w)} tasks; this env holds at most {self._tasks.shape[1]}")
        self.workload = w
        self._reset_kernel(self._servers, self._tasks, self._clock, self._params, self._speeds,
                           w.arrival, w.patches, w.models, self._obs, self._info_vec, self._mask)
        self.episode_return = 0.0
        self._ended = self._info0[kernel.INFO_STATUS] != ACTIVE
        return self._observation(), self._info()

    def step(self, action):
        if self._ended:
            raise RuntimeError("call reset() before step()" if self.workload is None
                               else "the episode has ended; call reset()")
        try:
            self._action0[:] = action  # values outside [-1, 1] are clamped by the decoder
        except ValueError:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {np.shape(action)}") from None
        self._step_kernel(*self._step_args)
        t, queued, launched, done, reloads, status, reward = self._info0.tolist()
        self.episode_return += reward
        info = {"action_mask": self._mask0.copy(), "time": t, "queued": int(queued), "launched": int(launched),
                "finished": int(done), "reloads": int(reloads)}
        if status != ACTIVE:
            self._ended = True
            info["episode"] = self.metrics()
        return (self._obs0_flat if self.flat else self._obs0).copy(), reward, status == TERMINATED, \
            status == TRUNCATED, info

    def render(self):
        if self.render_mode != "ansi":
            return None
        c = self._clock[0]
        lines = [f"t={c['time']:8.2f}s  queued={self.queued}  launched={c['n_launched']}  done={c['n_done']}"]
        for j, s in enumerate(self._servers[0]):
            busy = max(0.0, s["busy_until"] - c["time"])
            lines.append(f"  server {j:2d}: {f'busy {busy:6.1f}s' if busy > 0 else 'idle       '} "
                         f"model={s['model']:2d} group={s['group']:3d} (size {s['group_size']})")
        return "\n".join(lines)

    # --- views -------------------------------------------------------------------------------------
    def _observation(self) -> np.ndarray:
        return (self._obs0_flat if self.flat else self._obs0).copy()

    def _info(self) -> dict:
        t, queued, launched, done, reloads, _, _ = self._info0.tolist()
        return {
            "action_mask": self._mask0.copy(),
            "time": t,
            "queued": int(queued),
            "launched": int(launched),
            "finished": int(done),
            "reloads": int(reloads),
        }

    @property
    def queued(self) -> int:
        return int(self._info_vec[0, kernel.INFO_QUEUED])

    @property
    def now(self) -> float:
        return float(self._clock[0]["time"])

    @property
    def state_arrays(self):
        """(servers, tasks, clock, params, step_time, init_time), batch of one. Read-only by convention:
        policies use it to price decisions (see ``algos.heuristics.Greedy``)."""
        return self._servers, self._tasks, self._clock, self._params, self._step_time, self._init_time

    def task_log(self, episode: int = 0) -> list[dict]:
        log = task_log(self._tasks[0], int(self._clock[0]["n_tasks"]), episode)
        if self.workload is not None and self.workload.prompts:
            for r, prompt in zip(log, self.workload.prompts, strict=False):
                r["prompt"] = prompt
        return log

    def episode_tasks(self) -> np.ndarray:
        """A copy of this episode's task records (``core.state.TASK``)."""
        return self._tasks[0, : int(self._clock[0]["n_tasks"])].copy()

    def metrics(self) -> dict:
        m = summarize(self.episode_tasks())
        m["reward"] = self.episode_return
        m["decisions"] = int(self._clock[0]["decisions"])
        m["end_time"] = self.now
        return m
