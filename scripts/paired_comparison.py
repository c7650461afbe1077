"""A learned policy against every hand-written scheduler on held-out seeds, paired by seed, with 95% CIs.

    python scripts/paired_comparison.py --policy eat [--checkpoint 'runs/eat-n{nodes}/best_policy.pt'] \
        [--cells 4:0.05,4:0.25,8:0.1,8:0.5,12:0.15,12:0.75] [--seeds 50] [--out runs/paired]

Each cell (nodes:rate) runs every policy on the same held-out workloads (core.seeds.HELD_OUT_SEED0 + i) in the
default setting (SPEC, tick mode, the paper's reward). Per seed and policy: efficiency (that episode's mean quality /
mean response, model s; the paper's Fig. 8), mean response, mean quality. Printed per cell: each policy's means, the
paper's reward, each patch count's p95 response, and the learned policy's paired efficiency difference to each
hand-written scheduler (mean and 95% CI, t distribution; a CI above zero is a win). Then the checks of the learning
issue: wins over random, fifo, greedy and adaptive; not dominated on (mean response, mean quality) by any
hand-written scheduler; no patch count's p95 response above 1.25x the best hand-written scheduler's; and, at the
heavy rates, a mean response at least 15% below adaptive's at equal or higher quality. ``--out`` writes
``paired.json`` and ``paired.md`` (the tables) there. ``--checkpoint`` may contain ``{nodes}``; without it the
shipped checkpoint of each cluster size is used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eatsched.algos import registry
from eatsched.core.config import EATConfig
from eatsched.core.seeds import HELD_OUT_SEED0
from eatsched.core.state import DONE
from eatsched.experiments.evaluate import ci95
from eatsched.sim.rollout import simulate

MUST_BEAT = ("random", "fifo", "greedy", "adaptive")
HEAVY = {4: 0.25, 8: 0.5, 12: 0.75}
STARVATION_FACTOR = 1.25
HEAVY_RESPONSE_CUT = 0.15


def per_seed(name: str, cfg: EATConfig, seeds: int, checkpoint=None) -> dict:
    pol = registry.make_policy(name, cfg, checkpoint=checkpoint, seed=HELD_OUT_SEED0)
    res = simulate(pol, cfg, seeds, HELD_OUT_SEED0)
    per = res.episode_summaries()  # the one definition (core.metrics): finished tasks only
    eff, resp, qual = ([m[k] for m in per] for k in ("efficiency", "mean_response_s", "mean_quality"))
    rec = np.concatenate(res.task_records)
    completed = float(np.mean([m["completed_fraction"] for m in per]))
    rec = rec[rec["state"] == DONE]
    p95 = {int(k): float(np.percentile((rec["finish"] - rec["arrival"])[rec["patches"] == k], 95))
           for k in np.unique(rec["patches"])}
    return {"efficiency": np.array(eff), "response": np.array(resp), "quality": np.array(qual), "p95_by_k": p95,
            "paper_reward": res.summary()["mean_reward"], "reload_rate": float(rec["reload"].mean()),
            "completed_fraction": completed}


def ci(d: np.ndarray) -> tuple[float, float, float]:
    m, h = float(d.mean()), ci95(d)
    return m, m - h, m + h


def cell_report(policy: str, nodes: int, rate: float, seeds: int, checkpoint) -> dict:
    cfg = EATConfig(nodes=nodes, rate=rate)
    hand = registry.names(learned=False)
    runs = {policy: per_seed(policy, cfg, seeds, checkpoint)}
    for h in hand:
        runs[h] = per_seed(h, cfg, seeds)
    rows = [{"policy": n, "efficiency": float(r["efficiency"].mean()), "mean_response_s": float(r["response"].mean()),
             "mean_quality": float(r["quality"].mean()), "paper_reward": r["paper_reward"],
             "reload_rate": r["reload_rate"], "completed_fraction": r["completed_fraction"],
             "p95_response_by_patches": r["p95_by_k"]} for n, r in runs.items()]
    mine = runs[policy]
    diffs = {}
    for h in hand:
        m, lo, hi = ci(mine["efficiency"] - runs[h]["efficiency"])
        rm, rlo, rhi = ci(mine["response"] - runs[h]["response"])
        diffs[h] = {"efficiency_diff": m, "ci95": [lo, hi], "win": lo > 0, "response_diff_s": rm,
                    "response_ci95": [rlo, rhi]}
    r0, q0 = float(mine["response"].mean()), float(mine["quality"].mean())
    dominated_by = [h for h in hand if runs[h]["response"].mean() <= r0 and runs[h]["quality"].mean() >= q0
                    and (runs[h]["response"].mean() < r0 or runs[h]["quality"].mean() > q0)]
    starved = {}
    for k, p in mine["p95_by_k"].items():
        best = min(runs[h]["p95_by_k"].get(k, np.inf) for h in hand)
        if p > STARVATION_FACTOR * best:
            starved[k] = {"p95_s": p, "best_hand_written_s": best}
    checks = {"wins": {h: diffs[h]["win"] for h in MUST_BEAT}, "dominated_by": dominated_by, "starved": starved}
    if HEAVY.get(nodes) == rate:
        ra, qa = float(runs["adaptive"]["response"].mean()), float(runs["adaptive"]["quality"].mean())
        checks["heavy"] = {"response_cut_vs_adaptive": 1.0 - r0 / ra, "quality_vs_adaptive": q0 - qa,
                           "met": (1.0 - r0 / ra) >= HEAVY_RESPONSE_CUT and q0 >= qa - 1e-12}
    return {"nodes": nodes, "rate": rate, "seeds": seeds, "rows": rows, "vs": diffs, "checks": checks}


def markdown(policy: str, reports: list[dict]) -> str:
    out = [f"Held-out seeds {HELD_OUT_SEED0}.. ({reports[0]['seeds']} per cell), SPEC setting, paired by seed. "
           "Efficiency = mean quality / mean response per episode (higher is better); response in model s (lower is "
           "better); quality higher is better; paper reward per episode (higher is better); completed: the fraction "
           "of each episode's tasks that finished (response and quality are over those; higher is better).", "",
           "| cell | policy | efficiency | mean response s | quality | paper reward | reload rate | completed "
           "| p95 s, k = 1 / 2 / 4 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        for row in rep["rows"]:
            p95 = " / ".join(f"{row['p95_response_by_patches'].get(k, float('nan')):.1f}" for k in (1, 2, 4))
            name = f"**{row['policy']}**" if row["policy"] == policy else row["policy"]
            out.append(f"| {rep['nodes']} x {rep['rate']:g} | {name} | {row['efficiency']:.5f} | "
                       f"{row['mean_response_s']:.2f} | {row['mean_quality']:.3f} | {row['paper_reward']:.1f} | "
                       f"{row['reload_rate']:.2f} | {row['completed_fraction']:.3f} | {p95} |")
    hand = list(reports[0]["vs"])
    out += ["", f"{policy} minus each hand-written scheduler, efficiency x 1000 (paired mean [95% CI]; **bold**: CI "
            "above zero, a win):", "", "| cell | " + " | ".join(hand) + " | dominated by | starved k | heavy: response "
            "cut vs adaptive, quality diff |", "|---|" + "---|" * (len(hand) + 3)]
    for rep in reports:
        cells = []
        for h in hand:
            d = rep["vs"][h]
            s = f"{1000 * d['efficiency_diff']:+.2f} [{1000 * d['ci95'][0]:+.2f}, {1000 * d['ci95'][1]:+.2f}]"
            cells.append(f"**{s}**" if d["win"] else s)
        c = rep["checks"]
        heavy = c.get("heavy")
        hv = (f"{100 * heavy['response_cut_vs_adaptive']:.1f}%, {heavy['quality_vs_adaptive']:+.3f} "
              f"({'met' if heavy['met'] else 'not met'})") if heavy else "-"
        out.append(f"| {rep['nodes']} x {rep['rate']:g} | " + " | ".join(cells) +
                   f" | {', '.join(c['dominated_by']) or 'none'} | {', '.join(map(str, c['starved'])) or 'none'} | "
                   f"{hv} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="eat")
    ap.add_argument("--checkpoint", default=None, help="checkpoint path; {nodes} is replaced by the cell's size")
    ap.add_argument("--cells", default="4:0.05,4:0.25,8:0.1,8:0.5,12:0.15,12:0.75")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    reports = []
    for cell in a.cells.split(","):
        nodes, rate = cell.split(":")
        ckpt = a.checkpoint.format(nodes=nodes) if a.checkpoint else None
        rep = cell_report(a.policy, int(nodes), float(rate), a.seeds, ckpt)
        reports.append(rep)
        print(json.dumps({k: rep[k] for k in ("nodes", "rate", "checks")}), flush=True)
    md = markdown(a.policy, reports)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "paired.json").write_text(json.dumps(reports, indent=1))
        (out / "paired.md").write_text(md)


if __name__ == "__main__":
    main()
