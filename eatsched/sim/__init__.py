"""Simulators: the Gymnasium env and its batched (vectorized) form."""

from .env import EATEnv

__all__ = ["EATEnv"]
