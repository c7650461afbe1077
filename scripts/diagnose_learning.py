"""Why a learned scheduler scores below `adaptive`: evidence for docs/learning.md.

    python scripts/diagnose_learning.py [--nodes 8] [--rates 0.1,0.5] [--seeds 20] [--policy eat] [--checkpoint P]

On held-out seeds (core.seeds.HELD_OUT_SEED0..), for the learned policy and every hand-written one:
1. outcomes: mean / p95 response (model s) by patch count, quality, reload rate;
2. how the paper's reward is spread: per launch, the time term (capped at r_max) and the quality term, and how
   often the cap binds (a capped launch earns the same whatever its latency);
3. decisions on the same states: along adaptive's own trajectories, how often the learned policy agrees with it on
   launching now, on which task, and whether it starts a task cold when one could start warm (on a loaded group).
Prints one JSON object per (rate, policy) and per (rate, comparison).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from eatsched.algos import registry
from eatsched.core import kernel
from eatsched.core.config import EATConfig
from eatsched.core.seeds import HELD_OUT_SEED0
from eatsched.core.state import TASK_READY
from eatsched.sim.env import EATEnv
from eatsched.sim.rollout import simulate


def outcomes(name: str, cfg: EATConfig, seeds: int, checkpoint=None) -> dict:
    pol = registry.make_policy(name, cfg, checkpoint=checkpoint if registry.get(name).learned else None,
                               seed=HELD_OUT_SEED0)
    res = simulate(pol, cfg, seeds, HELD_OUT_SEED0)
    rec = np.concatenate(res.task_records)
    rec = rec[rec["order"] >= 0]
    resp = rec["finish"] - rec["arrival"]
    wait = rec["start"] - rec["arrival"]
    time_term = np.minimum(cfg.r_max, cfg.w_t / np.maximum(1e-9, wait + rec["init"] + rec["exec"]))
    by_k = {int(k): {"mean_response_s": float(resp[rec["patches"] == k].mean()),
                     "p95_response_s": float(np.percentile(resp[rec["patches"] == k], 95)),
                     "mean_wait_s": float(wait[rec["patches"] == k].mean())}
            for k in np.unique(rec["patches"])}
    s = res.summary()
    return {"policy": name, "rate": cfg.rate, **{k: s[k] for k in ("mean_reward", "mean_response_s", "mean_quality",
                                                                    "efficiency", "reload_rate")},
            "mean_init_s": float(rec["init"].mean()), "mean_exec_s": float(rec["exec"].mean()),
            "mean_steps": float(rec["steps"].mean()), "by_patches": by_k,
            "time_term_mean": float(time_term.mean()), "quality_term_mean": float(cfg.w_q * rec["quality"].mean()),
            "time_term_capped_share": float((time_term >= cfg.r_max - 1e-9).mean())}


def agreement(name: str, cfg: EATConfig, seeds: int, checkpoint=None) -> dict:
    """Along adaptive's trajectories: the learned policy's choice on each state where some task can start."""
    learned = registry.make_policy(name, cfg, checkpoint=checkpoint, seed=HELD_OUT_SEED0)
    ref = registry.make_policy("adaptive", cfg)
    n = same_launch = same_task = cold_when_warm = ref_cold_when_warm = waits = 0
    steps = []
    for e in range(seeds):
        env = EATEnv(cfg)
        obs, info = env.reset(seed=HELD_OUT_SEED0 + e)
        learned.reset(seed=HELD_OUT_SEED0 + e)
        done = False
        while not done:
            mask = info["action_mask"]
            a_ref = ref.act(obs, info)
            if mask.any():
                a = learned.act(obs, info)
                tok = obs.reshape(cfg.token_rows, -1)[: cfg.queue_len]
                warm = mask & (tok[:, TASK_READY] > 0.5)
                n += 1
                launch = a[0] >= 0
                waits += not launch
                same_launch += launch == (a_ref[0] >= 0)
                if launch:
                    slot = int(np.argmax(np.where(mask, a[2:], -np.inf)))
                    ref_slot = int(np.argmax(np.where(mask, a_ref[2:], -np.inf)))
                    same_task += slot == ref_slot
                    cold_when_warm += bool(warm.any() and not warm[slot])
                    steps.append(kernel.decode_steps(float(a[1]), cfg.s_min, cfg.s_max))
                ref_cold_when_warm += bool(warm.any() and not warm[int(np.argmax(np.where(mask, a_ref[2:], -np.inf)))])
            obs, _, te, tr, info = env.step(a_ref)
            done = te or tr
    launched = max(1, n - waits)
    return {"comparison": f"{name} on adaptive's states", "rate": cfg.rate, "states": n,
            "learned_waits_share": waits / max(1, n), "same_launch_decision_share": same_launch / max(1, n),
            "same_task_share_when_both_launch": same_task / launched,
            "learned_cold_when_warm_share": cold_when_warm / launched,
            "adaptive_cold_when_warm_share": ref_cold_when_warm / max(1, n),
            "learned_steps_median": float(np.median(steps)) if steps else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rates", default="0.1,0.5")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--policy", default="eat")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--set", dest="settings", action="append", default=[], help="EATConfig KEY=VALUE")
    a = ap.parse_args()
    from eatsched.core.config import parse_field_values

    extra = parse_field_values(EATConfig, a.settings, "--set", "configuration field")
    for rate in (float(r) for r in a.rates.split(",")):
        cfg = EATConfig(nodes=a.nodes, rate=rate, **extra)
        for name in (a.policy, *registry.names(learned=False)):
            print(json.dumps(outcomes(name, cfg, a.seeds, a.checkpoint)), flush=True)
        print(json.dumps(agreement(a.policy, cfg, a.seeds, a.checkpoint)), flush=True)


if __name__ == "__main__":
    main()
