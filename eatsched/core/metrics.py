"""Per-task log and per-episode metrics (SPEC section 2, "Metrics"), computed from the task records."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .state import DONE

TASK_COLUMNS = (
    "episode", "task_id", "arrival", "start", "finish", "patches", "steps", "servers", "reload",
    "init_s", "exec_s", "wait_s", "response_s", "quality",
)


EFFICIENCY_DEFINITION = "efficiency = mean quality / mean response in model seconds (higher is better)"
"""The one-line definition every table that shows efficiency prints under it."""

METRIC_INFO: dict[str, tuple[str, str, str]] = {
    # summary key: (label, unit, "lower" | "higher" is better)
    "tasks_completed": ("tasks completed", "count", "higher"),
    "completed_fraction": ("completed fraction", "of tasks", "higher"),
    "mean_response_s": ("mean response", "model s", "lower"),
    "p95_response_s": ("p95 response", "model s", "lower"),
    "mean_quality": ("mean quality", "CLIP score q(s)", "higher"),
    "reload_rate": ("reload rate", "reloads / launched task", "lower"),
    "efficiency": ("efficiency", "quality / model s", "higher"),
    "mean_decision_ms": ("mean decision time", "wall ms", "lower"),
    "mean_reward": ("mean reward", "per episode", "higher"),
    "reward": ("reward", "per episode", "higher"),
}
"""How a metric is shown to a person: label, unit and direction. The keys (the JSON field names) never change;
times in the simulator are model seconds (the time profile's clock), decision times are wall milliseconds."""


def metric_label(key: str) -> str:
    """``mean_response_s`` -> ``mean response (model s, lower is better)``; an unknown key is returned as is."""
    if key not in METRIC_INFO:
        return key
    label, unit, better = METRIC_INFO[key]
    return f"{label} ({unit}, {better} is better)"


def server_ids(mask: int) -> list[int]:
    return [j for j in range(63) if (int(mask) >> j) & 1]


def task_log(tasks_row: np.ndarray, n_tasks: int, episode: int = 0) -> list[dict]:
    """One dict per task of the episode. Unstarted tasks have NaN start/finish and empty servers."""
    out = []
    for i in range(n_tasks):
        t = tasks_row[i]
        started = int(t["order"]) >= 0
        wait = float(t["start"] - t["arrival"]) if started else float("nan")
        out.append({
            "episode": episode,
            "task_id": i,
            "arrival": float(t["arrival"]),
            "start": float(t["start"]) if started else float("nan"),
            "finish": float(t["finish"]) if started else float("nan"),
            "patches": int(t["patches"]),
            "steps": int(t["steps"]) if started else 0,
            "servers": server_ids(t["servers"]) if started else [],
            "reload": bool(t["reload"]) if started else False,
            "init_s": float(t["init"]) if started else float("nan"),
            "exec_s": float(t["exec"]) if started else float("nan"),
            "wait_s": wait,
            "response_s": float(t["finish"] - t["arrival"]) if started else float("nan"),
            "quality": float(t["quality"]) if started else float("nan"),
            "finished": int(t["state"]) == DONE,
            "model": int(t["model"]),
        })
    return out


def summarize(tasks: np.ndarray) -> dict:
    """Metrics over task records (one episode's rows, or several episodes' rows concatenated).

    Mean/p95 response of finished tasks, their mean quality, reload rate (reloads / launched tasks),
    efficiency (mean quality / mean response), completed fraction."""
    done = tasks["state"] == DONE
    launched = tasks["order"] >= 0
    resp = (tasks["finish"] - tasks["arrival"])[done]
    n_done = int(done.sum())
    n_launched = int(launched.sum())
    mean_resp = float(resp.mean()) if n_done else float("nan")
    mean_q = float(tasks["quality"][done].mean()) if n_done else float("nan")
    return {
        "tasks": len(tasks),
        "tasks_completed": n_done,
        "completed_fraction": n_done / len(tasks) if len(tasks) else float("nan"),
        "mean_response_s": mean_resp,
        "p95_response_s": _p95(resp) if n_done else float("nan"),
        "mean_quality": mean_q,
        "reload_rate": float(tasks["reload"][launched].mean()) if n_launched else float("nan"),
        "efficiency": mean_q / mean_resp if n_done and mean_resp > 0 else float("nan"),
    }


def _p95(x: np.ndarray) -> float:
    """95th percentile with linear interpolation (numpy's default), without np.percentile's overhead."""
    x = np.sort(x)
    pos = 0.95 * (len(x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(x) - 1)
    return float(x[lo] + (x[hi] - x[lo]) * (pos - lo))


def write_task_csv(path: Path, logs: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TASK_COLUMNS)
        for r in logs:
            w.writerow([
                r["episode"], r["task_id"], _num(r["arrival"]), _num(r["start"]), _num(r["finish"]),
                r["patches"], r["steps"], " ".join(str(j) for j in r["servers"]), int(r["reload"]),
                _num(r["init_s"]), _num(r["exec_s"]), _num(r["wait_s"]), _num(r["response_s"]), _num(r["quality"]),
            ])


def _num(x: float) -> str:
    return "" if x != x else repr(round(float(x), 9))
