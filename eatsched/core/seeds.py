"""Workload seed ranges, in one place so that no policy is ever scored on a workload it trained or was selected on.

Episode ``e`` of a run starting at seed ``s`` draws its workload from seed ``s + e`` (``EATEnv.reset(seed=s + e)``).
The ranges below are far enough apart that no run of a sensible length reaches the next one.
"""

SIMULATE_SEED0 = 0
"""``eat simulate`` and the rollout's default first seed; a trainer's ``--seed`` also seeds its own env stream."""
SEARCH_TRAIN_SEED0 = 1_000
"""Genetic and Harmony search: the fixed training workloads their fitness averages over."""
VALIDATION_SEED0 = 1_000_000
"""Periodic evaluation during training (``eval_log.csv``; the choice of ``best_policy.pt``), every algorithm."""
HELD_OUT_SEED0 = 2_000_000
"""Held-out evaluation: ``eat evaluate``, ``eat optimal``'s gap study, the tables and the closing numbers."""
