"""Schedulers: hand-written heuristics now; learned ones (EAT and baselines) plug into the same registry."""

from __future__ import annotations

from ..core.config import EATConfig
from ..core.policy import Policy, StateView
from .heuristics import HEURISTICS

LEARNED = ("eat", "eat-a", "eat-d", "eat-da", "lad-ts", "ppo", "genetic", "harmony")
"""Learned / search-based schedulers of the paper (SPEC section 3)."""


def policy_names() -> tuple[str, ...]:
    return tuple(HEURISTICS) + LEARNED


def make_policy(name: str, config: EATConfig, *, checkpoint: str | None = None, seed: int = 0) -> Policy:
    """A policy by name. Heuristics take no checkpoint; learned policies load one."""
    key = name.lower()
    if key in HEURISTICS:
        if checkpoint:
            raise ValueError(f"policy {name!r} is hand-written and takes no --checkpoint")
        cls = HEURISTICS[key]
        return cls(config, seed=seed) if key == "random" else cls(config)
    if key in LEARNED:
        try:
            from .learned import load_learned  # noqa: PLC0415 - torch is optional
        except ImportError as e:
            raise ValueError(
                f"policy {name!r} is not available in this build ({e}); hand-written policies: "
                f"{', '.join(HEURISTICS)}"
            ) from None
        return load_learned(key, config, checkpoint=checkpoint, seed=seed)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(policy_names())}")


__all__ = ["Policy", "StateView", "make_policy", "policy_names", "HEURISTICS", "LEARNED"]
