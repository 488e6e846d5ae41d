"""fused_add_rms_norm (vLLM semantics): ``residual += x; x = rms_norm(residual) * weight``.

In place on ``x`` and ``residual``, returning ``(x, residual)``. The sum is rounded to the
residual's dtype first and the norm is taken of that rounded sum (what later layers read),
accumulating in fp32. Rows wider than the one-pass limit are read twice: the first pass
only accumulates (it must not overwrite ``residual`` before the second pass re-reads it).
When autograd needs gradients the op runs out of place (in-place updates of tensors that
require grad are not allowed) and the backward uses the rms_norm backward kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import Plans, on_vendor_device, records_grad
from ._rows import RowPlanner, launcher, rows_2d
from .rms_norm import KERNEL_DTYPES, _fused_rms_norm_backward
from ._common import cdiv, needs_int64

__all__ = ["fused_add_rms_norm"]


@triton.jit
def _add_rms_kernel(
    y, s_out, rstd, x, res, w, eps, M, N, sx, sr, sy, ss,
    HAS_W: tl.constexpr, STORE_RSTD: tl.constexpr, ONE_PASS: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    rmask = rows < M
    xr = x + rows[:, None] * sx
    rr = res + rows[:, None] * sr
    yr = y + rows[:, None] * sy
    sr_ = s_out + rows[:, None] * ss
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < N)
        s = (tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32)
             + tl.load(rr + cols, mask=mask, other=0.0).to(tl.float32)).to(s_out.dtype.element_ty)
        tl.store(sr_ + cols, s, mask=mask)
        v = s.to(tl.float32)
        r = tl.rsqrt(tl.sum(v * v, 1) / N + eps)
        out = v * r[:, None]
        if HAS_W:
            out = out * tl.load(w + cols, mask=cols < N, other=0.0).to(tl.float32)
        tl.store(yr + cols, out.to(y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            v = (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32)
                 + tl.load(rr + c, mask=mask, other=0.0).to(tl.float32)).to(s_out.dtype.element_ty).to(tl.float32)
            acc += v * v
        r = tl.rsqrt(tl.sum(acc, 1) / N + eps)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            s = (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32)
                 + tl.load(rr + c, mask=mask, other=0.0).to(tl.float32)).to(s_out.dtype.element_ty)
            tl.store(sr_ + c, s, mask=mask)
            out = s.to(tl.float32) * r[:, None]
            if HAS_W:
                out = out * tl.load(w + c, mask=c < N, other=0.0).to(tl.float32)
            tl.store(yr + c, out.to(y.dtype.element_ty), mask=mask)
    if STORE_RSTD:
        tl.store(rstd + rows, r, mask=rmask)


_L_add_rms_kernel = launcher(_add_rms_kernel)
_PLANNER = RowPlanner("fused_add_rms_norm", [_add_rms_kernel])


def _torch_fused_add_rms_norm(x, residual, weight, eps):
    """The same semantics in plain torch, for inputs the kernel does not take."""
    residual.add_(x)
    acc = torch.promote_types(residual.dtype, torch.float32)
    v = residual.to(acc)
    v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        v = v * weight.to(acc)
    x.copy_(v)
    return x, residual


def _supported(x, residual, weight) -> bool:
    return (on_vendor_device(x, residual, weight) and x.dtype in KERNEL_DTYPES and residual.dtype in KERNEL_DTYPES
            and x.shape == residual.shape and x.dim() >= 1 and x.shape[-1] > 0
            and (weight is None or (weight.dtype in KERNEL_DTYPES and tuple(weight.shape) == (x.shape[-1],))))


def _launch(y, s_out, rstd, x, residual, weight, eps):
    n = x.shape[-1]
    m = x.numel() // n
    if m == 0:
        return
    xv, sx = rows_2d(x, n)
    rv, sr = rows_2d(residual, n)
    yv, sy = rows_2d(y, n)
    sv, ss = rows_2d(s_out, n)
    w = None if weight is None else weight.contiguous()
    int64 = needs_int64(xv, rv, yv, sv)

    def launch(p, y_, s_, sy_, ss_):
        _L_add_rms_kernel(
            (cdiv(m, p["BLOCK_M"]),), y_, s_, rstd, xv, rv, w, float(eps), m, n, sx, sr, sy_, ss_,
            HAS_W=w is not None, STORE_RSTD=rstd is not None, ONE_PASS=p["ONE_PASS"], INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"],
        )

    def trial(p):  # tuning runs write scratch rows: the real outputs may alias the inputs
        launch(p, torch.empty((m, n), dtype=y.dtype, device=y.device),
               torch.empty((m, n), dtype=s_out.dtype, device=y.device), n, n)

    p = _PLANNER.plan(n, m, trial, key=(x.dtype, residual.dtype))
    launch(p, yv, sv, sy, ss)
    if y is x and s_out is residual and rstd is None and xv is x and rv is residual and w is weight:
        # the in-place call: later calls of this signature go straight to the launch
        bound = _L_add_rms_kernel.bind(
            HAS_W=w is not None, STORE_RSTD=False, ONE_PASS=p["ONE_PASS"], INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        _PLANS.keep(_signature(x, residual, weight), bound.prepare((cdiv(m, p["BLOCK_M"]),), (m, n, sx, sr, sx, sr)).planned)
    # views that could not be addressed as rows were computed in copies: write them back
    if yv.data_ptr() != y.data_ptr() or yv.shape != y.shape:
        y.copy_(yv.view(y.shape))
    if sv.data_ptr() != s_out.data_ptr() or sv.shape != s_out.shape:
        s_out.copy_(sv.view(s_out.shape))


def fused_add_rms_norm(x, residual, weight, eps=1e-6):
    """vLLM's fused_add_rms_norm: ``residual += x; x = rms_norm(residual) * weight`` in place; returns (x, residual).

    When autograd records (some input requires grad), new tensors are returned instead and
    the inputs are left untouched.
    """
    if records_grad(x, residual, weight):
        return _FusedAddRMSNormFn.apply(x, residual, weight, eps)
    prepared = _PLANS.get(_signature(x, residual, weight))
    if prepared is not None:
        prepared(x, residual, None, x, residual, weight, float(eps))
        return x, residual
    if not _supported(x, residual, weight):
        return _torch_fused_add_rms_norm(x, residual, weight, eps)
    _launch(x, residual, None, x, residual, weight, eps)
    return x, residual


# in-place call signature -> prepared launch; see _launch
_PLANS = Plans()


def _signature(x, residual, weight):
    return (x.shape, x.stride(), x.dtype, x.device, residual.shape, residual.stride(), residual.dtype,
            None if weight is None else (weight.shape, weight.stride(), weight.dtype, weight.device))


class _FusedAddRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, eps):
        if _supported(x, residual, weight):
            y = torch.empty_like(x, memory_format=torch.contiguous_format)
            s = torch.empty_like(residual, memory_format=torch.contiguous_format)
            rstd = torch.empty(x.shape[:-1] + (1,), dtype=torch.float32, device=x.device)
            _launch(y, s, rstd, x, residual, weight, eps)
        else:
            acc = torch.promote_types(residual.dtype, torch.float32)
            s = (x.to(acc) + residual.to(acc)).to(residual.dtype)
            v = s.to(acc)
            rstd = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
            y = v * rstd
            if weight is not None:
                y = y * weight.to(acc)
            y = y.to(x.dtype)
        ctx.save_for_backward(s, rstd, weight)
        ctx.x_dtype = x.dtype
        return y, s

    @staticmethod
    def backward(ctx, gy, gs):
        s, rstd, weight = ctx.saved_tensors
        if gy is None:
            gy = torch.zeros_like(s)
        need_w = weight is not None and ctx.needs_input_grad[2]
        ds, dw = _fused_rms_norm_backward(gy.to(s.dtype), s, [s.shape[-1]], rstd, weight, [True, need_w])
        if gs is not None:
            ds = ds + gs
        if dw is not None:
            dw = dw.to(weight.dtype)
        return ds.to(ctx.x_dtype), ds, dw, None
