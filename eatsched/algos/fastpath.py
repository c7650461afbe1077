"""A NumPy forward of a trained SAC-family policy for single decisions (batch 1).

Eager PyTorch spends ~10 us of dispatch per op at batch 1, and EAT's chain is ~60 ops; NumPy on float32 arrays
with the weights pre-transposed is several times faster. ``tests/test_learned.py`` checks that this path gives the
same actions as the torch networks for the same chain noise.
"""

from __future__ import annotations

import math

import numba
import numpy as np


def mish(x: np.ndarray) -> np.ndarray:
    e = np.exp(np.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


def _w(state: dict, name: str) -> np.ndarray:
    return state[name].detach().cpu().numpy().astype(np.float32)


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


class NumpyEncoder:
    def __init__(self, kind: str, state: dict, token_rows: int, heads: int):
        self.kind, self.rows, self.heads = kind, token_rows, heads
        if kind == "flat":
            return
        self.embed_w, self.embed_b = _w(state, "embed.weight").T.copy(), _w(state, "embed.bias")
        type_w = _w(state, "type_embed.weight")
        self.base = self.embed_b + type_w[0] + _w(state, "slot_embed")  # everything that is not input-dependent
        self.type_delta = type_w[1] - type_w[0]
        self.blocks = []
        i = 0
        while f"blocks.{i}.qkv.weight" in state:
            p = f"blocks.{i}."
            self.blocks.append({k: (_w(state, p + k).T.copy() if k.endswith("weight") and not k.startswith("norm")
                                    else _w(state, p + k))
                                for k in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "qkv.weight",
                                          "qkv.bias", "proj.weight", "proj.bias", "ff1.weight", "ff1.bias",
                                          "ff2.weight", "ff2.bias")})
            i += 1
        self.norm_g, self.norm_b = _w(state, "norm.weight"), _w(state, "norm.bias")

    def __call__(self, tok: np.ndarray) -> np.ndarray:
        """(rows, 7) token matrix -> feature vector."""
        if self.kind == "flat":
            return tok.reshape(-1)
        kind = tok[:, 0:1]
        x = tok @ self.embed_w + self.base + kind * self.type_delta
        n, d = x.shape
        h, dh = self.heads, d // self.heads
        for p in self.blocks:
            qkv = (_layer_norm(x, p["norm1.weight"], p["norm1.bias"]) @ p["qkv.weight"] + p["qkv.bias"])
            q, k, v = qkv.reshape(n, 3, h, dh).transpose(1, 2, 0, 3)  # each (h, n, dh)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
            s = np.exp(s - s.max(-1, keepdims=True))
            a = (s / s.sum(-1, keepdims=True)) @ v  # (h, n, dh)
            x = x + a.transpose(1, 0, 2).reshape(n, d) @ p["proj.weight"] + p["proj.bias"]
            f = mish(_layer_norm(x, p["norm2.weight"], p["norm2.bias"]) @ p["ff1.weight"] + p["ff1.bias"])
            x = x + f @ p["ff2.weight"] + p["ff2.bias"]
        return _layer_norm(x, self.norm_g, self.norm_b).reshape(-1)


class NumpyDiffusionActor:
    """The reverse chain of ``nets.DiffusionActor`` with the state and time parts of layer 1 precomputed."""

    def __init__(self, state: dict, steps: int):
        self.steps = steps
        self.in_x = _w(state, "in_x.weight").T.copy()
        self.in_x_b = _w(state, "in_x.bias")
        self.in_s = _w(state, "in_s.weight").T.copy()
        self.body = []
        i = 0
        while f"body.{i}.weight" in state:
            self.body.append((_w(state, f"body.{i}.weight").T.copy(), _w(state, f"body.{i}.bias")))
            i += 2
        # the time part of layer 1 does not depend on the input: compute it once
        tt = _w(state, "time_table")
        t1 = mish(tt @ _w(state, "time_mlp.0.weight").T + _w(state, "time_mlp.0.bias"))
        t2 = t1 @ _w(state, "time_mlp.2.weight").T + _w(state, "time_mlp.2.bias")
        self.temb = (t2 @ _w(state, "in_t.weight").T).astype(np.float32)
        self.c = {k: _w(state, k) for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "post_std")}
        self.x0_clip = None
        self.ls_w, self.ls_b = _w(state, "log_std.weight").T.copy(), _w(state, "log_std.bias")

    def mean(self, feats: np.ndarray, noise: np.ndarray, start: np.ndarray | None, x0_clip: float) -> np.ndarray:
        c = self.c
        x = noise[0] if start is None else start
        cond = feats @ self.in_s + self.in_x_b
        if len(self.body) == 2:  # the default architecture: one compiled call for the whole chain
            (w_hid, b_hid), (w_out, b_out) = self.body
            return _chain(np.array(x, np.float32), (cond + self.temb).astype(np.float32), self.in_x, w_hid, b_hid,
                          w_out, b_out, c["sqrt_recip_abar"], c["sqrt_recipm1_abar"], c["coef_x0"], c["coef_xt"],
                          c["post_std"], np.asarray(noise, np.float32), np.float32(x0_clip))
        for t in reversed(range(self.steps)):
            h = mish(x @ self.in_x + cond + self.temb[t])
            for j, (w, b) in enumerate(self.body):
                h = h @ w + b
                if j < len(self.body) - 1:
                    h = mish(h)
            x0 = np.clip(c["sqrt_recip_abar"][t] * x - c["sqrt_recipm1_abar"][t] * h, -x0_clip, x0_clip)
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
    def __init__(self, state: dict):
        self.trunk = []
        i = 0
        while f"trunk.{i}.weight" in state:
            self.trunk.append((_w(state, f"trunk.{i}.weight").T.copy(), _w(state, f"trunk.{i}.bias")))
            i += 2
        self.mean_w, self.mean_b = _w(state, "mean.weight").T.copy(), _w(state, "mean.bias")

    def mean(self, feats: np.ndarray, noise=None, start=None, x0_clip=None) -> np.ndarray:
        h = feats
        for w, b in self.trunk:
            h = mish(h @ w + b)
        return h @ self.mean_w + self.mean_b
