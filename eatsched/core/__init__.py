"""The problem model shared by the simulator and the serving host: ``config`` (every constant), ``profiles`` (time
models), ``state`` (state as record arrays; the observation's named columns), ``kernel`` (the compiled scheduler
core: selector, launch, reward, observation, action decoding), ``scheduler`` (the same core behind a live cluster's
API), ``policy`` (the interface every scheduler implements), ``workload``, ``metrics``, ``invariants`` (an
independent schedule checker), ``predictor``, ``seeds`` (the workload seed ranges). Imports no torch and nothing
above it."""
