"""What every trainer (SAC family, PPO, Genetic, Harmony) shares: budgets, the CSV logs, the periodic evaluation
on validation seeds, TensorBoard and the progress bar.

The log columns are a contract (``eat evaluate`` and the training plots read them); keep them exactly.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import EATConfig
from ..core.seeds import VALIDATION_SEED0

TRAIN_COLUMNS = ("step", "episodes", "episode_reward", "episode_length", "loss_actor", "loss_critic", "alpha",
                     "wall_s")
"""``out/train_log.csv``: one row per log interval; an empty cell where a column does not apply."""
EVAL_COLUMNS = ("step", "mean_reward", "mean_quality", "mean_response_s", "efficiency")
"""``out/eval_log.csv``: periodic evaluation on held-out workload seeds."""


class CsvLog:
    """Append-only CSV with a fixed header; flushed after every row so a killed run keeps its log."""

    def __init__(self, path: Path, columns: tuple[str, ...], append: bool = False):
        self.columns = columns
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not (append and path.exists())
        self._file = path.open("w" if new else "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
        if new:
            self._writer.writeheader()
        self._file.flush()

    def write(self, **row) -> None:
        clean = {}
        for k in self.columns:
            v = row.get(k)
            clean[k] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        self._writer.writerow(clean)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class Budget:
    """A training budget in env steps or wall-clock minutes (at most one given; both None: ``default_steps``, and
    if that is None too the caller's own count of rounds is the only limit)."""

    steps: int | None = None
    minutes: float | None = None
    default_steps: int | None = None
    start: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.steps is not None and self.minutes is not None:
            raise ValueError("give a budget in steps or in minutes, not both")
        if self.steps is None and self.minutes is None:
            self.steps = self.default_steps

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self, steps_used: int) -> bool:
        if self.steps is not None and steps_used >= self.steps:
            return True
        return self.minutes is not None and self.elapsed_s >= 60.0 * self.minutes

    def fraction(self, steps_used: int) -> float:
        """Progress in [0, 1] for the progress bar (the larger of the step and time fractions)."""
        parts = [0.0]
        if self.steps is not None:
            parts.append(steps_used / self.steps)
        if self.minutes is not None:
            parts.append(self.elapsed_s / (60.0 * self.minutes))
        return min(1.0, max(parts))


def validate(policy, config: EATConfig, episodes: int, seed: int = VALIDATION_SEED0) -> dict:
    """The periodic evaluation of every trainer: mean reward and the paper's metrics of ``policy`` on the validation
    seeds ``seed .. seed + episodes - 1`` (one ``eval_log.csv`` row, without its step)."""
    from ..sim.rollout import simulate  # noqa: PLC0415

    s = simulate(policy, config, episodes, seed).summary()
    return {"mean_reward": s["mean_reward"], "mean_quality": s["mean_quality"],
            "mean_response_s": s["mean_response_s"], "efficiency": s["efficiency"]}


def eval_line(algo: str, step: int, row: dict, env_steps_per_s: float | None = None) -> str:
    """One evaluation as one plain line (for logs and pipes, where there is no progress bar)."""
    from ..core.metrics import metric_label  # noqa: PLC0415

    sps = "" if env_steps_per_s is None else f"; {env_steps_per_s:,.0f} env steps/s"
    parts = [f"{metric_label(k)} {row[k]:.4g}" for k in ("mean_reward", "efficiency", "mean_response_s")
             if k in row and row[k] is not None]
    return f"{algo} eval at {step:,} env steps{sps}: " + "; ".join(parts)


class EvalLines:
    """When the progress bar is off (stderr is not a terminal), one ``eval_line`` per periodic evaluation on stderr,
    with the env steps/s since the previous one; when the bar is on, nothing (the bar shows the same)."""

    def __init__(self, algo: str, enabled: bool, start_step: int = 0):
        self.algo, self.enabled = algo, enabled
        self._t, self._step = time.perf_counter(), start_step

    def __call__(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        import sys  # noqa: PLC0415

        now = time.perf_counter()
        sps = (step - self._step) / max(1e-9, now - self._t)
        self._t, self._step = now, step
        print(eval_line(self.algo, step, row, sps), file=sys.stderr, flush=True)


def best_logged_reward(path: Path) -> float:
    """Highest mean reward in an existing eval_log.csv (a resumed run keeps its best policy unless beaten)."""
    try:
        with path.open() as f:
            return max((float(r["mean_reward"]) for r in csv.DictReader(f)), default=-math.inf)
    except (OSError, ValueError, KeyError):
        return -math.inf


def tensorboard(path: Path):
    """A TensorBoard writer, or None where tensorboard is not installed (the CSV logs are always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return SummaryWriter(str(path))


def progress_bar(enabled: bool, *fields: str, unit: str = ""):
    """The trainers' Rich progress bar on stderr: description, bar, ``completed/total unit`` (when ``unit``), one
    column per live field (e.g. ``reward``), elapsed and remaining time. ``disable`` when not wanted."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: PLC0415

    columns = [TextColumn("[bold]{task.description}"), BarColumn()]
    if unit:
        columns.append(TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + unit))
    columns += [TextColumn(f"{f} {{task.fields[{f}]}}") for f in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)
