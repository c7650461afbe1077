"""Image generation, everything a worker runs: it never imports ``eatsched.serving``.

* ``backend.py``: the contract between a worker and what generates images (``Backend``, ``PatchJob``,
  ``GroupSpec``, ``PatchResult``); plain dataclasses, no torch.
* ``backends/``: the backends by name (``make_backend``): ``simulated`` (sleeps per the time model) and
  ``diffusers`` (real pipelines with patch parallelism, CLIP-scored).
* ``loading.py`` (offline pipeline loading), ``clip.py`` (CLIP score), ``tiny.py`` (tiny random models for
  tests), ``local_group.py`` (k local worker processes running one job), ``calibrate.py`` (``eat calibrate``).

Patch parallelism itself lives in ``eatsched.parallel``; the worker process's HTTP loop in
``eatsched.serving.worker``; the ``eat bench gen`` benchmark in ``eatsched.bench.gen``.
"""
