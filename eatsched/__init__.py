"""eatsched: QoS-aware patch-parallel AIGC task scheduling on edge GPU clusters (EAT)."""

from gymnasium.envs.registration import register, registry

from .core.config import ConfigError, EATConfig

__version__ = "0.1.0"
__all__ = ["EATConfig", "ConfigError", "__version__"]

if "eatsched/EAT-v0" not in registry:
    # No max_episode_steps: the env truncates itself at the simulated time limit (1024 s by default).
    register(id="eatsched/EAT-v0", entry_point="eatsched.sim.env:EATEnv")
if "eatsched/Offload-v0" not in registry:
    # the DEdgeAI multi-edge offloading problem (LAD-TS's own scenario); ends after the episode's last task
    register(id="eatsched/Offload-v0", entry_point="eatsched.sim.offload:OffloadEnv")
