"""What the baseline trainers (PPO, Genetic, Harmony) share: budgets, the contract's CSV logs, held-out
evaluation, and finding / checking checkpoints.

The log columns and the checkpoint rules are cross-branch contracts (``eat evaluate`` reads the logs,
``algos.learned`` loads the checkpoints); keep them exactly.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import EATConfig

TRAIN_LOG_COLUMNS = ("step", "episodes", "episode_reward", "episode_length", "loss_actor", "loss_critic", "alpha",
                     "wall_s")
"""``out/train_log.csv``: one row per log interval; an empty cell where a column does not apply."""
EVAL_LOG_COLUMNS = ("step", "mean_reward", "mean_quality", "mean_response_s", "efficiency")
"""``out/eval_log.csv``: periodic evaluation on held-out workload seeds."""
EVAL_SEED = 10_000
"""First held-out workload seed of the periodic evaluation (training never uses seeds from here on)."""
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
"""Where shipped checkpoints live: ``{algo}-n{nodes}.{ext}``."""


class CsvLog:
    """Append-only CSV with a fixed header; flushed after every row so a killed run keeps its log."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.columns = columns
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
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


def evaluate(policy, config: EATConfig, episodes: int, seed: int = EVAL_SEED) -> dict:
    """Mean reward and the paper's metrics of ``policy`` on workload seeds ``seed .. seed + episodes - 1``."""
    from ..sim.rollout import simulate  # noqa: PLC0415

    s = simulate(policy, config, episodes, seed).summary()
    return {"mean_reward": s["mean_reward"], "mean_quality": s["mean_quality"],
            "mean_response_s": s["mean_response_s"], "efficiency": s["efficiency"]}


def resolve_checkpoint(algo: str, config: EATConfig, checkpoint: str | Path | None, ext: str) -> Path:
    """The checkpoint to load: the given path, else the shipped ``{algo}-n{nodes}.{ext}``."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            path = path / f"policy.{ext}"
        if not path.is_file():
            raise FileNotFoundError(f"{algo} checkpoint {str(path)!r} does not exist")
        return path
    path = CHECKPOINT_DIR / f"{algo}-n{config.nodes}.{ext}"
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped {algo} checkpoint for {config.nodes} nodes ({path.name}); train one with "
            f"`eat train --algo {algo} --nodes {config.nodes} --rate {config.rate} --out runs/{algo}-n{config.nodes}` "
            f"and pass --checkpoint runs/{algo}-n{config.nodes}/policy.{ext}")
    return path


def check_compatible(algo: str, saved: dict, config: EATConfig, path: Path, saved_algo: str | None = None) -> None:
    """A checkpoint's network / sequence sizes depend on nodes and queue length: refuse a mismatch clearly."""
    if saved_algo is not None and saved_algo != algo:
        raise ValueError(f"{path} holds a {saved_algo!r} policy, not {algo!r}")
    for key in ("nodes", "queue_len"):
        if saved.get(key) != getattr(config, key):
            raise ValueError(
                f"{path} was trained with {key}={saved.get(key)}, but the requested cluster has "
                f"{key}={getattr(config, key)}; a {algo} policy only runs on the size it was trained for "
                f"(train one with `eat train --algo {algo} --nodes {config.nodes} --rate {config.rate} --out DIR`)")
