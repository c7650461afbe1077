"""Learned schedulers behind the ``Policy`` interface, and their checkpoints.

``load_learned(key, config, checkpoint=None, seed=0)`` is what ``algos.make_policy`` calls for every name in
``algos.LEARNED``: the SAC family (eat, eat-a, eat-d, eat-da, lad-ts) is loaded here; ``ppo`` and the search
baselines (``genetic``, ``harmony``) are delegated to ``algos.ppo`` and ``algos.search``.

A SAC-family checkpoint (``policy.pt``) is a dict: ``algo``, ``config`` (the full ``EATConfig.to_dict()``),
``args`` (``SACArgs``), ``policy`` (encoder + actor weights and the LAD-TS memory; no critics, no optimizers),
``step`` and ``label`` (e.g. how long it was trained). Decisions at batch 1 run on a NumPy copy of the network
(``fastpath``), which gives the same actions as the torch network for the same chain noise.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..core.config import EATConfig
from ..core.policy import Policy

SAC_FAMILY = ("eat", "eat-a", "eat-d", "eat-da", "lad-ts")
SHIPPED_RATES = {4: 0.05, 8: 0.10, 12: 0.15}
"""Arrival rate each shipped checkpoint was trained at (the middle of the paper's grid for its cluster size)."""


def shipped_path(algo: str, nodes: int, ext: str = "pt") -> Path:
    return Path(str(resources.files("eatsched") / "data" / "checkpoints" / f"{algo}-n{nodes}.{ext}"))


def load_learned(key: str, config: EATConfig, checkpoint: str | None = None, seed: int = 0) -> Policy:
    key = key.lower()
    if key == "ppo":
        from .ppo import load_ppo  # noqa: PLC0415 - branch `baselines`, optional

        return load_ppo(config, checkpoint, seed)
    if key in ("genetic", "harmony"):
        from .search import load_search  # noqa: PLC0415 - branch `baselines`, optional

        return load_search(key, config, checkpoint, seed)
    if key not in SAC_FAMILY:
        raise ValueError(f"unknown learned policy {key!r}")
    if checkpoint is None:
        path = shipped_path(key, config.nodes)
        if not path.exists():
            rate = SHIPPED_RATES.get(config.nodes, config.rate)
            raise FileNotFoundError(
                f"no shipped {key} checkpoint for {config.nodes} nodes ({path.name}); train one with "
                f"`eat train --algo {key} --nodes {config.nodes} --rate {rate} --out runs/{key}-n{config.nodes}` "
                f"and pass --checkpoint runs/{key}-n{config.nodes}/policy.pt")
        checkpoint = str(path)
    return SACPolicy.from_checkpoint(checkpoint, config, seed=seed, expect_algo=key)


def read_checkpoint(path: str | Path) -> dict:
    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file to the user
        raise ValueError(f"{path} is not a readable SAC-family checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or not {"algo", "config", "args", "policy"} <= set(ckpt):
        raise ValueError(f"{path} is not a SAC-family checkpoint (missing algo/config/args/policy)")
    return ckpt


def check_compatible(ckpt_cfg: EATConfig, config: EATConfig, path) -> None:
    """The networks' input and output sizes depend on the cluster size and the visible queue length."""
    for name in ("nodes", "queue_len"):
        have, want = getattr(ckpt_cfg, name), getattr(config, name)
        if have != want:
            raise ValueError(f"checkpoint {path} was trained with {name}={have}, but the requested config has "
                             f"{name}={want}; this architecture's input size depends on it. Train one with "
                             f"`eat train --{name.replace('_', '-')} {want} ...` or pick a matching checkpoint")


class SACPolicy(Policy):
    """A trained (or freshly initialized) SAC-family actor acting deterministically: the chain runs with noise from
    a generator seeded by ``reset(seed)``, the action is tanh(mean). LAD-TS memory evolves during an episode and is
    restored to the checkpoint's at every seeded reset, so runs are reproducible per seed."""

    def __init__(self, config: EATConfig, algo: str, args, policy_state: dict, seed: int = 0, label: str = ""):
        super().__init__(config)
        from .fastpath import NumpyDiffusionActor, NumpyEncoder, NumpyGaussianActor  # noqa: PLC0415

        self.name, self.args, self.label = algo, args, label
        self.policy_state = policy_state
        self.encoder = NumpyEncoder(args.encoder, _sub(policy_state["encoder"]), config.token_rows, args.heads)
        actor = _sub(policy_state["actor"])
        self.diffusion = args.actor == "diffusion"
        self.actor = NumpyDiffusionActor(actor, args.diffusion_steps) if self.diffusion else NumpyGaussianActor(actor)
        self.memory0 = policy_state["memory"].numpy().astype(np.float32)
        self.memory = self.memory0.copy()
        self.rng = np.random.default_rng(seed)
        self._noise_shape = (args.diffusion_steps + 1, config.action_dim)

    @classmethod
    def from_checkpoint(cls, path, config: EATConfig, seed: int = 0, expect_algo: str | None = None) -> SACPolicy:
        from .sac import SACArgs  # noqa: PLC0415

        ckpt = read_checkpoint(path)
        algo = ckpt["algo"]
        if expect_algo is not None and algo != expect_algo:
            raise ValueError(f"checkpoint {path} holds a {algo!r} policy, not {expect_algo!r}; "
                             f"use --policy {algo}")
        check_compatible(EATConfig.from_dict(ckpt["config"]), config, path)
        return cls(config, algo, SACArgs.from_dict(ckpt["args"]), ckpt["policy"], seed=seed,
                   label=ckpt.get("label", ""))

    @classmethod
    def untrained(cls, algo: str, config: EATConfig, seed: int = 0) -> SACPolicy:
        """Freshly initialized networks of the default architecture (for latency benchmarks)."""
        from .sac import SACAgent, args_for  # noqa: PLC0415

        args = args_for(algo)
        agent = SACAgent(args, config.queue_len, config.nodes, seed=seed)
        return cls(config, algo, args, agent.policy_state(), seed=seed, label="untrained")

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.memory = self.memory0.copy()

    def context_key(self, tok: np.ndarray) -> int:
        """Same key as ``SACAgent.context_key`` (LAD-TS)."""
        L, n = self.config.queue_len, self.config.nodes
        startable = int(round(float(tok[:L, 5].sum())))
        idle = int(round(float(tok[L:, 1].sum())))
        k = round(float(tok[0, 3]) * 8)
        k_class = min(4, int(np.log2(k)) + 1) if k > 0 else 0
        ready = int(tok[:L, 6].sum() > 0)
        return ((startable * (n + 1) + idle) * 5 + k_class) * 2 + ready

    def mean(self, observation: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Pre-tanh mean of the action distribution (LAD-TS: reads and writes the memory)."""
        tok = np.asarray(observation, np.float32).reshape(self.config.token_rows, -1)
        feats = self.encoder(tok)
        if not self.diffusion:
            return self.actor.mean(feats)
        if noise is None:
            noise = self.rng.standard_normal(self._noise_shape, dtype=np.float32)
        key = start = None
        if self.args.latent_memory:
            key = self.context_key(tok)
            start = self.memory[key]
        m = self.actor.mean(feats, noise, start, self.args.x0_clip)
        if key is not None:
            self.memory[key] = m
        return m

    def act(self, observation, info):
        return np.tanh(self.mean(observation)).astype(np.float32)


def _sub(state: dict) -> dict:
    return {k: v for k, v in state.items()}


def save_policy_checkpoint(path: Path, algo: str, config: EATConfig, args, policy_state: dict, step: int,
                           label: str = "") -> Path:
    import torch  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"algo": algo, "config": config.to_dict(), "args": args.to_dict(), "policy": policy_state,
                "step": int(step), "label": label}, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def shrink_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a policy checkpoint with its weights stored as float16 (half the size; loaded back as float32) for
    shipping inside the package."""
    import torch  # noqa: PLC0415

    ckpt = read_checkpoint(src)
    ckpt["policy"] = {part: ({k: v.half() if v.is_floating_point() else v for k, v in val.items()}
                             if isinstance(val, dict) else val.half())
                      for part, val in ckpt["policy"].items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


if __name__ == "__main__":  # python -m eatsched.algos.learned shrink SRC DST
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "shrink":
        raise SystemExit("usage: python -m eatsched.algos.learned shrink SRC.pt DST.pt")
    print(shrink_checkpoint(sys.argv[2], sys.argv[3]))
