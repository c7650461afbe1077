"""Train the shipped baseline checkpoints (4/8/12 nodes at rates 0.05/0.10/0.15), one at a time."""
import shutil, sys, time
from pathlib import Path
from eatsched.core.config import EATConfig
from eatsched.algos.search import train_search
from eatsched.algos.ppo import train_ppo
dest = Path("eatsched/data/checkpoints"); dest.mkdir(parents=True, exist_ok=True)
algos = sys.argv[1].split(",")
for nodes, rate in [(4, 0.05), (8, 0.10), (12, 0.15)]:
    cfg = EATConfig(nodes=nodes, rate=rate)
    for algo in algos:
        out = Path(f"runs/shipped/{algo}-n{nodes}")
        t0 = time.time()
        if algo == "ppo":
            p = train_ppo(cfg, out, seed=0, progress=False)
        else:
            p = train_search(algo, cfg, out, seed=0, progress=False)
        shutil.copy(p, dest / f"{algo}-n{nodes}{p.suffix}")
        print(algo, nodes, rate, f"{time.time()-t0:.1f}s", flush=True)
