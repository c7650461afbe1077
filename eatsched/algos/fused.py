"""Hand-written forward and backward passes of the SAC family's networks for float32 on the CPU, used by the
modules in ``nets.py`` in place of autograd over many small torch ops (the reference, still used on GPUs and
for other dtypes).

Each network is one ``torch.autograd.Function``: its forward runs the matmuls with torch and everything between
them with the fused kernels of ``cpu_kernels.py``, keeping what the backward needs; its backward returns the
parameter gradients. Same parameters, same function; ``tests/test_fused.py`` checks values and gradients against
the reference modules.
"""

from __future__ import annotations

import math

import torch

from . import cpu_kernels as K


def usable(x: torch.Tensor) -> bool:
    """The fused path applies to float32 CPU tensors (everything else takes the reference modules)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and FUSED_ENABLED


FUSED_ENABLED = True
"""Switch for tests and benchmarks that compare against the reference path."""


def _n(t: torch.Tensor):
    return t.detach().numpy()


def _empty(*shape) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32)


_NO_SAVE = (torch.empty((0, 1)), torch.empty(0))


def _partials(cols) -> torch.Tensor:
    return torch.empty((K.CHUNKS, *cols) if isinstance(cols, tuple) else (K.CHUNKS, cols))


def _mish_(h: torch.Tensor, save: bool) -> torch.Tensor | None:
    """h <- mish(h) in place; with ``save``, returns mish' at the old h (what the backward multiplies by)."""
    if not save:
        K.mish_(_n(h).reshape(-1))
        return None
    d = torch.empty_like(h)
    K.mish_grad_(_n(h).reshape(-1), _n(d).reshape(-1))
    return d


# --- attention encoder ----------------------------------------------------------------------------------------
_BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "norm2.weight",
                 "norm2.bias", "ff1.weight", "ff1.bias", "ff2.weight", "ff2.bias")


def encoder_params(m) -> list[torch.Tensor]:
    """The attention encoder's parameters in the order the fused function takes them."""
    ps = [m.embed.weight, m.embed.bias, m.type_embed.weight, m.slot_embed]
    for blk in m.blocks:
        named = dict(blk.named_parameters())
        ps += [named[k] for k in _BLOCK_PARAMS]
    return ps + [m.norm.weight, m.norm.bias]


def _layer_norm(x: torch.Tensor, g, b, eps: float, save: bool):
    y = torch.empty_like(x)
    xhat, rstd = (torch.empty_like(x), _empty(x.shape[0])) if save else _NO_SAVE
    K.layer_norm(_n(x), _n(g), _n(b), eps, _n(y), _n(xhat), _n(rstd))
    return y, (xhat, rstd)


def encoder_forward(m, obs: torch.Tensor, params: list[torch.Tensor], save: bool):
    """Features (B, rows * d) of ``nets.AttentionEncoder`` ``m``; with ``save``, also what the backward needs."""
    bsz, rows, d, heads = obs.shape[0], m.rows, m.d, m.heads
    n_tok = bsz * rows
    we, be, type_w, slot = params[:4]
    tok = obs.detach().reshape(bsz, rows, -1).contiguous()
    x = _empty(bsz, rows, d)
    with torch.no_grad():
        base = (be + type_w[0] + slot).contiguous()
        delta = (type_w[1] - type_w[0]).contiguous()
        we_t = we.t().contiguous()
    K.embed(_n(tok), _n(we_t), _n(base), _n(delta), _n(x))
    x = x.view(n_tok, d)
    scale = 1.0 / math.sqrt(d // heads)
    saved = []
    for i, blk in enumerate(m.blocks):
        g1, b1, wqkv, bqkv, wp, bp, g2, b2, w1, bf1, w2, bf2 = (p.detach() for p in params[4 + 12 * i: 16 + 12 * i])
        h1, ln1 = _layer_norm(x, g1, b1, blk.norm1.eps, save)
        qkv = torch.addmm(bqkv, h1, wqkv.t())
        att, attn_saved = _attention(qkv, bsz, rows, heads, scale)
        x1 = torch.addmm(bp, att, wp.t()).add_(x)
        h2, ln2 = _layer_norm(x1, g2, b2, blk.norm2.eps, save)
        f = torch.addmm(bf1, h2, w1.t())
        dmish = _mish_(f, save)
        x2 = torch.addmm(bf2, f, w2.t()).add_(x1)
        if save:
            saved.append((h1, ln1, attn_saved, att, h2, ln2, f, dmish))
        x = x2
    gn, bn = params[-2].detach(), params[-1].detach()
    out, lnf = _layer_norm(x, gn, bn, m.norm.eps, save)
    return out.view(bsz, rows * d), ((tok, saved, lnf) if save else None)


def _attention(qkv: torch.Tensor, bsz: int, rows: int, heads: int, scale: float):
    """Softmax attention per head: the products with torch's batched matmul, the softmax with a kernel."""
    d = qkv.shape[1] // 3
    dh = d // heads
    qkvp = qkv.view(bsz, rows, 3, heads, dh).permute(2, 0, 3, 1, 4).contiguous().view(3, bsz * heads, rows, dh)
    q, k, v = qkvp
    p = torch.bmm(q, k.transpose(1, 2))
    # softmax over the last axis: the exponent from a kernel, torch's vectorized exp (faster than numba's here)
    K.shift_rows_(_n(p).reshape(-1, rows), scale)
    p.exp_()
    K.normalize_rows_(_n(p).reshape(-1, rows))
    o = torch.bmm(p, v)
    att = o.view(bsz, heads, rows, dh).transpose(1, 2).reshape(bsz * rows, d)
    return att, (qkvp, p)


def _attention_bwd(datt: torch.Tensor, saved, bsz: int, rows: int, heads: int, scale: float) -> torch.Tensor:
    qkvp, p = saved
    q, k, v = qkvp
    d = datt.shape[1]
    dh = d // heads
    do = datt.view(bsz, rows, heads, dh).transpose(1, 2).reshape(bsz * heads, rows, dh)
    dqkvp = torch.empty_like(qkvp)
    dp = torch.bmm(do, v.transpose(1, 2))
    K.softmax_bwd_(_n(dp).reshape(-1, rows), _n(p).reshape(-1, rows), scale)
    torch.bmm(p.transpose(1, 2), do, out=dqkvp[2])
    torch.bmm(dp, k, out=dqkvp[0])
    torch.bmm(dp.transpose(1, 2), q, out=dqkvp[1])
    return dqkvp.view(3, bsz, heads, rows, dh).permute(1, 3, 0, 2, 4).reshape(bsz * rows, 3 * d)


def _layer_norm_bwd(dy, ln, g, dx, accumulate: bool):
    xhat, rstd = ln
    dgp, dbp = _partials(dy.shape[1]), _partials(dy.shape[1])
    K.layer_norm_bwd(_n(dy), _n(xhat), _n(rstd), _n(g.detach()), _n(dx), accumulate, _n(dgp), _n(dbp))
    return dgp.sum(0), dbp.sum(0)


def encoder_backward(m, params, ctx_saved, dout: torch.Tensor) -> list[torch.Tensor]:
    tok, saved, lnf = ctx_saved
    bsz, rows, d, heads = tok.shape[0], m.rows, m.d, m.heads
    n_tok = bsz * rows
    scale = 1.0 / math.sqrt(d // heads)
    grads: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    dy = dout.reshape(n_tok, d).contiguous()
    dx = _empty(n_tok, d)
    grads[-2], grads[-1] = _layer_norm_bwd(dy, lnf, params[-2], dx, False)
    for i in reversed(range(len(m.blocks))):
        h1, ln1, attn_saved, att, h2, ln2, f, dmish = saved[i]
        g1, b1, wqkv, bqkv, wp, bp, g2, b2, w1, bf1, w2, bf2 = (p.detach() for p in params[4 + 12 * i: 16 + 12 * i])
        o = 4 + 12 * i
        # x2 = x1 + mish(h2 W1^T + b1) W2^T + b2
        grads[o + 10] = torch.mm(dx.t(), f)
        grads[o + 11] = dx.sum(0)
        df = torch.mm(dx, w2)
        part = _partials(df.shape[1])
        K.mul_colsum_(_n(df), _n(dmish), _n(part))
        grads[o + 9] = part.sum(0)
        grads[o + 8] = torch.mm(df.t(), h2)
        dh2 = torch.mm(df, w1)
        grads[o + 6], grads[o + 7] = _layer_norm_bwd(dh2, ln2, g2, dx, True)  # dx is now d loss / d x1
        # x1 = x0 + att Wp^T + bp
        grads[o + 4] = torch.mm(dx.t(), att)
        grads[o + 5] = dx.sum(0)
        datt = torch.mm(dx, wp)
        dqkv = _attention_bwd(datt, attn_saved, bsz, rows, heads, scale)
        grads[o + 2] = torch.mm(dqkv.t(), h1)
        grads[o + 3] = dqkv.sum(0)
        dh1 = torch.mm(dqkv, wqkv)
        grads[o + 0], grads[o + 1] = _layer_norm_bwd(dh1, ln1, g1, dx, True)  # d loss / d x0
    sp, kp, wpart = _partials((rows, d)), _partials(d), _partials((tok.shape[2], d))
    K.embed_bwd(_n(dx).reshape(bsz, rows, d), _n(tok), _n(sp), _n(kp), _n(wpart))
    dslot = sp.sum(0)
    dbias = dslot.sum(0)
    dtype1 = kp.sum(0)
    grads[0] = wpart.sum(0).t().contiguous()
    grads[1] = dbias
    grads[2] = torch.stack([dbias - dtype1, dtype1])
    grads[3] = dslot
    return grads


class _EncoderFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, obs, *params):
        out, saved = encoder_forward(m, obs, list(params), save=True)
        ctx.m, ctx.params, ctx.saved_state = m, params, saved
        return out

    @staticmethod
    def backward(ctx, dout):
        grads = encoder_backward(ctx.m, ctx.params, ctx.saved_state, dout)
        ctx.saved_state = None
        return (None, None, *grads)


def attention_encoder(m, obs: torch.Tensor) -> torch.Tensor:
    """``nets.AttentionEncoder.forward`` on the fused path."""
    params = encoder_params(m)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _EncoderFn.apply(m, obs, *params)
    return encoder_forward(m, obs, params, save=False)[0]


# --- diffusion actor: the reverse chain -----------------------------------------------------------------------
def chain_params(m) -> list[torch.Tensor]:
    """The chain's own parameters: W_x of layer 1, then weight and bias of each body layer."""
    ps = [m.in_x.weight]
    for layer in m.body:
        if isinstance(layer, torch.nn.Linear):
            ps += [layer.weight, layer.bias]
    return ps


def chain_forward(m, cond: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, noise: torch.Tensor,
                  params: list[torch.Tensor], save: bool):
    """The reverse DDPM chain of ``nets.DiffusionActor`` ``m`` from x_T = ``x``: layer 1 at step t is
    mish(cond + temb[t] + x_t W_x^T), then the body MLP gives eps. With ``save``, every step's activations go
    into (steps, B, .) stacks so that the backward computes each weight gradient with one matmul."""
    steps, bsz = m.steps, cond.shape[0]
    wx = params[0].detach()
    body = [(params[i].detach(), params[i + 1].detach()) for i in range(1, len(params), 2)]
    hidden = cond.shape[1]
    x = x.detach().contiguous()
    cond, temb, noise = cond.detach().contiguous(), temb.detach().contiguous(), noise.detach().contiguous()
    no_rows = torch.empty((0, 1))
    if save:
        xs = _empty(steps, *x.shape)  # the chain's input at each step, in the order the steps run
        masks = torch.empty_like(xs)
        acts = [_empty(steps, bsz, hidden) for _ in body]  # the input of each body layer (a Mish output)
        derivs = [_empty(steps, bsz, hidden) for _ in body]  # the Mish derivative of each of those
    for k, t in enumerate(reversed(range(steps))):
        a, b, c0, ct, std = m._coef[t]
        h = torch.addmm(cond, x, wx.t(), out=acts[0][k]) if save else torch.addmm(cond, x, wx.t())
        K.bias_mish_grad_(_n(h), _n(temb[t]), _n(derivs[0][k]) if save else _n(no_rows))
        for li, (w, bias) in enumerate(body[:-1]):
            if save:
                h = torch.addmm(bias, h, w.t(), out=acts[li + 1][k])
                K.mish_grad_(_n(h).reshape(-1), _n(derivs[li + 1][k]).reshape(-1))
            else:
                h = torch.addmm(bias, h, w.t())
                K.mish_(_n(h).reshape(-1))
        eps = torch.addmm(body[-1][1], h, body[-1][0].t())
        x_new = torch.empty_like(x)
        mask = masks[k] if save else torch.empty_like(x)
        if save:
            xs[k] = x
        K.chain_step(_n(x), _n(eps), _n(noise[t + 1]) if t > 0 else _n(no_rows), a, b, c0, ct, std, m.x0_clip,
                     _n(x_new), _n(mask))
        x = x_new
    return x, ((xs, masks, acts, derivs) if save else None)


def chain_backward(m, params, saved, g: torch.Tensor):
    """Gradients of the chain's output x_0 with respect to cond, temb and the chain's parameters."""
    xs, masks, acts, derivs = saved
    steps, bsz = m.steps, xs.shape[1]
    wx = params[0].detach()
    body = [(params[i].detach(), params[i + 1].detach()) for i in range(1, len(params), 2)]
    n_body = len(body)
    dpre = [_empty(steps, bsz, acts[0].shape[2]) for _ in range(n_body)]  # d loss / d pre-activation, per layer
    deps_all = _empty(steps, bsz, xs.shape[2])
    g = g.contiguous()
    deps = torch.empty_like(g)
    for k in reversed(range(steps)):
        t = steps - 1 - k
        a, b, c0, ct, std = m._coef[t]
        dx = torch.empty_like(g)
        K.chain_step_bwd(_n(g), _n(masks[k]), a, b, c0, ct, _n(deps), _n(dx))
        deps_all[k] = deps
        dh = torch.mm(deps, body[-1][0])
        for li in reversed(range(n_body)):
            dp = dpre[li][k]
            torch.mul(dh, derivs[li][k], out=dp)
            if li > 0:
                dh = torch.mm(dp, body[li - 1][0])
        dx.addmm_(dpre[0][k], wx)
        g = dx
    grads: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    flat = lambda t: t.reshape(steps * bsz, -1)  # noqa: E731
    grads[0] = torch.mm(flat(dpre[0]).t(), flat(xs))
    for li in range(n_body - 1):
        grads[1 + 2 * li] = torch.mm(flat(dpre[li + 1]).t(), flat(acts[li]))
        grads[2 + 2 * li] = flat(dpre[li + 1]).sum(0)
    grads[-2] = torch.mm(flat(deps_all).t(), flat(acts[-1]))
    grads[-1] = flat(deps_all).sum(0)
    dcond = dpre[0].sum(0)
    dtemb = dpre[0].sum(1).flip(0)  # the stacks run t = steps-1 .. 0
    return dcond, dtemb, grads


class _ChainFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, cond, temb, x, noise, *params):
        out, saved = chain_forward(m, cond, temb, x, noise, list(params), save=True)
        ctx.m, ctx.params, ctx.saved_state = m, params, saved
        return out

    @staticmethod
    def backward(ctx, g):
        dcond, dtemb, grads = chain_backward(ctx.m, ctx.params, ctx.saved_state, g)
        ctx.saved_state = None
        return (None, dcond, dtemb, None, None, *grads)


def diffusion_chain(m, cond: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The chain's output (the pre-tanh mean) on the fused path."""
    params = chain_params(m)
    if torch.is_grad_enabled() and (cond.requires_grad or temb.requires_grad or any(p.requires_grad for p in params)):
        return _ChainFn.apply(m, cond, temb, x, noise, *params)
    return chain_forward(m, cond, temb, x, noise, params, save=False)[0]


# --- twin critic ----------------------------------------------------------------------------------------------
def critic_forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], save: bool):
    """Both Q networks of ``nets.TwinCritic`` on input x (B, in): (2, B) values, and what the backward needs."""
    h = x.detach().expand(2, *x.shape)
    acts, derivs = [h], []
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = torch.baddbmm(b.detach(), h, w.detach())
        d = _mish_(h, save)
        if save:
            acts.append(h)
            derivs.append(d)
    q = torch.baddbmm(biases[-1].detach(), h, weights[-1].detach()).squeeze(-1)
    return q, ((acts, derivs) if save else None)


def critic_backward(weights, saved, dq: torch.Tensor, weight_grads: bool, input_grad: bool):
    """d loss / d input (B, in; None without ``input_grad``) and, if ``weight_grads``, the weight and bias
    gradients."""
    acts, derivs = saved
    dh = dq.unsqueeze(-1).contiguous()  # (2, B, 1)
    gw: list[torch.Tensor] = [None] * len(weights)  # type: ignore[list-item]
    gb: list[torch.Tensor] = [None] * len(weights)  # type: ignore[list-item]
    for i in reversed(range(len(weights))):
        if i < len(weights) - 1:
            dh = dh.mul_(derivs[i])  # through the Mish after layer i
        if weight_grads:
            gw[i] = torch.bmm(acts[i].transpose(1, 2), dh)
            gb[i] = dh.sum(1, keepdim=True)
        if i == 0 and not input_grad:
            return None, gw, gb
        dh = torch.bmm(dh, weights[i].detach().transpose(1, 2))
    return dh.sum(0), gw, gb


class _LayersFn(torch.autograd.Function):
    """A stack of layers (the twin critic, the Mish MLP) given its fused ``forward(x, weights, biases, save)`` and
    ``backward(weights, saved, grad, weight_grads, input_grad)``."""

    @staticmethod
    def forward(ctx, fwd, bwd, n_layers, x, *params):
        weights, biases = list(params[:n_layers]), list(params[n_layers:])
        out, saved = fwd(x, weights, biases, save=True)
        ctx.bwd, ctx.weights, ctx.saved_state = bwd, weights, saved
        ctx.weight_grads = any(p.requires_grad for p in params)
        return out

    @staticmethod
    def backward(ctx, grad):
        dx, gw, gb = ctx.bwd(ctx.weights, ctx.saved_state, grad, ctx.weight_grads, ctx.needs_input_grad[3])
        ctx.saved_state = None
        return (None, None, None, dx, *gw, *gb)


def twin_critic(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``nets.TwinCritic.forward`` on the fused path, x = [state features, action]."""
    params = [*weights, *biases]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _LayersFn.apply(critic_forward, critic_backward, len(weights), x, *params)
    return critic_forward(x, weights, biases, save=False)[0]


# --- Mish MLP (the Gaussian actor's trunk) --------------------------------------------------------------------
def mish_mlp_forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], save: bool):
    """mish(... mish(x W_1^T + b_1) ...) with Mish after every layer; with ``save``, what the backward needs."""
    h = x.detach().contiguous()
    acts, derivs = [h], []
    for w, b in zip(weights, biases, strict=True):
        h = torch.addmm(b.detach(), h, w.detach().t())
        d = _mish_(h, save)
        if save:
            acts.append(h)
            derivs.append(d)
    return h, ((acts, derivs) if save else None)


def mish_mlp_backward(weights, saved, g: torch.Tensor, weight_grads: bool, input_grad: bool):
    """d loss / d input (None without ``input_grad``) and, if ``weight_grads``, the weight and bias gradients."""
    acts, derivs = saved
    dh = g.contiguous().clone()
    gw: list[torch.Tensor] = [None] * len(weights)  # type: ignore[list-item]
    gb: list[torch.Tensor] = [None] * len(weights)  # type: ignore[list-item]
    for i in reversed(range(len(weights))):
        part = _partials(dh.shape[1])
        K.mul_colsum_(_n(dh), _n(derivs[i]), _n(part))
        if weight_grads:
            gb[i] = part.sum(0)
            gw[i] = torch.mm(dh.t(), acts[i])
        if i == 0 and not input_grad:
            return None, gw, gb
        dh = torch.mm(dh, weights[i].detach())
    return dh, gw, gb


def mish_mlp(layers: list[torch.nn.Linear], x: torch.Tensor) -> torch.Tensor:
    """``layers`` (Linear) each followed by Mish, on the fused path."""
    weights, biases = [lin.weight for lin in layers], [lin.bias for lin in layers]
    params = [*weights, *biases]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _LayersFn.apply(mish_mlp_forward, mish_mlp_backward, len(weights), x, *params)
    return mish_mlp_forward(x, weights, biases, save=False)[0]
