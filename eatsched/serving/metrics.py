"""The host's counters and histograms, and their Prometheus text (``GET /metrics``).

The engine and the executor count into one ``Metrics``; gauges (queue length, tasks by state, workers up)
are read at the moment of the scrape from their owners and passed to ``prometheus_text``.
"""

from __future__ import annotations

import collections

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
"""Histogram buckets (wall seconds) of the task response time in /metrics."""


class Metrics:
    """Counters since the host started. Written on the event loop only, like everything on the host."""

    def __init__(self) -> None:
        self.decision_ms: collections.deque = collections.deque(maxlen=10000)  # host time per scheduling pass
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.finished_count = 0
        self.reload_count = 0
        self.launch_count = 0
        self.requeue_count = 0
        self.worker_failures = 0
        self.deadlines_missed = 0
        self.results_rejected = 0

    # --- counting (engine and executor) ---------------------------------------------------------------
    def decision(self, ms: float) -> None:
        self.decision_ms.append(ms)

    def launch(self, reuse: bool) -> None:
        self.launch_count += 1
        self.reload_count += 0 if reuse else 1

    def finished(self, response_s: float) -> None:
        self.finished_count += 1
        self.latency_sum += response_s
        b = next((i for i, edge in enumerate(LATENCY_BUCKETS) if response_s <= edge), len(LATENCY_BUCKETS))
        self.latency_counts[b] += 1

    def requeue(self) -> None:
        self.requeue_count += 1

    def worker_failed(self) -> None:
        self.worker_failures += 1

    def deadline_missed(self) -> None:
        self.deadlines_missed += 1

    def result_rejected(self) -> None:
        self.results_rejected += 1

    # --- the scrape -----------------------------------------------------------------------------------
    def prometheus_text(self, *, queue_length: int, task_counts: dict[str, int], workers_up: int,
                        rate_clients: int = 0) -> str:
        lines = [
            "# HELP eat_queue_length Tasks waiting to be scheduled.", "# TYPE eat_queue_length gauge",
            f"eat_queue_length {queue_length}",
            "# HELP eat_tasks Tasks by state.", "# TYPE eat_tasks gauge",
            *[f'eat_tasks{{state="{k}"}} {v}' for k, v in task_counts.items()],
            "# HELP eat_workers_up Workers registered and alive.", "# TYPE eat_workers_up gauge",
            f"eat_workers_up {workers_up}",
            "# HELP eat_launches_total Task launches.", "# TYPE eat_launches_total counter",
            f"eat_launches_total {self.launch_count}",
            "# HELP eat_reloads_total Launches that needed a cold start.", "# TYPE eat_reloads_total counter",
            f"eat_reloads_total {self.reload_count}",
            "# HELP eat_requeues_total Attempts re-queued after a failure.", "# TYPE eat_requeues_total counter",
            f"eat_requeues_total {self.requeue_count}",
            "# HELP eat_worker_failures_total Workers marked down.", "# TYPE eat_worker_failures_total counter",
            f"eat_worker_failures_total {self.worker_failures}",
            "# HELP eat_deadlines_missed_total Attempts abandoned at their deadline.",
            "# TYPE eat_deadlines_missed_total counter", f"eat_deadlines_missed_total {self.deadlines_missed}",
            "# HELP eat_results_rejected_total Worker results refused (invalid, forged, duplicate or late).",
            "# TYPE eat_results_rejected_total counter", f"eat_results_rejected_total {self.results_rejected}",
            "# HELP eat_rate_limit_clients Clients the submission rate limiter remembers.",
            "# TYPE eat_rate_limit_clients gauge", f"eat_rate_limit_clients {rate_clients}",
            "# HELP eat_response_seconds Task response time (submit to finish).",
            "# TYPE eat_response_seconds histogram",
        ]
        cum = 0
        for edge, c in zip(LATENCY_BUCKETS, self.latency_counts, strict=False):
            cum += c
            lines.append(f'eat_response_seconds_bucket{{le="{edge}"}} {cum}')
        lines.append(f'eat_response_seconds_bucket{{le="+Inf"}} {self.finished_count}')
        lines.append(f"eat_response_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"eat_response_seconds_count {self.finished_count}")
        d = sorted(self.decision_ms)
        if d:
            lines += ["# HELP eat_decision_ms Host time per scheduling pass (ms).", "# TYPE eat_decision_ms summary",
                      f'eat_decision_ms{{quantile="0.5"}} {d[len(d) // 2]:.4f}',
                      f'eat_decision_ms{{quantile="0.99"}} {d[min(len(d) - 1, int(len(d) * 0.99))]:.4f}',
                      f"eat_decision_ms_count {len(d)}"]
        return "\n".join(lines) + "\n"
