"""rms_norm: aten ``_fused_rms_norm`` / ``_fused_rms_norm_backward`` and ``gemsops.ops.rms_norm``.

``y = x * rstd * weight`` with ``rstd = rsqrt(mean(x^2) + eps)`` over the normalized
(trailing) dims, accumulated in fp32 and rounded once. As torch's kernel: the output has
the input's dtype (whatever the weight's), rstd is fp32 with the normalized dims kept as
size 1, and ``eps=None`` means fp32's machine epsilon (torch's opmath epsilon, also for
fp16/bf16 inputs). The backward writes dx row by row and the weight gradient as
per-program partial rows summed by a second kernel (no atomics, deterministic).
On torch builds without a native ``_fused_rms_norm_backward`` kernel for the device (the
CPU build), unsupported inputs go to torch's own decomposition.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import (VENDOR, Plans, Unsupported, declare, fallback, on_device, on_vendor_device, plain_tensors,
                       records_grad, with_fallback)
from ..runtime import registry
from ._rows import BackwardPlan, RowPlanner, column_sum, column_sum_launch, launcher, partial_programs, rows_2d
from ._common import allocation_stand_in, cdiv, needs_int64

__all__ = ["rms_norm"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FP32_EPS = torch.finfo(torch.float32).eps


@triton.jit
def _rms_fwd_kernel(
    y, rstd, x, w, eps, M, N, sx, sy,
    HAS_W: tl.constexpr, STATS: tl.constexpr, ONE_PASS: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
        r = tl.rsqrt(tl.sum(v * v, 1) / N + eps)
        out = v * r[:, None]
        if HAS_W:
            out = out * tl.load(w + cols, mask=cols < N, other=0.0).to(tl.float32)
        tl.store(yr + cols, out.to(y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            v = tl.load(xr + c, mask=rmask[:, None] & (c < N), other=0.0).to(tl.float32)
            acc += v * v
        r = tl.rsqrt(tl.sum(acc, 1) / N + eps)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            out = tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) * r[:, None]
            if HAS_W:
                out = out * tl.load(w + c, mask=c < N, other=0.0).to(tl.float32)
            tl.store(yr + c, out.to(y.dtype.element_ty), mask=mask)
    if STATS:
        tl.store(rstd + rows, r, mask=rmask)


@triton.jit
def _rms_bwd_kernel(
    dx, dw_part, g, x, rstd, w, M, N, sg, sx, sdx,
    HAS_W: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
    ONE_PASS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # dx = rstd * (w*g - xhat * mean(w*g*xhat)), xhat = x * rstd; dw = sum_rows(g * xhat).
    # Program p handles row blocks p, p + G, ... and owns row p of dw_part [G, N].
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)[None, :]
    if NEED_DW:
        part = dw_part + pid.to(tl.int64) * N
    if ONE_PASS:
        cmask = cols < N
        if HAS_W:
            wv = tl.load(w + cols, mask=cmask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for rb in range(pid, tl.cdiv(M, BLOCK_M), G):
        rows = (rb * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rmask = rows < M
        r = tl.load(rstd + rows, mask=rmask, other=0.0)[:, None]
        gr = g + rows[:, None] * sg
        xr = x + rows[:, None] * sx
        if NEED_DX:
            dr = dx + rows[:, None] * sdx
        if ONE_PASS:
            mask = rmask[:, None] & cmask
            gv = tl.load(gr + cols, mask=mask, other=0.0).to(tl.float32)
            xh = tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32) * r
            if NEED_DW:
                dw_acc += gv * xh
            if NEED_DX:
                wg = gv
                if HAS_W:
                    wg = gv * wv
                c = tl.sum(wg * xh, 1)[:, None] / N
                tl.store(dr + cols, ((wg - xh * c) * r).to(dx.dtype.element_ty), mask=mask)
        else:
            if NEED_DX:
                acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for start in range(0, N, BLOCK_N):
                    cc = start + cols
                    mask = rmask[:, None] & (cc < N)
                    gv = tl.load(gr + cc, mask=mask, other=0.0).to(tl.float32)
                    if HAS_W:
                        gv = gv * tl.load(w + cc, mask=cc < N, other=0.0).to(tl.float32)
                    acc += gv * tl.load(xr + cc, mask=mask, other=0.0).to(tl.float32)
                c = tl.sum(acc, 1)[:, None] * r / N
            for start in range(0, N, BLOCK_N):
                cc = start + cols
                mask = rmask[:, None] & (cc < N)
                gv = tl.load(gr + cc, mask=mask, other=0.0).to(tl.float32)
                xh = tl.load(xr + cc, mask=mask, other=0.0).to(tl.float32) * r
                if NEED_DW:
                    pc = part + cc
                    tl.store(pc, tl.load(pc, mask=cc < N, other=0.0) + tl.sum(gv * xh, 0)[None, :], mask=cc < N)
                if NEED_DX:
                    wg = gv
                    if HAS_W:
                        wg = gv * tl.load(w + cc, mask=cc < N, other=0.0).to(tl.float32)
                    tl.store(dr + cc, ((wg - xh * c) * r).to(dx.dtype.element_ty), mask=mask)
    if ONE_PASS:
        if NEED_DW:
            tl.store(part + cols, tl.sum(dw_acc, 0)[None, :], mask=cmask)


_L_rms_bwd_kernel = launcher(_rms_bwd_kernel)
_L_rms_fwd_kernel = launcher(_rms_fwd_kernel)
_FWD = RowPlanner("rms_norm_fwd", [_rms_fwd_kernel])
_BWD = RowPlanner("rms_norm_bwd", [_rms_bwd_kernel], cold=True)


def _shape_check(input, normalized_shape, weight):
    """(N, axis) for a supported call; Unsupported otherwise (torch raises its own errors)."""
    if not on_vendor_device(input, weight) or input.dtype not in KERNEL_DTYPES:
        raise Unsupported
    k = len(normalized_shape)
    if k == 0 or k > input.dim() or tuple(input.shape[input.dim() - k:]) != tuple(normalized_shape):
        raise Unsupported
    if weight is not None and (weight.dtype not in KERNEL_DTYPES or tuple(weight.shape) != tuple(normalized_shape)):
        raise Unsupported
    n = 1
    for s in normalized_shape:
        n *= s
    if n == 0:
        raise Unsupported  # rows of nothing: torch's NaN conventions
    return n, input.dim() - k


def rms_forward(input, normalized_shape, weight, eps, stats: bool = True):
    """(y, rstd) of ``_fused_rms_norm``; raises Unsupported for inputs the kernel skips.

    With ``stats`` False rstd is neither allocated nor stored, and None is returned for it.
    """
    eps = _FP32_EPS if eps is None else float(eps)
    sig = (input.shape, input.stride(), input.dtype, tuple(normalized_shape),
           None if weight is None else (weight.dtype, weight.stride()), stats)
    planned = _FORWARDS.get(sig)
    if planned is not None and on_device(input) and (weight is None or on_device(weight)):
        y_like, rstd_like, prepared = planned
        if y_like.get_device() == input.get_device():
            y = torch.empty_like(y_like)
            if not stats:
                prepared(y, y, input, weight, eps)
                return y, None
            rstd = torch.empty_like(rstd_like)
            prepared(y, rstd, input, weight, eps)
            return y, rstd
    n, axis = _shape_check(input, normalized_shape, weight)
    y = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    rstd = None
    if stats:
        rstd = torch.empty(input.shape[:axis] + (1,) * (input.dim() - axis), dtype=torch.float32,
                           device=input.device)
    m = input.numel() // n
    if m == 0:
        return y, rstd
    xv, sx = rows_2d(input, n)
    w = None if weight is None else weight.contiguous()
    int64 = needs_int64(xv, y)
    ints = (m, n, sx, n)

    def launch(p):
        bound = _L_rms_fwd_kernel.bind(
            HAS_W=w is not None, STATS=stats, ONE_PASS=p["ONE_PASS"], INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        grid = (cdiv(m, p["BLOCK_M"]),)
        bound(grid, y, y if rstd is None else rstd, xv, w, eps, *ints)
        return bound, grid

    bound, grid = launch(_FWD.plan(n, m, launch))
    if xv is input and w is weight:
        _FORWARDS.keep(sig, (allocation_stand_in(y), None if rstd is None else allocation_stand_in(rstd),
                             bound.prepare(grid, ints).planned))
    return y, rstd


# rms_forward call signature -> (allocation stand-ins of y and rstd, prepared launch)
_FORWARDS = Plans()


def rms_backward(grad_out, input, normalized_shape, rstd, weight, output_mask):
    """(dx, dw) of ``_fused_rms_norm_backward``; dw in the input's dtype as torch returns it."""
    need_dx, need_dw = bool(output_mask[0]), bool(output_mask[1]) and weight is not None
    sig = (grad_out.shape, grad_out.stride(), grad_out.dtype, input.shape, input.stride(), input.dtype,
           tuple(normalized_shape), rstd.shape, rstd.stride(), rstd.dtype,
           None if weight is None else (weight.dtype, weight.stride()), need_dx, need_dw)
    plan = _BACKWARDS.get(sig)
    if (plan is not None and on_device(input) and on_device(grad_out) and on_device(rstd)
            and (weight is None or on_device(weight)) and plan.device == input.get_device()):
        return plan(grad_out, input, rstd, weight)
    n, axis = _shape_check(input, normalized_shape, weight)
    if not on_vendor_device(grad_out, rstd) or grad_out.shape != input.shape or grad_out.dtype not in KERNEL_DTYPES:
        raise Unsupported
    m = input.numel() // n
    if rstd.numel() != m or rstd.dtype != torch.float32:
        raise Unsupported
    dx = torch.empty(input.shape, dtype=input.dtype, device=input.device) if need_dx else None
    dw = torch.empty(weight.shape, dtype=input.dtype, device=input.device) if need_dw else None
    if input.numel() == 0:
        if dw is not None:
            dw.zero_()
        return dx, dw
    if not (need_dx or need_dw):
        return dx, dw
    xv, sx = rows_2d(input, n)
    gv, sg = rows_2d(grad_out, n)
    r = rstd.contiguous()
    w = None if weight is None else weight.contiguous()
    chosen = {}

    def launch(p):
        G = partial_programs(cdiv(m, p["BLOCK_M"]), input.device)
        part = None
        if need_dw:  # the looped path accumulates into its partial row
            part = (torch.empty if p["ONE_PASS"] else torch.zeros)((G, n), dtype=torch.float32, device=input.device)
        bound = _L_rms_bwd_kernel.bind(
            HAS_W=w is not None, NEED_DX=need_dx, NEED_DW=need_dw, ONE_PASS=p["ONE_PASS"],
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        bound((G,), dx, part, gv, xv, r, w, m, n, sg, sx, n)
        chosen.update(part=part, bound=bound, G=G, zero=not p["ONE_PASS"])

    launch(_BWD.plan(n, m, launch, key=(need_dx, need_dw)))
    part = chosen["part"]
    if need_dw:
        column_sum(part, dw)
    if xv is input and gv is grad_out and r is rstd and w is weight:
        G = chosen["G"]
        _BACKWARDS.keep(sig, BackwardPlan(
            dx, (dw,), part, chosen["zero"], chosen["bound"].prepare((G,), (m, n, sg, sx, n)).planned,
            column_sum_launch(G, n, n, 1) if need_dw else None))
    return dx, dw


# rms_backward call signature -> BackwardPlan
_BACKWARDS = Plans()


@with_fallback("_fused_rms_norm")
def _fused_rms_norm(input, normalized_shape, weight, eps):
    """aten::_fused_rms_norm."""
    return rms_forward(input, normalized_shape, weight, eps)


@with_fallback("_fused_rms_norm_backward")
def _fused_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight, output_mask):
    """aten::_fused_rms_norm_backward."""
    return rms_backward(grad_out, input, normalized_shape, rstd, weight, output_mask)


def rms_norm_output(input, normalized_shape, weight=None, eps=None):
    """aten::rms_norm where no gradient is recorded: y alone, in one dispatch.

    Torch's composite dispatches ``_fused_rms_norm`` and drops its rstd; taking ``rms_norm``
    itself (declared at the autograd level) saves that dispatch, a two-output return and
    the rstd allocation and store. Calls that record a gradient or forward-mode AD, tensors
    under tracing or dispatch modes, and a weight of another dtype (torch's composite then
    computes unfused, in its own rounding) take the composite, whose ``_fused_rms_norm`` is
    gems' kernel again.
    """
    if (records_grad(input, weight) or not plain_tensors(input, weight)
            or (weight is not None and weight.dtype != input.dtype)):
        return fallback("rms_norm", input, normalized_shape, weight, eps)
    try:
        return rms_forward(input, normalized_shape, weight, eps, stats=False)[0]
    except Unsupported:
        return fallback("rms_norm", input, normalized_shape, weight, eps)


def _native_backward_or_decomposition():
    """Torch's CPU build has no ``_fused_rms_norm_backward`` kernel, yet autograd calls it
    once gems serves ``_fused_rms_norm`` there; torch's own decomposition stands in as the
    native kernel for inputs the gems kernel does not take."""
    if VENDOR is None or not hasattr(torch.ops.aten, "_fused_rms_norm_backward"):
        return
    try:
        torch.library.get_kernel(torch.ops.aten._fused_rms_norm_backward.default, VENDOR.dispatch_key)
    except RuntimeError:
        from torch._decomp.decompositions import _fused_rms_norm_backward as decomposition

        registry._NATIVE.setdefault("_fused_rms_norm_backward", decomposition)


_native_backward_or_decomposition()


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """``torch.nn.functional.rms_norm`` through the gems kernels (differentiable)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    if not records_grad(input, weight):  # inference: no autograd node to build, no rstd
        return rms_norm_output(input, list(normalized_shape), weight, eps)
    return _RMSNormFn.apply(input, tuple(normalized_shape), weight, eps)


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, eps):
        y, rstd = _fused_rms_norm(x, list(normalized_shape), weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        ctx.normalized_shape = list(normalized_shape)
        return y

    @staticmethod
    def backward(ctx, g):
        x, rstd, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[2]]
        dx, dw = _fused_rms_norm_backward(g, x, ctx.normalized_shape, rstd, weight, mask)
        if dw is not None and weight is not None:
            dw = dw.to(weight.dtype)
        return dx, None, dw, None


declare("rms_norm", {
    "_fused_rms_norm": _fused_rms_norm,
    "_fused_rms_norm_backward": _fused_rms_norm_backward,
})
declare("rms_norm", {"rms_norm": rms_norm_output}, autograd=True)
