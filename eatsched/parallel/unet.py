"""Installing the patch-parallel wrappers in a diffusers UNet, once per loaded model."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from .context import PatchContext
from .layers import (
    PatchConv2d,
    PatchGroupNorm,
    PatchSelfAttention,
    _Wrapper,
    check_conv,
    check_self_attention,
    spatial_conv,
)


class PatchParallelUNet:
    """Wraps, in place, every row-mixing layer of a ``UNet2DConditionModel`` (weights are shared).

    The UNet keeps its class and call signature, so an unmodified diffusers pipeline drives it. While a
    ``PatchContext`` is active (``with ppu.active(ctx):``) each call takes the whole latent, computes this
    rank's band of rows and returns the whole output (bands all-gathered in ``conv_out``); with none
    active the UNet computes exactly as before. ``PatchParallelUNet.of(unet)`` installs once and reuses.
    """

    def __init__(self, unet: nn.Module):
        from diffusers.models.attention_processor import Attention

        self.unet = unet
        self.context: PatchContext | None = None
        self.wrapped = {"conv": 0, "group_norm": 0, "self_attention": 0}
        slot = 0
        for parent_name, parent in list(unet.named_modules()):
            if isinstance(parent, _Wrapper):
                continue
            for child_name, child in list(parent.named_children()):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                if isinstance(child, _Wrapper):
                    continue
                if name in ("conv_in", "conv_out") or spatial_conv(child):
                    check_conv(child, name)
                    wrapper = PatchConv2d(child, self, slot, first=name == "conv_in", last=name == "conv_out")
                    kind = "conv"
                elif isinstance(child, nn.GroupNorm):
                    wrapper, kind = PatchGroupNorm(child, self, slot), "group_norm"
                elif isinstance(child, Attention) and not child.is_cross_attention:
                    check_self_attention(child, name)
                    wrapper, kind = PatchSelfAttention(child, self, slot), "self_attention"
                else:
                    continue
                setattr(parent, child_name, wrapper)
                self.wrapped[kind] += 1
                slot += 1
        self.row_factor = 2 ** sum(1 for b in unet.down_blocks if getattr(b, "downsamplers", None))
        unet.register_forward_pre_hook(self._before_step, with_kwargs=True)
        unet.register_forward_hook(self._after_step)
        unet._eat_patch_parallel = self

    @classmethod
    def of(cls, unet: nn.Module) -> PatchParallelUNet:
        return getattr(unet, "_eat_patch_parallel", None) or cls(unet)

    @contextmanager
    def active(self, context: PatchContext | None):
        """Run the UNet patch-parallel under ``context`` (None: plainly) inside the block."""
        previous, self.context = self.context, context
        try:
            yield context
        finally:
            if context is not None:
                context.flush()
            self.context = previous

    def check_rows(self, latent_rows: int, world_size: int) -> None:
        """A latent of ``latent_rows`` rows must split into equal bands down to the UNet's coarsest level."""
        need = world_size * self.row_factor
        if latent_rows % need:
            raise ValueError(f"patch parallelism: {latent_rows} latent rows cannot be split into {world_size} bands "
                             f"(need a multiple of {need}); choose a height that is a multiple of "
                             f"{need * 8} px for an SD VAE")

    def _before_step(self, module, args, kwargs):
        ctx = self.context
        if ctx is not None and ctx.world_size > 1:
            sample = args[0] if args else kwargs["sample"]
            self.check_rows(sample.shape[-2], ctx.world_size)
            ctx.full_rows = sample.shape[-2]

    def _after_step(self, module, args, output):
        if self.context is not None:
            self.context.end_step()
