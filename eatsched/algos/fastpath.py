"""Single decisions (batch 1) of a SAC-family policy in NumPy, built from the torch modules of ``nets``.

Eager PyTorch spends ~10 us of dispatch per op at batch 1, and EAT's chain is ~60 ops; NumPy on float32 arrays
with the weights pre-transposed is several times faster. Every array here is read off a module of ``nets`` by
attribute (``encoder.blocks[i].qkv``, ``actor.body``), and the input-independent parts (the time embedding, the
encoder's constant rows) are computed by those modules themselves, so a change to a network that this path does
not mirror fails loudly here or in ``tests/test_learned.py``'s parity test over every variant.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import nn

from ..core.state import KIND_SERVER, KIND_TASK, TOKEN_KIND
from .features import with_warm_eta
from .nets import AttentionEncoder, DiffusionActor, FlatEncoder, GaussianActor


def mish(x: np.ndarray) -> np.ndarray:
    e = np.exp(np.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


def _a(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _linear(m: nn.Linear) -> tuple[np.ndarray, np.ndarray | None]:
    """(W^T, b) of a Linear layer, so that ``x @ W^T + b`` is its forward."""
    return _a(m.weight).T.copy(), None if m.bias is None else _a(m.bias)


def _linears(seq: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Linear layers of an ``nets.mlp`` stack (Linear, Mish, ..., Linear), in order."""
    return [_linear(m) for m in seq if isinstance(m, nn.Linear)]


def _layer_norm(x: np.ndarray, m: tuple, eps: float = 1e-5) -> np.ndarray:
    g, b = m
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _norm(m: nn.LayerNorm) -> tuple[np.ndarray, np.ndarray]:
    return _a(m.weight), _a(m.bias)


class NumpyEncoder:
    """``nets.AttentionEncoder`` or ``nets.FlatEncoder`` on one (rows, 7) token matrix."""

    def __init__(self, encoder: nn.Module):
        self.flat = isinstance(encoder, FlatEncoder)
        self.queue_len, self.warm_eta = encoder.queue_len, encoder.warm_eta
        if self.flat:
            return
        if not isinstance(encoder, AttentionEncoder):
            raise TypeError(f"no single-decision path for encoder {type(encoder).__name__}")
        self.heads = encoder.heads
        self.embed_w, embed_b = _linear(encoder.embed)
        kinds = encoder.type_embed.weight
        # every row's input-independent part: bias, the task-kind embedding and the slot embedding
        self.base = embed_b + _a(kinds[int(KIND_TASK)]) + _a(encoder.slot_embed)
        self.kind_delta = _a(kinds[int(KIND_SERVER)] - kinds[int(KIND_TASK)])
        self.blocks = [dict(norm1=_norm(b.norm1), norm2=_norm(b.norm2), qkv=_linear(b.qkv), proj=_linear(b.proj),
                            ff1=_linear(b.ff1), ff2=_linear(b.ff2)) for b in encoder.blocks]
        self.norm = _norm(encoder.norm)

    def __call__(self, tok: np.ndarray) -> np.ndarray:
        """(rows, 7) token matrix -> feature vector."""
        if self.warm_eta:
            tok = with_warm_eta(tok, self.queue_len)
        if self.flat:
            return tok.reshape(-1)
        kind = tok[:, TOKEN_KIND : TOKEN_KIND + 1]
        x = tok @ self.embed_w + self.base + kind * self.kind_delta
        n, d = x.shape
        h, dh = self.heads, d // self.heads
        for p in self.blocks:
            w, b = p["qkv"]
            q, k, v = (_layer_norm(x, p["norm1"]) @ w + b).reshape(n, 3, h, dh).transpose(1, 2, 0, 3)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
            s = np.exp(s - s.max(-1, keepdims=True))
            a = (s / s.sum(-1, keepdims=True)) @ v  # (h, n, dh)
            w, b = p["proj"]
            x = x + a.transpose(1, 0, 2).reshape(n, d) @ w + b
            (w1, b1), (w2, b2) = p["ff1"], p["ff2"]
            x = x + mish(_layer_norm(x, p["norm2"]) @ w1 + b1) @ w2 + b2
        return _layer_norm(x, self.norm).reshape(-1)


class NumpyDiffusionActor:
    """The reverse chain of ``nets.DiffusionActor``, with the state and time parts of layer 1 precomputed."""

    def __init__(self, actor: DiffusionActor):
        self.steps, self.x0_clip = actor.steps, float(actor.x0_clip)
        self.in_x, self.in_x_b = _linear(actor.in_x)
        self.in_s, _ = _linear(actor.in_s)
        self.body = _linears(actor.body)
        # the time part of layer 1 does not depend on the input: computed once, by the module itself
        self.temb = _a(actor.in_t(actor.time_mlp(actor.time_table)))
        self.c = {k: _a(getattr(actor, k)) for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt",
                                                      "post_std")}

    def mean(self, feats: np.ndarray, noise: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        c = self.c
        x = noise[0] if start is None else start
        cond = feats @ self.in_s + self.in_x_b
        if len(self.body) == 2:  # the default architecture: one compiled call for the whole chain
            (w_hid, b_hid), (w_out, b_out) = self.body
            return _chain(np.array(x, np.float32), (cond + self.temb).astype(np.float32), self.in_x, w_hid, b_hid,
                          w_out, b_out, c["sqrt_recip_abar"], c["sqrt_recipm1_abar"], c["coef_x0"], c["coef_xt"],
                          c["post_std"], np.asarray(noise, np.float32), np.float32(self.x0_clip))
        for t in reversed(range(self.steps)):
            h = mish(x @ self.in_x + cond + self.temb[t])
            for j, (w, b) in enumerate(self.body):
                h = h @ w + b
                if j < len(self.body) - 1:
                    h = mish(h)
            x0 = np.clip(c["sqrt_recip_abar"][t] * x - c["sqrt_recipm1_abar"][t] * h, -self.x0_clip, self.x0_clip)
            x = c["coef_x0"][t] * x0 + c["coef_xt"][t] * x
            if t > 0:
                x = x + c["post_std"][t] * noise[t + 1]
        return x


@numba.njit(cache=True, fastmath=False, inline="always")
def _mish_inplace(h):
    """Mish of a hidden vector in place: x tanh(softplus(x)) = x n / (n + 2) with n = e^x (e^x + 2)."""
    for j in range(h.shape[0]):
        v = h[j]
        e = np.exp(min(v, np.float32(20.0)))
        n = e * (e + np.float32(2.0))
        h[j] = v * (n / (n + np.float32(2.0)))


@numba.njit(cache=True, fastmath=False)
def _chain(x, cond_t, w_in, w_hid, b_hid, w_out, b_out, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt,
           post_std, noise, x0_clip):
    """The whole reverse chain in one compiled call (denoiser with two hidden layers): no per-op dispatch."""
    steps = cond_t.shape[0]
    a_dim, hidden = w_in.shape
    h1 = np.empty(hidden, np.float32)
    for t in range(steps - 1, -1, -1):
        for j in range(hidden):
            h1[j] = cond_t[t, j]
        for i in range(a_dim):
            xi = x[i]
            for j in range(hidden):
                h1[j] += xi * w_in[i, j]
        _mish_inplace(h1)
        h2 = b_hid.copy()
        for i in range(hidden):  # row-major weights: the inner loop is contiguous (vectorized)
            hi = h1[i]
            for j in range(hidden):
                h2[j] += hi * w_hid[i, j]
        _mish_inplace(h2)
        eps = b_out.copy()
        for i in range(hidden):
            hi = h2[i]
            for k in range(a_dim):
                eps[k] += hi * w_out[i, k]
        for i in range(a_dim):
            x0 = sqrt_recip_abar[t] * x[i] - sqrt_recipm1_abar[t] * eps[i]
            x0 = min(max(x0, -x0_clip), x0_clip)
            xi = coef_x0[t] * x0 + coef_xt[t] * x[i]
            if t > 0:
                xi += post_std[t] * noise[t + 1, i]
            x[i] = xi
    return x


class NumpyGaussianActor:
    """``nets.GaussianActor``'s mean: the trunk (every layer followed by Mish), then the mean head."""

    def __init__(self, actor: GaussianActor):
        self.trunk = _linears(actor.trunk)
        self.mean_w, self.mean_b = _linear(actor.mean)

    def mean(self, feats: np.ndarray, noise=None, start=None) -> np.ndarray:
        h = feats
        for w, b in self.trunk:
            h = mish(h @ w + b)
        return h @ self.mean_w + self.mean_b


def compile_encoder(encoder: nn.Module) -> NumpyEncoder:
    return NumpyEncoder(encoder)


def compile_actor(actor: nn.Module) -> NumpyDiffusionActor | NumpyGaussianActor:
    if isinstance(actor, DiffusionActor):
        return NumpyDiffusionActor(actor)
    if isinstance(actor, GaussianActor):
        return NumpyGaussianActor(actor)
    raise TypeError(f"no single-decision path for actor {type(actor).__name__}")
