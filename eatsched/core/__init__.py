"""The problem model shared by the simulator and the serving host: config, time profiles, state arrays,
the compiled scheduler core (selector, launch, reward, observation, action decoding), workloads and
metrics. Imports no torch and no serving code."""
