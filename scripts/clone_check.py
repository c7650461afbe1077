"""Each option of the shipped EAT recipe, side by side, on the part it acts on: cloning the teacher.

    OMP_NUM_THREADS=1 python scripts/clone_check.py [--nodes 8] [--rate 0.08:0.6] [--updates 600] [--seeds 20] \
        [--out runs/clone-check]

For each variant, ``train_sac`` runs the recipe (``sac.TEACHER_RECIPE``, ``sac.RECIPE_SETTING``) with one option
switched back to the paper's behaviour, only as far as the end of the behaviour-cloning warm start: the same
training seed, so the same warm-up data (``patient`` plus noise) and the same initial networks; ``--updates``
cloning updates, no SAC update after them. Every cloned policy then plays the same validation workloads (seeds
1,000,000.., rates drawn from the range, the recipe's setting), as do the teacher and ``adaptive``. ``no_idle_wait``
is a rule of the deployed policy, so its variant is the recipe's own checkpoint with the rule off.

Printed (and written to OUT/clone_check.md): response reward per episode (w_q sum quality - w_r sum response; higher
is better), mean response (model s, lower is better), mean quality (higher is better), the fraction of tasks that
finished (higher is better) and the share of decisions where the clone launches when the teacher does and picks
the same slot, along the clone's own trajectories.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from eatsched.algos import registry
from eatsched.algos.sac import RECIPE_SETTING, TEACHER_RECIPE
from eatsched.algos.sac_policy import load_sac
from eatsched.algos.sac_train import train_sac
from eatsched.algos.training import VALIDATION_SEED0
from eatsched.core.config import EATConfig
from eatsched.core.metrics import summarize
from eatsched.sim.env import EATEnv

VARIANTS = {
    "recipe": {},
    "without warm_eta": {"warm_eta": False},
    "without the straight-through clip": {"x0_clip_grad": "zero"},
}


def agreement(policy, teacher, cfg: EATConfig, seeds: int) -> dict:
    """Play ``policy`` on the validation workloads; on each decision also ask ``teacher``. Returns the metrics of
    the episodes and the launch / slot agreement."""
    env = EATEnv(cfg)
    for p in (policy, teacher):
        if p.needs_state:
            p.attach(env.state_arrays)
    launch_same = slot_same = both_launch = n = 0
    rets, per = [], []
    for k in range(seeds):
        obs, info = env.reset(seed=VALIDATION_SEED0 + k)
        policy.reset(seed=VALIDATION_SEED0 + k)
        teacher.reset(seed=VALIDATION_SEED0 + k)
        done, ret = False, 0.0
        while not done:
            a, t = np.asarray(policy.act(obs, info)), np.asarray(teacher.act(obs, info))
            la, lt = a[0] > 0, t[0] > 0
            n += 1
            launch_same += la == lt
            if la and lt:
                both_launch += 1
                slot_same += int(np.argmax(a[2:])) == int(np.argmax(t[2:]))
            obs, r, te, tr, info = env.step(a)
            ret += r
            done = te or tr
        rets.append(ret)
        per.append(summarize(env.episode_tasks()))
    return {"response_reward": float(np.mean(rets)),
            "mean_response_s": float(np.mean([m["mean_response_s"] for m in per])),
            "mean_quality": float(np.mean([m["mean_quality"] for m in per])),
            "completed_fraction": float(np.mean([m["completed_fraction"] for m in per])),
            "launch_agreement": launch_same / n, "slot_agreement": slot_same / max(1, both_launch), "decisions": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rate", default="0.08:0.6")
    ap.add_argument("--updates", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/clone-check")
    a = ap.parse_args()
    lo, _, hi = a.rate.partition(":")
    cfg = EATConfig(nodes=a.nodes, rate=float(lo), rate_max=float(hi) if hi else None, **RECIPE_SETTING)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = registry.make_policy(TEACHER_RECIPE["warmup_policy"], cfg)
    rows: dict[str, dict] = {}
    for name, change in VARIANTS.items():
        run = out / name.replace(" ", "-")
        args = {**TEACHER_RECIPE, "bc_updates": a.updates, "eval_every": 10**9, "checkpoint_every": 10**9, **change}
        learning_starts = registry.get("eat").default_args().learning_starts
        path = run / "policy.pt"
        if not path.exists():
            train_sac("eat", cfg, run, steps=learning_starts + 1, seed=a.seed, progress=False, overrides=args)
        pol = load_sac("eat", cfg, path)
        rows[name] = agreement(pol, teacher, cfg, a.seeds)
        print(name, json.dumps(rows[name]), flush=True)
        if name == "recipe":
            pol.args = dataclasses.replace(pol.args, no_idle_wait=False)
            rows["without no_idle_wait (recipe's clone)"] = agreement(pol, teacher, cfg, a.seeds)
    for ref in (TEACHER_RECIPE["warmup_policy"], "adaptive"):
        rows[f"{ref} (hand-written)"] = agreement(registry.make_policy(ref, cfg), teacher, cfg, a.seeds)
    lines = [f"{a.nodes} nodes, rates {a.rate} per episode, {a.seeds} validation seeds ({VALIDATION_SEED0}..), "
             f"setting {RECIPE_SETTING}; clones: {a.updates} cloning updates on the same warm-up data, training seed "
             f"{a.seed}.", "",
             "| variant | response reward (higher better) | mean response s (lower better) | quality (higher better) "
             "| finished (higher better) | launches when teacher does | same slot |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['response_reward']:+.1f} | {r['mean_response_s']:.2f} | {r['mean_quality']:.3f} "
                     f"| {r['completed_fraction']:.3f} | {r['launch_agreement']:.1%} | {r['slot_agreement']:.1%} |")
    md = "\n".join(lines) + "\n"
    (out / "clone_check.md").write_text(md)
    (out / "clone_check.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
