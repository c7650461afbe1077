"""The ablation across training seeds: EAT and its four ablations, each trained with the shipped recipe for the same
budget from several training seeds, then evaluated paired by workload seed; the answer to "does attention help?
does diffusion help?" with a 95% CI across training seeds.

    OMP_NUM_THREADS=1 python scripts/ablation_seeds.py train --algos eat,eat-a,eat-d,eat-da,lad-ts --seeds 1,2,3 \
        [--nodes 8] [--rate 0.08:0.6] [--steps 5100] [--out runs/ablation-seeds] [--part 0/2]
    OMP_NUM_THREADS=1 python scripts/ablation_seeds.py report [--cells 8:0.1,8:0.5] [--eval-seeds 20] \
        [--out runs/ablation-seeds]

``train`` runs ``eat train`` (the recipe: ``sac.TEACHER_RECIPE`` and ``sac.RECIPE_SETTING``, over the rate range)
for every (algorithm, training seed) into OUT/<algo>-s<seed>/ and skips runs whose ``best_policy.pt`` exists;
``--part i/n`` takes every n-th run from the i-th (two processes on two cores). The default budget, 5,100 env steps,
is what the shipped checkpoints were picked at: the warm-up and the cloning, then the first evaluation.
``report`` plays each run's ``best_policy.pt`` on held-out seeds (2,000,000..) in the SPEC setting in every cell,
with ``adaptive`` and ``patient`` on the same seeds, and writes OUT/ablation.md: per algorithm, the mean over
training seeds of its efficiency (mean quality / mean response, higher is better) and mean response (model s, lower
is better), with a t-based 95% CI across training seeds, and each ablation's paired difference to EAT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from eatsched.algos import registry
from eatsched.algos.sac import RECIPE_SETTING, TEACHER_RECIPE
from eatsched.core.config import EATConfig
from eatsched.core.seeds import HELD_OUT_SEED0
from eatsched.experiments.evaluate import ci95
from eatsched.sim.rollout import simulate


def train(a) -> None:
    runs = [(algo, int(s)) for algo in a.algos.split(",") for s in a.seeds.split(",")]
    i, n = (int(x) for x in a.part.split("/"))
    for algo, seed in runs[i::n]:
        out = Path(a.out) / f"{algo}-s{seed}"
        if (out / "best_policy.pt").exists():
            print(f"{out}: done", flush=True)
            continue
        cmd = [str(Path(sys.executable).parent / "eat"), "train", "--algo", algo, "--nodes", str(a.nodes), "--rate",
               a.rate, "--seed", str(seed), "--steps", str(a.steps), "--out", str(out),
               "--mode", RECIPE_SETTING["mode"], "--set", f"reward={RECIPE_SETTING['reward']}"]
        for k, v in TEACHER_RECIPE.items():
            cmd += ["--warmup-policy", v] if k == "warmup_policy" else ["--sac", f"{k}={v}"]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def per_seed(policy, cfg: EATConfig, seeds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    per = simulate(policy, cfg, seeds, HELD_OUT_SEED0).episode_summaries()
    return tuple(np.array([m[k] for m in per]) for k in ("efficiency", "mean_response_s", "mean_quality"))


def ci(x: np.ndarray) -> str:
    m, h = float(np.mean(x)), ci95(x)
    return f"{m:.5g}" if h != h else f"{m:.5g} [{m - h:.5g}, {m + h:.5g}]"


def report(a) -> None:
    out = Path(a.out)
    runs = sorted(p for p in out.iterdir() if (p / "best_policy.pt").exists())
    algos = list(dict.fromkeys(p.name.rsplit("-s", 1)[0] for p in runs))
    lines = [f"Held-out seeds {HELD_OUT_SEED0}.. ({a.eval_seeds} per cell), SPEC setting. Per algorithm: mean over "
             "training seeds [95% CI across training seeds] of the per-run means; efficiency = mean quality / mean "
             "response (higher is better), response in model s (lower is better). `vs eat`: the algorithm's "
             "efficiency minus EAT's, paired by training seed, x 1000.", ""]
    data: dict = {}
    for cell in a.cells.split(","):
        nodes, rate = cell.split(":")
        cfg = EATConfig(nodes=int(nodes), rate=float(rate))
        ref = {h: per_seed(registry.make_policy(h, cfg), cfg, a.eval_seeds) for h in ("adaptive", "patient")}
        lines += [f"#### {nodes} nodes, rate {rate}", "",
                  "| algorithm | training seeds | efficiency | mean response s | quality | vs eat (x1000) |",
                  "|---|---|---|---|---|---|"]
        by = {}
        for algo in algos:
            rows = []
            for p in runs:
                if p.name.rsplit("-s", 1)[0] != algo:
                    continue
                pol = registry.make_policy(algo, cfg, checkpoint=str(p / "best_policy.pt"), seed=HELD_OUT_SEED0)
                e, r, q = per_seed(pol, cfg, a.eval_seeds)
                rows.append((int(p.name.rsplit("-s", 1)[1]), e.mean(), r.mean(), q.mean()))
            by[algo] = {s: (e, r, q) for s, e, r, q in rows}
        for algo, rs in by.items():
            e, r, q = (np.array([v[i] for v in rs.values()]) for i in range(3))
            common = sorted(set(rs) & set(by.get("eat", {})))
            vs = ci(1000 * np.array([rs[s][0] - by["eat"][s][0] for s in common])) if algo != "eat" and common \
                else ""
            lines.append(f"| {algo} | {len(rs)} | {ci(e)} | {ci(r)} | {ci(q)} | {vs} |")
        for h, (e, r, q) in ref.items():
            lines.append(f"| {h} (hand-written) | | {e.mean():.5g} | {r.mean():.5g} | {q.mean():.5g} | |")
        lines.append("")
        data[cell] = {algo: {str(s): list(v) for s, v in rs.items()} for algo, rs in by.items()}
    md = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(md)
    (out / "ablation.json").write_text(json.dumps(data, indent=1))
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--algos", default="eat,eat-a,eat-d,eat-da,lad-ts")
    t.add_argument("--seeds", default="1,2,3")
    t.add_argument("--nodes", type=int, default=8)
    t.add_argument("--rate", default="0.08:0.6")
    t.add_argument("--steps", type=int, default=5100)
    t.add_argument("--part", default="0/1")
    t.add_argument("--out", default="runs/ablation-seeds")
    r = sub.add_parser("report")
    r.add_argument("--cells", default="8:0.1,8:0.5")
    r.add_argument("--eval-seeds", type=int, default=20)
    r.add_argument("--out", default="runs/ablation-seeds")
    a = ap.parse_args()
    train(a) if a.cmd == "train" else report(a)


if __name__ == "__main__":
    main()
