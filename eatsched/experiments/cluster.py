"""Ray, optional (``pip install -e ".[cluster]"``): the one place that imports it and connects to a cluster.

Who calls it: ``eat evaluate --ray / --ray-address`` (``evaluate._ray_map``: one Ray task per grid cell) and
``eat sweep`` (``sweep.run_sweep``: one Ray Tune trial per training run).
"""

from __future__ import annotations

import logging

INSTALL_HINT = 'pip install -e ".[cluster]"'


def require_ray(option: str = "--ray"):
    """The ``ray`` module, or a one-line ``ImportError`` saying how to install it."""
    try:
        import ray  # noqa: PLC0415 - optional
    except ImportError:
        raise ImportError(f"{option} needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """Ray, initialised once per process: ``address`` None or ``"local"`` starts a local instance with ``num_cpus``
    CPUs (no dashboard); ``"auto"`` or ``"ray://HOST:PORT"`` joins a running cluster. A process that already
    called ``ray.init`` (a test fixture, a notebook) keeps its instance."""
    ray = require_ray("--ray-address" if address not in (None, "local") else "--ray")
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    return ray
