"""Wrappers for the UNet layers that look across rows, so a band of rows can be computed alone.

Each wrapper holds the original module (``inner``, weights shared, nothing copied) and the ``owner``
whose ``context`` is the running job's ``PatchContext``; with no context (a single-device job) the
wrapper calls ``inner`` unchanged, so one loaded model serves jobs of any patch count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Wrapper(nn.Module):
    def __init__(self, inner: nn.Module, owner, slot: int):
        super().__init__()
        self.inner = inner
        self._owner = [owner]  # a list: keep the owner out of this module's children
        self.slot = slot

    @property
    def context(self):
        ctx = self._owner[0].context
        return ctx if ctx is not None and ctx.world_size > 1 else None


def spatial_conv(conv: nn.Module) -> bool:
    """A Conv2d whose output rows read more than one input row (1x1 convolutions need no neighbours)."""
    return isinstance(conv, nn.Conv2d) and conv.kernel_size[0] > 1


def check_conv(conv: nn.Conv2d, name: str) -> None:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise ValueError(f"patch parallelism: {name} ({conv}) has padding/dilation it cannot split by rows")
    kh, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if kh - p - s < 0 or p > kh - 1:
        raise ValueError(f"patch parallelism: {name} ({conv}) has a row geometry it cannot split")


class PatchConv2d(_Wrapper):
    """A convolution over a band of rows, with halo rows from the neighbouring bands.

    Output row o reads input rows ``o*s - p`` .. ``o*s - p + kh - 1``, so a band needs ``p`` rows from the
    band above and ``kh - p - s`` from the band below (zeros at the image's edges, as the padding would
    give). ``first``: the layer receives the whole latent (every rank has it) and cuts its own band with
    halos locally. ``last``: its output bands are all-gathered into the whole output."""

    def __init__(self, inner: nn.Conv2d, owner, slot: int, *, first: bool = False, last: bool = False):
        super().__init__(inner, owner, slot)
        self.first = first
        self.last = last
        kh, s, p = inner.kernel_size[0], inner.stride[0], inner.padding[0]
        self.top = p
        self.bottom = kh - p - s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx is None:
            return self.inner(x)
        if self.first:
            rows = self._cut_band(x, ctx)
        else:
            rows = self._with_halos(x, ctx)
        conv = self.inner
        out = F.conv2d(rows, conv.weight, conv.bias, conv.stride, (0, conv.padding[1]), conv.dilation, conv.groups)
        return ctx.gather_rows(out) if self.last else out

    def _cut_band(self, x: torch.Tensor, ctx) -> torch.Tensor:
        start, stop = ctx.band(x.shape[-2])
        lo, hi = max(0, start - self.top), min(x.shape[-2], stop + self.bottom)
        return F.pad(x[..., lo:hi, :], (0, 0, self.top - (start - lo), self.bottom - (hi - stop)))

    def _with_halos(self, x: torch.Tensor, ctx) -> torch.Tensor:
        halo = max(self.top, self.bottom)
        if halo == 0:
            return x
        if halo > x.shape[-2]:
            raise ValueError(f"patch parallelism: a band of {x.shape[-2]} rows is thinner than the halo ({halo}); "
                             "use fewer patches or a larger image")
        edges = torch.stack([x[..., :halo, :], x[..., -halo:, :]])
        rank, k = ctx.rank, ctx.world_size

        def join(parts: list[torch.Tensor]) -> torch.Tensor:
            shape = list(x.shape)
            if rank > 0:
                above = parts[rank - 1][1][..., halo - self.top:, :]
            else:
                above = x.new_zeros(shape[:-2] + [self.top, shape[-1]])
            if rank < k - 1:
                below = parts[rank + 1][0][..., : self.bottom, :]
            else:
                below = x.new_zeros(shape[:-2] + [self.bottom, shape[-1]])
            return torch.cat([above, x, below], dim=-2)

        return ctx.exchange(self.slot, edges, join)


class PatchGroupNorm(_Wrapper):
    """Group normalization with statistics of the whole image.

    Each rank reduces its band to per-group (mean, sum of squared deviations); the bands' statistics are
    combined exactly (Chan et al.'s parallel variance), in float32. In a stale step the other bands'
    statistics are from the previous step and this band's are fresh (DistriFusion's corrected GN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if ctx is None:
            return self.inner(x)
        gn = self.inner
        b, c = x.shape[:2]
        xg = x.reshape(b, gn.num_groups, -1).float()
        n = xg.shape[-1]
        mean = xg.mean(-1)
        m2 = (xg - mean[..., None]).square().sum(-1)
        k = ctx.world_size

        def combine(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            stats = torch.stack(parts)  # (k, 2, b, groups)
            means, m2s = stats[:, 0], stats[:, 1]
            full_mean = means.mean(0)
            full_m2 = m2s.sum(0) + n * (means - full_mean).square().sum(0)
            return full_mean, full_m2 / (n * k)

        full_mean, var = ctx.exchange(self.slot, torch.stack([mean, m2]), combine)
        y = ((xg - full_mean[..., None]) * torch.rsqrt(var[..., None] + gn.eps)).to(x.dtype).reshape(x.shape)
        if gn.affine:
            view = (1, c) + (1,) * (x.dim() - 2)
            y = y * gn.weight.view(view) + gn.bias.view(view)
        return y


class PatchSelfAttention(_Wrapper):
    """Self-attention of a band's queries over the keys and values of every band (diffusers ``Attention``).

    Tokens are the band's pixels in row-major order, so concatenating the bands' keys and values in rank
    order gives the whole image's. Cross-attention calls (``encoder_hidden_states`` given) pass through."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, **kwargs):
        ctx = self.context
        if ctx is None or encoder_hidden_states is not None:
            return self.inner(hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **kwargs)
        if attention_mask is not None or hidden_states.dim() != 3:
            raise ValueError("patch parallelism: self-attention with a mask or 4-D input is not supported")
        attn = self.inner
        residual = hidden_states
        b = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        kv = torch.cat([attn.to_k(hidden_states), attn.to_v(hidden_states)], dim=-1)
        full_kv = ctx.exchange(self.slot, kv, lambda parts: torch.cat(parts, dim=1))
        key, value = full_kv.chunk(2, dim=-1)
        heads = attn.heads
        head_dim = key.shape[-1] // heads

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value),
                                             dropout_p=0.0, is_causal=False, scale=attn.scale)
        out = out.transpose(1, 2).reshape(b, -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def check_self_attention(attn: nn.Module, name: str) -> None:
    """Refuse Attention features the band computation above does not reproduce."""
    unsupported = {
        "group_norm": getattr(attn, "group_norm", None) is not None,
        "spatial_norm": getattr(attn, "spatial_norm", None) is not None,
        "norm_q": getattr(attn, "norm_q", None) is not None,
        "norm_cross": bool(getattr(attn, "norm_cross", None)),
        "added_kv_proj_dim": getattr(attn, "added_kv_proj_dim", None) is not None,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"patch parallelism: self-attention {name} uses {', '.join(bad)}, which is not supported")
