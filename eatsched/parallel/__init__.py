"""Patch parallelism for diffusion UNets (DistriFusion-style displaced patch parallelism).

One image is denoised by k processes at once: every rank holds the whole latent, computes its own band
of rows through the UNet, and the bands are joined after every step so each rank takes the same scheduler
step. Inside the UNet the layers that look across rows are wrapped:

* ``Conv2d`` with a spatial kernel needs a halo of rows from its neighbours,
* self-attention needs the keys and values of every row,
* ``GroupNorm`` needs statistics over the whole image.

In ``sync`` mode those activations are exchanged before use every step, which reproduces the single-device
result. In ``stale`` mode (DistriFusion) the first ``warmup_steps`` steps exchange synchronously; after
that each layer uses the other bands' activations from the previous step while this step's fresh ones are
all-gathered asynchronously in the background, hiding communication behind computation.

Modules: ``context`` (the per-job state and the exchange), ``layers`` (module wrappers), ``unet``
(installing the wrappers in a diffusers UNet), ``groups`` (process groups kept for reuse),
``graphs`` (a CUDA-graph runner for the denoising step).
"""

from .context import MODES, PatchContext
from .unet import PatchParallelUNet

__all__ = ["MODES", "PatchContext", "PatchParallelUNet"]
