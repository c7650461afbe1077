"""Simulators: the Gymnasium env (``env``), its batched form (``vector``) and a rollout of any policy over seeded
episodes (``rollout.simulate``, what ``eat simulate``, evaluation and training's periodic evaluation run)."""

from .env import EATEnv

__all__ = ["EATEnv"]
