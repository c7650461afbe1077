"""Fused float32 CPU kernels (numba) for the SAC family's networks: Mish, layer norm, the attention's softmax,
the encoder's embedding and the diffusion chain's step, each forward with the values its backward needs, and
each backward.

Why: at batch 512 an eager update is mostly elementwise work and small ops, one pass over memory per torch op.
Each kernel here makes one parallel pass, in place on the matmul outputs, and writes what the backward needs.
``fused.py`` builds the networks' forward and backward from these kernels and torch's matmuls;
``tests/test_fused.py`` checks them against the torch reference. (The matmuls are still only ~40% of a fused
update's time: see the README's speed section.)

The exponential is written out (Cody-Waite reduction and the Cephes polynomial, the exponent set with a bit cast):
numba has no vector exp without Intel's SVML, and this one vectorizes. Its relative error is about 1e-7."""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic

_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}  # fast math, but inf and nan keep their meaning
par = nb.njit(cache=True, nogil=True, parallel=True, fastmath=_FLAGS, error_model="numpy")
ser = nb.njit(cache=True, nogil=True, fastmath=_FLAGS, error_model="numpy")
inline = nb.njit(cache=True, nogil=True, fastmath=_FLAGS, error_model="numpy", inline="always")

F = np.float32
CHUNKS = 16
"""row chunks of a parallel column reduction (each chunk sums into its own row of a partial array)"""


@intrinsic
def _bits_as_f32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@inline
def fexp(x):
    """exp(x) for float32 x, clamped to [-87, 88] (no overflow, no denormals)."""
    x = min(max(x, F(-87.0)), F(88.0))
    n = np.floor(x * F(1.44269504088896341) + F(0.5))
    r = x - n * F(0.693359375)
    r = r + n * F(2.12194440e-4)
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1.0)
    return p * _bits_as_f32((np.int32(n) + np.int32(127)) << np.int32(23))


@inline
def _mish_t(v):
    """tanh(softplus(v)) and sigmoid(v) from one exp: with e = exp(v), t = e(e + 2) / (e(e + 2) + 2)."""
    e = fexp(min(v, F(20.0)))  # t = 1 and sigmoid = 1 to float precision beyond 20
    q = e * (e + F(2.0))
    return q / (q + F(2.0)), e / (e + F(1.0))


# --- Mish -----------------------------------------------------------------------------------------------------
@par
def mish_(x):
    """x <- mish(x), in place (no backward)."""
    for i in nb.prange(x.size):
        v = x[i]
        t, _ = _mish_t(v)
        x[i] = v * t


@par
def mish_grad_(x, d):
    """x <- mish(x) in place, d <- mish'(x) = t + x sigmoid(x) (1 - t^2), for the backward."""
    for i in nb.prange(x.size):
        v = x[i]
        t, s = _mish_t(v)
        d[i] = t + v * s * (F(1.0) - t * t)
        x[i] = v * t


@par
def mul_colsum_(g, d, partial):
    """g <- g * d in place (rows x cols, flattened) and the column sums of the result into ``partial`` (CHUNKS x
    cols; the bias gradient is partial.sum(0))."""
    rows, cols = g.shape
    for c in nb.prange(CHUNKS):
        acc = partial[c]
        acc[:] = 0.0
        for i in range(c * rows // CHUNKS, (c + 1) * rows // CHUNKS):
            for j in range(cols):
                v = g[i, j] * d[i, j]
                g[i, j] = v
                acc[j] += v


# --- layer norm -----------------------------------------------------------------------------------------------
@par
def layer_norm(x, g, b, eps, y, xhat, rstd):
    """y = (x - mean) / sqrt(var + eps) * g + b over each row; ``xhat`` and ``rstd`` keep what the backward
    needs (pass 0-row arrays to skip saving)."""
    rows, d = x.shape
    save = xhat.shape[0] > 0
    for i in nb.prange(rows):
        mu = F(0.0)
        for j in range(d):
            mu += x[i, j]
        mu /= d
        var = F(0.0)
        for j in range(d):
            c = x[i, j] - mu
            var += c * c
        r = F(1.0) / np.sqrt(var / d + eps)
        for j in range(d):
            h = (x[i, j] - mu) * r
            y[i, j] = h * g[j] + b[j]
            if save:
                xhat[i, j] = h
        if save:
            rstd[i] = r


@par
def layer_norm_bwd(dy, xhat, rstd, g, dx, accumulate, dg_partial, db_partial):
    """dx (+)= the input gradient of ``layer_norm``; per-chunk partial sums of the weight and bias gradients."""
    rows, d = dy.shape
    for c in nb.prange(CHUNKS):
        dg = dg_partial[c]
        db = db_partial[c]
        dg[:] = 0.0
        db[:] = 0.0
        for i in range(c * rows // CHUNKS, (c + 1) * rows // CHUNKS):
            m1 = F(0.0)
            m2 = F(0.0)
            for j in range(d):
                gy = dy[i, j] * g[j]
                m1 += gy
                m2 += gy * xhat[i, j]
                dg[j] += dy[i, j] * xhat[i, j]
                db[j] += dy[i, j]
            m1 /= d
            m2 /= d
            r = rstd[i]
            for j in range(d):
                v = r * (dy[i, j] * g[j] - m1 - xhat[i, j] * m2)
                if accumulate:
                    dx[i, j] += v
                else:
                    dx[i, j] = v


# --- the encoder's token embedding ----------------------------------------------------------------------------
@par
def embed(tok, w_t, base, delta, x):
    """x[b, r] = tok[b, r] @ w_t + base[r] + kind * delta, with kind = tok[b, r, 0] (0 task row, 1 server row)."""
    bsz, rows, nf = tok.shape
    d = w_t.shape[1]
    for b in nb.prange(bsz):
        for r in range(rows):
            kind = tok[b, r, 0]
            out = x[b, r]
            for j in range(d):
                out[j] = base[r, j] + kind * delta[j]
            for f in range(nf):
                t = tok[b, r, f]
                for j in range(d):
                    out[j] += t * w_t[f, j]


@par
def embed_bwd(dx, tok, slot_partial, kind_partial, w_partial):
    """Per-chunk partial sums of the embedding's parameter gradients: sum over the batch of dx per slot (the slot
    embedding; summed over slots it is the bias gradient), of kind * dx (the type embedding) and of tok^T dx (the
    linear weight)."""
    bsz, rows, d = dx.shape
    nf = tok.shape[2]
    for c in nb.prange(CHUNKS):
        sp = slot_partial[c]
        kp = kind_partial[c]
        wp = w_partial[c]
        sp[:] = 0.0
        kp[:] = 0.0
        wp[:] = 0.0
        for b in range(c * bsz // CHUNKS, (c + 1) * bsz // CHUNKS):
            for r in range(rows):
                kind = tok[b, r, 0]
                for j in range(d):
                    v = dx[b, r, j]
                    sp[r, j] += v
                    kp[j] += kind * v
                for f in range(nf):
                    t = tok[b, r, f]
                    for j in range(d):
                        wp[f, j] += t * dx[b, r, j]


@par
def bias_mish_grad_(x, bias, d):
    """x <- mish(x + bias) in place (bias broadcast over the rows); d <- its derivative (0-row d: not kept)."""
    rows, cols = x.shape
    save = d.shape[0] > 0
    for i in nb.prange(rows):
        for j in range(cols):
            v = x[i, j] + bias[j]
            t, s = _mish_t(v)
            if save:
                d[i, j] = t + v * s * (F(1.0) - t * t)
            x[i, j] = v * t


@par
def shift_rows_(s, scale):
    """s <- (s - row max) * scale, in place: the exponent of a stable softmax of s * scale (scale > 0)."""
    rows, n = s.shape
    for i in nb.prange(rows):
        m = F(-3.0e38)
        for j in range(n):
            m = max(m, s[i, j])
        for j in range(n):
            s[i, j] = (s[i, j] - m) * scale


@par
def normalize_rows_(s):
    """s <- s / row sum, in place."""
    rows, n = s.shape
    for i in nb.prange(rows):
        z = F(0.0)
        for j in range(n):
            z += s[i, j]
        inv = F(1.0) / z
        for j in range(n):
            s[i, j] *= inv


@par
def softmax_bwd_(dp, p, scale):
    """dp <- d loss / d scores of ``softmax_`` (scale included), in place, from the weights p."""
    rows, n = p.shape
    for i in nb.prange(rows):
        dot = F(0.0)
        for j in range(n):
            dot += dp[i, j] * p[i, j]
        for j in range(n):
            dp[i, j] = p[i, j] * (dp[i, j] - dot) * scale


# --- the diffusion actor's chain arithmetic (B x A, small: serial) ------------------------------------------
@ser
def chain_step(x, eps, noise, a, b, c0, ct, std, clip, x_out, mask):
    """x0 = clip(a x - b eps); x_out = c0 x0 + ct x + std noise (no noise at the last step: noise has 0 rows);
    mask = 1 where the clip was inactive (the gradient passes)."""
    xf, ef, of, mf = x.reshape(-1), eps.reshape(-1), x_out.reshape(-1), mask.reshape(-1)
    for i in range(xf.size):
        r = a * xf[i] - b * ef[i]
        x0 = min(max(r, -clip), clip)
        of[i] = c0 * x0 + ct * xf[i]
        mf[i] = F(1.0) if x0 == r else F(0.0)
    if noise.shape[0] > 0:
        nf = noise.reshape(-1)
        for i in range(xf.size):
            of[i] += std * nf[i]


@ser
def chain_step_bwd(g, mask, a, b, c0, ct, deps, dx):
    """Given g = d loss / d x_out of ``chain_step``: deps = d loss / d eps, dx = the direct part of d loss / d x."""
    gf, mf, ef, df = g.reshape(-1), mask.reshape(-1), deps.reshape(-1), dx.reshape(-1)
    for i in range(gf.size):
        gx0 = c0 * gf[i] * mf[i]
        ef[i] = -b * gx0
        df[i] = ct * gf[i] + a * gx0
