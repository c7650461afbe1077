"""Backends a worker can run, by name: ``simulated`` (default, no GPU) and ``diffusers`` (real pipelines).

``make_backend(name, **options)`` imports the chosen backend lazily, so a simulated worker never loads
torch or diffusers."""

from __future__ import annotations

from ..backend import Backend

BACKENDS = ("simulated", "diffusers")


def make_backend(name: str, **options) -> Backend:
    """A backend by name. Options are passed to its constructor (``simulated``: ``profile``, ``time_scale``,
    ``speed``; ``diffusers``: e.g. ``model``, ``device``); ``None`` values are dropped."""
    opts = {k: v for k, v in options.items() if v is not None}
    key = name.lower()
    if key == "simulated":
        from .simulated import SimulatedBackend  # noqa: PLC0415

        return SimulatedBackend(**opts)
    if key == "diffusers":
        try:
            from .diffusers_backend import DiffusersBackend  # noqa: PLC0415
        except ImportError as e:
            raise ValueError(f"backend 'diffusers' is not available ({e}); install eatsched[gen]") from None
        return DiffusersBackend(**opts)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "make_backend"]
