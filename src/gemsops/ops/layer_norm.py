"""layer_norm: aten ``native_layer_norm`` and ``native_layer_norm_backward``.

Forward: mean and variance of each row in fp32 (two-pass over registers when the row fits,
three looped passes when it does not: sum, centred squares, write), ``y = (x - mean) *
rstd * w + b`` rounded once. ``mean``/``rstd`` have torch's shapes (normalized dims kept as
size 1) and dtypes: fp32 on CUDA; on CPU the input's dtype unless weight/bias differ
(torch's "mixed type" rule, which only its CPU kernel has: on CUDA, parameters of another
dtype go to torch's kernel and its error). Backward: ``dx = rstd * (wg - mean(wg) - xhat *
mean(wg * xhat))``; weight and bias gradients are per-program partial rows summed by a second kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import (Plans, Unsupported, declare, fallback, on_device, on_vendor_device, plain_tensors,
                       records_grad, with_fallback)
from ._rows import BackwardPlan, RowPlanner, column_sum, column_sum_launch, launcher, partial_programs, rows_2d
from ._common import allocation_stand_in, cdiv, needs_int64

__all__ = ["layer_norm"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _ln_fwd_kernel(
    y, mean_ptr, rstd_ptr, x, w, b, eps, M, N, sx, sy,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, STATS: tl.constexpr, ONE_PASS: tl.constexpr,
    INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    rmask = rows < M
    xr = x + rows[:, None] * sx
    yr = y + rows[:, None] * sy
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < N)
        v = tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(v, 1) / N
        xc = tl.where(mask, v - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, 1) / N + eps)
        out = xc * rstd[:, None]
        if HAS_W:
            out = out * tl.load(w + cols, mask=cols < N, other=0.0).to(tl.float32)
        if HAS_B:
            out = out + tl.load(b + cols, mask=cols < N, other=0.0).to(tl.float32)
        tl.store(yr + cols, out.to(y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            acc += tl.load(xr + c, mask=rmask[:, None] & (c < N), other=0.0).to(tl.float32)
        mean = tl.sum(acc, 1) / N
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            xc = tl.where(mask, tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mean[:, None], 0.0)
            acc += xc * xc
        rstd = tl.rsqrt(tl.sum(acc, 1) / N + eps)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            out = (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
            if HAS_W:
                out = out * tl.load(w + c, mask=c < N, other=0.0).to(tl.float32)
            if HAS_B:
                out = out + tl.load(b + c, mask=c < N, other=0.0).to(tl.float32)
            tl.store(yr + c, out.to(y.dtype.element_ty), mask=mask)
    if STATS:
        tl.store(mean_ptr + rows, mean.to(mean_ptr.dtype.element_ty), mask=rmask)
        tl.store(rstd_ptr + rows, rstd.to(rstd_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _ln_bwd_kernel(
    dx, part, g, x, mean_ptr, rstd_ptr, w, M, N, sg, sx, sdx,
    HAS_W: tl.constexpr, NEED_DX: tl.constexpr, NEED_P: tl.constexpr,
    ONE_PASS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # program p handles row blocks p, p + G, ...; part [G, 2, N] holds its sums of g*xhat
    # (weight gradient) and of g (bias gradient)
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)[None, :]
    if NEED_P:
        prow = part + pid.to(tl.int64) * 2 * N
    if ONE_PASS:
        cmask = cols < N
        if HAS_W:
            wv = tl.load(w + cols, mask=cmask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        db_acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for rb in range(pid, tl.cdiv(M, BLOCK_M), G):
        rows = (rb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rmask = rows < M
        mu = tl.load(mean_ptr + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
        r = tl.load(rstd_ptr + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
        gr = g + rows[:, None] * sg
        xr = x + rows[:, None] * sx
        if NEED_DX:
            dr = dx + rows[:, None] * sdx
        if ONE_PASS:
            mask = rmask[:, None] & cmask
            gv = tl.load(gr + cols, mask=mask, other=0.0).to(tl.float32)
            xh = tl.where(mask, (tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
            if NEED_P:
                dw_acc += gv * xh
                db_acc += gv
            if NEED_DX:
                wg = gv
                if HAS_W:
                    wg = gv * wv
                c1 = tl.sum(wg * xh, 1)[:, None] / N
                c2 = tl.sum(wg, 1)[:, None] / N
                tl.store(dr + cols, ((wg - c2 - xh * c1) * r).to(dx.dtype.element_ty), mask=mask)
        else:
            if NEED_DX:
                a1 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                a2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for start in range(0, N, BLOCK_N):
                    cc = start + cols
                    mask = rmask[:, None] & (cc < N)
                    wg = tl.load(gr + cc, mask=mask, other=0.0).to(tl.float32)
                    if HAS_W:
                        wg = wg * tl.load(w + cc, mask=cc < N, other=0.0).to(tl.float32)
                    xh = tl.where(mask, (tl.load(xr + cc, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
                    a1 += wg * xh
                    a2 += wg
                c1 = tl.sum(a1, 1)[:, None] / N
                c2 = tl.sum(a2, 1)[:, None] / N
            for start in range(0, N, BLOCK_N):
                cc = start + cols
                mask = rmask[:, None] & (cc < N)
                gv = tl.load(gr + cc, mask=mask, other=0.0).to(tl.float32)
                xh = tl.where(mask, (tl.load(xr + cc, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
                if NEED_P:
                    pw = prow + cc
                    tl.store(pw, tl.load(pw, mask=cc < N, other=0.0) + tl.sum(gv * xh, 0)[None, :], mask=cc < N)
                    pb = prow + N + cc
                    tl.store(pb, tl.load(pb, mask=cc < N, other=0.0) + tl.sum(gv, 0)[None, :], mask=cc < N)
                if NEED_DX:
                    wg = gv
                    if HAS_W:
                        wg = gv * tl.load(w + cc, mask=cc < N, other=0.0).to(tl.float32)
                    tl.store(dr + cc, ((wg - c2 - xh * c1) * r).to(dx.dtype.element_ty), mask=mask)
    if ONE_PASS:
        if NEED_P:
            tl.store(prow + cols, tl.sum(dw_acc, 0)[None, :], mask=cmask)
            tl.store(prow + N + cols, tl.sum(db_acc, 0)[None, :], mask=cmask)


_L_ln_bwd_kernel = launcher(_ln_bwd_kernel)
_L_ln_fwd_kernel = launcher(_ln_fwd_kernel)
_FWD = RowPlanner("layer_norm_fwd", [_ln_fwd_kernel])
_BWD = RowPlanner("layer_norm_bwd", [_ln_bwd_kernel], cold=True)


def _check(input, normalized_shape, weight, bias):
    if not on_vendor_device(input, weight, bias) or input.dtype not in KERNEL_DTYPES:
        raise Unsupported
    k = len(normalized_shape)
    if k == 0 or k > input.dim() or tuple(input.shape[input.dim() - k:]) != tuple(normalized_shape):
        raise Unsupported
    for p in (weight, bias):
        if p is not None and (p.dtype not in KERNEL_DTYPES or tuple(p.shape) != tuple(normalized_shape)):
            raise Unsupported
        if p is not None and p.dtype != input.dtype and input.device.type != "cpu":
            raise Unsupported  # only torch's CPU kernel mixes dtypes; CUDA's raises, and so must gems
    n = 1
    for s in normalized_shape:
        n *= s
    if n == 0:
        raise Unsupported
    return n, input.dim() - k


def _stat_dtype(input, weight, bias):
    if input.device.type == "cuda":
        return torch.float32
    mixed = any(p is not None and p.dtype != input.dtype for p in (weight, bias))
    return torch.float32 if mixed else input.dtype


@with_fallback("native_layer_norm")
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """aten::native_layer_norm."""
    return _forward(input, normalized_shape, weight, bias, eps, True)


def _forward(input, normalized_shape, weight, bias, eps, stats: bool):
    """(y, mean, rstd); mean and rstd are None, and not computed, when ``stats`` is False."""
    sig = (input.shape, input.stride(), input.dtype, tuple(normalized_shape),
           None if weight is None else (weight.dtype, weight.stride()),
           None if bias is None else (bias.dtype, bias.stride()), stats)
    planned = _FORWARDS.get(sig)
    if planned is not None and on_device(input) and on_vendor_device(weight, bias):
        y_like, stats_like, prepared = planned
        if y_like.get_device() == input.get_device():
            # allocations are most of a small layer norm's host cost
            y = torch.empty_like(y_like)
            if not stats:
                prepared(y, y, y, input, weight, bias, float(eps))
                return y, None, None
            mean = torch.empty_like(stats_like)
            rstd = torch.empty_like(stats_like)
            prepared(y, mean, rstd, input, weight, bias, float(eps))
            return y, mean, rstd
    n, axis = _check(input, normalized_shape, weight, bias)
    y = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    stat_shape = input.shape[:axis] + (1,) * (input.dim() - axis)
    mean = rstd = None
    if stats:
        sdt = _stat_dtype(input, weight, bias)
        mean = torch.empty(stat_shape, dtype=sdt, device=input.device)
        rstd = torch.empty(stat_shape, dtype=sdt, device=input.device)
    m = input.numel() // n
    if m == 0:
        return y, mean, rstd
    xv, sx = rows_2d(input, n)
    w = None if weight is None else weight.contiguous()
    b = None if bias is None else bias.contiguous()
    int64 = needs_int64(xv, y)
    ints = (m, n, sx, n)

    def launch(p):
        bound = _L_ln_fwd_kernel.bind(
            HAS_W=w is not None, HAS_B=b is not None, STATS=stats, ONE_PASS=p["ONE_PASS"], INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        grid = (cdiv(m, p["BLOCK_M"]),)
        bound(grid, y, y if mean is None else mean, y if rstd is None else rstd, xv, w, b, float(eps), *ints)
        return bound, grid

    bound, grid = launch(_FWD.plan(n, m, launch))
    if xv is input and w is weight and b is bias:
        _FORWARDS.keep(sig, (allocation_stand_in(y), None if mean is None else allocation_stand_in(mean),
                             bound.prepare(grid, ints).planned))
    return y, mean, rstd


# _forward's call signature -> (allocation stand-ins of y and of the stats, prepared launch)
_FORWARDS = Plans()


def layer_norm_output(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """aten::layer_norm where no gradient is asked for: y alone, in one dispatch.

    Torch's composite would dispatch native_layer_norm and return its first output; taking
    ``layer_norm`` itself (declared at the autograd level) saves a dispatch and the mean
    and rstd, a third of a small layer norm's host cost. Calls that record autograd or
    forward-mode AD, and tensors under tracing or dispatch modes, take the composite, whose
    native_layer_norm is gems' kernel again.
    """
    if records_grad(input, weight, bias) or not plain_tensors(input, weight, bias):
        return fallback("layer_norm", input, normalized_shape, weight, bias, eps, cudnn_enable)
    try:
        return _forward(input, normalized_shape, weight, bias, eps, False)[0]
    except Unsupported:
        return fallback("layer_norm", input, normalized_shape, weight, bias, eps, cudnn_enable)


@with_fallback("native_layer_norm_backward")
def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    """aten::native_layer_norm_backward."""
    need_dx = bool(output_mask[0])
    need_dw = bool(output_mask[1]) and weight is not None
    need_db = bool(output_mask[2]) and bias is not None
    sig = (grad_out.shape, grad_out.stride(), grad_out.dtype, input.shape, input.stride(), input.dtype,
           tuple(normalized_shape), mean.shape, mean.stride(), mean.dtype, rstd.shape, rstd.stride(), rstd.dtype,
           None if weight is None else (weight.dtype, weight.stride()),
           None if bias is None else (bias.dtype, bias.stride()), need_dx, need_dw, need_db)
    plan = _BACKWARDS.get(sig)
    if (plan is not None and on_device(input) and on_device(grad_out) and on_device(mean) and on_device(rstd)
            and on_vendor_device(weight, bias) and plan.device == input.get_device()):
        return plan(grad_out, input, mean, rstd, weight)
    n, axis = _check(input, normalized_shape, weight, bias)
    if not on_vendor_device(grad_out, mean, rstd) or grad_out.shape != input.shape \
            or grad_out.dtype not in KERNEL_DTYPES:
        raise Unsupported
    m = input.numel() // n
    if mean.numel() != m or rstd.numel() != m:
        raise Unsupported
    dev = input.device
    dx = torch.empty(input.shape, dtype=input.dtype, device=dev) if need_dx else None
    dw = torch.empty(weight.shape, dtype=weight.dtype, device=dev) if need_dw else None
    db = torch.empty(bias.shape, dtype=bias.dtype, device=dev) if need_db else None
    if m == 0:
        for t in (dw, db):
            if t is not None:
                t.zero_()
        return dx, dw, db
    if not (need_dx or need_dw or need_db):
        return dx, dw, db
    xv, sx = rows_2d(input, n)
    gv, sg = rows_2d(grad_out, n)
    mu, r = mean.contiguous(), rstd.contiguous()
    w = None if weight is None else weight.contiguous()
    need_p = need_dw or need_db
    chosen = {}

    def launch(p):
        G = partial_programs(cdiv(m, p["BLOCK_M"]), dev)
        part = None
        if need_p:  # the looped path accumulates into its partial rows
            part = (torch.empty if p["ONE_PASS"] else torch.zeros)((G, 2 * n), dtype=torch.float32, device=dev)
        bound = _L_ln_bwd_kernel.bind(
            HAS_W=w is not None, NEED_DX=need_dx, NEED_P=need_p, ONE_PASS=p["ONE_PASS"],
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        bound((G,), dx, part, gv, xv, mu, r, w, m, n, sg, sx, n)
        chosen.update(part=part, bound=bound, G=G, zero=not p["ONE_PASS"])

    launch(_BWD.plan(n, m, launch, key=(need_dx, need_p)))
    # the partial rows hold [weight sums | bias sums]; each half is summed straight into
    # its gradient (dw and db are fresh contiguous tensors), rounded once, in one launch
    G, part = chosen["G"], chosen["part"]
    sums = [t for t in (dw, db) if t is not None]
    first = 0 if need_dw else n
    if sums:
        column_sum(part, *sums, first=first)
    if xv is input and gv is grad_out and mu is mean and r is rstd and w is weight:
        colsum = column_sum_launch(G, n, 2 * n, len(sums), first) if sums else None
        _BACKWARDS.keep(sig, BackwardPlan(dx, (dw, db), part, chosen["zero"],
                                          chosen["bound"].prepare((G,), (m, n, sg, sx, n)).planned, colsum))
    return dx, dw, db


# native_layer_norm_backward call signature -> BackwardPlan
_BACKWARDS = Plans()


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.layer_norm`` through the gems kernels (differentiable)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    if not records_grad(input, weight, bias):
        return native_layer_norm(input, list(normalized_shape), weight, bias, eps)[0]
    return _LayerNormFn.apply(input, tuple(normalized_shape), weight, bias, eps)


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        y, mean, rstd = native_layer_norm(x, list(normalized_shape), weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        ctx.normalized_shape = list(normalized_shape)
        return y

    @staticmethod
    def backward(ctx, g):
        x, mean, rstd, weight, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [need[0], weight is not None and need[2], bias is not None and need[3]]
        dx, dw, db = native_layer_norm_backward(g, x, ctx.normalized_shape, mean, rstd, weight, bias, mask)
        return dx, None, dw, db, None


declare("layer_norm", {
    "native_layer_norm": native_layer_norm,
    "native_layer_norm_backward": native_layer_norm_backward,
})
declare("layer_norm", {"layer_norm": layer_norm_output}, autograd=True)
