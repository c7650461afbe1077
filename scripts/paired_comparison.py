"""A learned policy against every hand-written scheduler on held-out seeds, paired by seed, with 95% CIs.

    python scripts/paired_comparison.py --policy eat [--checkpoint P] --nodes 8 --rates 0.1,0.5 --seeds 50

Per seed (core.seeds.HELD_OUT_SEED0 + i) and policy: efficiency (mean quality / mean response, model s), mean
response and mean quality of that episode. Prints, per rate, each policy's means and the learned policy's paired
difference to each hand-written one (mean and 95% CI, t distribution); a difference whose CI is above zero is a win
on efficiency. Also each patch count's p95 response (starvation check). One JSON object per line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from eatsched.algos import registry
from eatsched.core.config import EATConfig
from eatsched.core.seeds import HELD_OUT_SEED0
from eatsched.experiments.evaluate import ci95
from eatsched.sim.rollout import simulate


def per_seed(name: str, cfg: EATConfig, seeds: int, checkpoint=None) -> dict:
    pol = registry.make_policy(name, cfg, checkpoint=checkpoint, seed=HELD_OUT_SEED0)
    res = simulate(pol, cfg, seeds, HELD_OUT_SEED0)
    eff, resp, qual = [], [], []
    for rec in res.task_records:
        done = rec[rec["order"] >= 0]
        r = (done["finish"] - done["arrival"]).mean()
        q = done["quality"].mean()
        eff.append(q / r)
        resp.append(r)
        qual.append(q)
    rec = np.concatenate(res.task_records)
    rec = rec[rec["order"] >= 0]
    p95 = {int(k): float(np.percentile((rec["finish"] - rec["arrival"])[rec["patches"] == k], 95))
           for k in np.unique(rec["patches"])}
    return {"efficiency": np.array(eff), "response": np.array(resp), "quality": np.array(qual), "p95_by_k": p95,
            "paper_reward": res.summary()["mean_reward"]}


def ci(d: np.ndarray) -> tuple[float, float, float]:
    m, h = float(d.mean()), ci95(d)
    return m, m - h, m + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="eat")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rates", default="0.1,0.5")
    ap.add_argument("--seeds", type=int, default=50)
    a = ap.parse_args()
    for rate in (float(r) for r in a.rates.split(",")):
        cfg = EATConfig(nodes=a.nodes, rate=rate)
        runs = {a.policy: per_seed(a.policy, cfg, a.seeds, a.checkpoint)}
        for h in registry.names(learned=False):
            runs[h] = per_seed(h, cfg, a.seeds)
        for name, r in runs.items():
            print(json.dumps({"rate": rate, "policy": name, "efficiency": float(r["efficiency"].mean()),
                              "mean_response_s": float(r["response"].mean()),
                              "mean_quality": float(r["quality"].mean()),
                              "paper_reward": r["paper_reward"], "p95_response_by_patches": r["p95_by_k"]}))
        mine = runs[a.policy]
        for h in registry.names(learned=False):
            m, lo, hi = ci(mine["efficiency"] - runs[h]["efficiency"])
            rm, rlo, rhi = ci(mine["response"] - runs[h]["response"])
            print(json.dumps({"rate": rate, "vs": h, "efficiency_diff": m, "ci95": [lo, hi], "win": lo > 0,
                              "response_diff_s": rm, "response_ci95": [rlo, rhi]}))


if __name__ == "__main__":
    main()
