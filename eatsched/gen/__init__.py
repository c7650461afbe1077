"""Real image generation: offline model loading, CLIP scoring, tiny random models for tests, calibration
and benchmarks. Patch parallelism itself lives in ``eatsched.parallel``; the worker-facing backend in
``eatsched.serving.backends.diffusers_backend``."""
