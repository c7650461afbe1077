"""Schedulers behind one interface (``core.policy.Policy``): the hand-written heuristics, the SAC family (EAT and its
ablations, LAD-TS), PPO and the searches. ``registry`` lists them all and makes, trains and finds each.

Modules: ``registry`` (the table), ``heuristics``; the SAC family's ``nets`` (the networks, plain torch), ``sac``
(hyperparameters, replay, the agent and its update), ``sac_train`` (its training loop), ``sac_policy`` (checkpoints
and the deployed policy), ``fastpath`` (a NumPy copy of a trained network for single decisions); ``ppo``,
``search`` (Genetic, Harmony); ``training`` (budgets, logs and periodic evaluation every trainer shares).
"""

from ..core.policy import Policy, StateView
from .registry import make_policy, names

__all__ = ["Policy", "StateView", "make_policy", "names"]
