"""A trained SAC-family policy behind the ``Policy`` interface, and its checkpoint file.

A checkpoint (``policy.pt``) is a dict: ``algo``, ``config`` (the full ``EATConfig.to_dict()``), ``args``
(``SACArgs``), ``policy`` (encoder + actor state dicts and the LAD-TS memory; no critics, no optimizers), ``step``
and ``label`` (e.g. how long it was trained). Loading builds the networks of ``nets`` from ``args``, loads the
weights into them (strictly: a checkpoint of other sizes is refused), and builds the single-decision path
(``fastpath``) from those modules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.config import EATConfig
from ..core.policy import Policy
from . import registry
from .action_rules import launch_when_idle

CHECKPOINT_KEYS = {"algo", "config", "args", "policy"}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, read with ``weights_only=True`` (no code runs); a file that is not a checkpoint of this
    project is a one-line ``ValueError``."""
    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling problem is a bad file to the user
        ckpt = None
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt):
        raise ValueError(f"{path} is not an eatsched SAC-family checkpoint")
    return ckpt


def load_sac(algo: str, config: EATConfig, path: Path, seed: int = 0) -> SACPolicy:
    """``registry.make_policy``'s loader for the SAC family."""
    return SACPolicy.from_checkpoint(path, config, seed=seed, expect_algo=algo)


class SACPolicy(Policy):
    """A trained (or freshly initialized) SAC-family actor acting deterministically: the chain runs with noise from
    a generator seeded by ``reset(seed)``, the action is tanh(mean). LAD-TS memory evolves during an episode and is
    restored to the checkpoint's at every seeded reset, so runs are reproducible per seed."""

    def __init__(self, config: EATConfig, algo: str, args, policy_state: dict, seed: int = 0, label: str = ""):
        super().__init__(config, seed)
        import torch  # noqa: PLC0415

        from .fastpath import compile_actor, compile_encoder  # noqa: PLC0415
        from .sac import build_policy_nets, context_key  # noqa: PLC0415

        self.name, self.args, self.label = algo, args, label
        self._context_key = context_key
        self.policy_state = policy_state
        encoder, actor = build_policy_nets(args, config.queue_len, config.nodes)
        try:
            encoder.load_state_dict({k: v.float() for k, v in policy_state["encoder"].items()})
            actor.load_state_dict({k: v.float() for k, v in policy_state["actor"].items()})
        except RuntimeError as e:
            raise ValueError(f"the {algo} weights do not fit the networks their own args describe ({e})") from None
        self.torch_encoder, self.torch_actor = encoder.eval(), actor.eval()
        with torch.no_grad():
            self.encoder = compile_encoder(encoder)
            self.actor = compile_actor(actor)
        self.diffusion = args.actor == "diffusion"
        self.memory0 = policy_state["memory"].float().numpy().astype(np.float32)
        self.memory = self.memory0.copy()
        self.rng = np.random.default_rng(seed)
        self._noise_shape = (args.diffusion_steps + 1, config.action_dim)

    @classmethod
    def from_checkpoint(cls, path, config: EATConfig, seed: int = 0, expect_algo: str | None = None) -> SACPolicy:
        from .sac import SACArgs  # noqa: PLC0415

        ckpt = read_checkpoint(path)
        algo = ckpt["algo"]
        registry.check_compatible(expect_algo or algo, ckpt["config"], config, path, saved_algo=algo)
        policy = cls(config, algo, SACArgs.from_dict(ckpt["args"]), ckpt["policy"], seed=seed,
                     label=ckpt.get("label", ""))
        policy.trained_config = ckpt["config"]
        return policy

    @classmethod
    def untrained(cls, algo: str, config: EATConfig, seed: int = 0) -> SACPolicy:
        """Freshly initialized networks of the default architecture (for latency benchmarks)."""
        from .sac import SACAgent  # noqa: PLC0415

        args = registry.get(algo).default_args()
        agent = SACAgent(args, config.queue_len, config.nodes, seed=seed)
        return cls(config, algo, args, agent.policy_state(), seed=seed, label="untrained")

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.memory = self.memory0.copy()

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
            key = int(self._context_key(tok, self.config.queue_len, self.config.nodes))
            start = self.memory[key]
        m = self.actor.mean(feats, noise, start)
        if key is not None:
            self.memory[key] = m
        return m

    def act(self, observation, info):
        a = np.tanh(self.mean(observation))
        if self.args.no_idle_wait:
            a = launch_when_idle(a, np.asarray(observation, np.float32).reshape(self.config.token_rows, -1),
                                 self.config.queue_len)
        # --- the authors' setting (EATConfig.sac_double_tanh, issue 19): tianshou's action_bound_method="tanh" squashed
        # their tanh actor's output a second time before the environment saw it
        if self.config.sac_double_tanh:
            a = np.tanh(a)
        # ---
        return a.astype(np.float32)


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


if __name__ == "__main__":  # python -m eatsched.algos.sac_policy shrink SRC DST
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "shrink":
        raise SystemExit("usage: python -m eatsched.algos.sac_policy shrink SRC.pt DST.pt")
    print(shrink_checkpoint(sys.argv[2], sys.argv[3]))
