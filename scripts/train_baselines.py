"""Train the shipped baseline checkpoints (4/8/12 nodes at rates 0.05/0.10/0.15, seed 0, default budgets), one
at a time, and copy them to eatsched/data/checkpoints/.  Usage: python scripts/train_baselines.py ppo,genetic,harmony
"""

import shutil
import sys
import time
from pathlib import Path

from eatsched.algos import registry
from eatsched.core.config import EATConfig

SETTINGS = [(4, 0.05), (8, 0.10), (12, 0.15)]


def main(algos: list[str]) -> None:
    dest = Path("eatsched/data/checkpoints")
    dest.mkdir(parents=True, exist_ok=True)
    for nodes, rate in SETTINGS:
        cfg = EATConfig(nodes=nodes, rate=rate)
        for algo in algos:
            out = Path(f"runs/shipped/{algo}-n{nodes}")
            t0 = time.time()
            path = registry.train(algo, cfg, out, seed=0, progress=False)
            shutil.copy(path, dest / f"{algo}-n{nodes}{path.suffix}")
            print(algo, nodes, rate, f"{time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["ppo", "genetic", "harmony"])
