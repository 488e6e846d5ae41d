"""group_norm: aten ``native_group_norm`` and ``native_group_norm_backward``.

A contiguous ``[N, C, *]`` input is ``N * group`` rows of ``C / group * HxW`` elements; each
program normalizes rows with fp32 statistics (whole row in registers when it fits, else
looped passes), applying the per-channel affine of column ``c = g * C/group + col // HxW``.
``mean``/``rstd`` are ``[N, group]`` in the input's dtype, fp32 when the parameters are fp32
on a reduced-precision input (torch's rule). The backward writes dx with a row kernel;
the per-channel weight/bias gradients come from per-(n, c) sums done with torch ops.
Channels-last and other layouts go to torch's kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, declare, on_vendor_device, records_grad, with_fallback
from ._rows import RowPlanner, launcher
from ._common import cdiv, needs_int64

__all__ = ["group_norm"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _gn_fwd_kernel(
    y, mean_ptr, rstd_ptr, x, w, b, M, L, HW, CPG, GROUPS, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ONE_PASS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < M
    xr = x + rows[:, None] * L
    yr = y + rows[:, None] * L
    ch0 = ((rows % GROUPS) * CPG)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < L)
        v = tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(v, 1) / L
        xc = tl.where(mask, v - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, 1) / L + eps)
        out = xc * rstd[:, None]
        ch = ch0 + cols // HW
        if HAS_W:
            out = out * tl.load(w + ch, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            out = out + tl.load(b + ch, mask=mask, other=0.0).to(tl.float32)
        tl.store(yr + cols, out.to(y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, L, BLOCK_N):
            c = start + cols
            acc += tl.load(xr + c, mask=rmask[:, None] & (c < L), other=0.0).to(tl.float32)
        mean = tl.sum(acc, 1) / L
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, L, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < L)
            xc = tl.where(mask, tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mean[:, None], 0.0)
            acc += xc * xc
        rstd = tl.rsqrt(tl.sum(acc, 1) / L + eps)
        for start in range(0, L, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < L)
            out = (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
            ch = ch0 + c // HW
            if HAS_W:
                out = out * tl.load(w + ch, mask=mask, other=0.0).to(tl.float32)
            if HAS_B:
                out = out + tl.load(b + ch, mask=mask, other=0.0).to(tl.float32)
            tl.store(yr + c, out.to(y.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean.to(mean_ptr.dtype.element_ty), mask=rmask)
    tl.store(rstd_ptr + rows, rstd.to(rstd_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _gn_bwd_dx_kernel(
    dx, g, x, mean_ptr, rstd_ptr, w, M, L, HW, CPG, GROUPS,
    HAS_W: tl.constexpr, ONE_PASS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # dx = rstd * (wg - mean(wg) - xhat * mean(wg * xhat)) over the group's elements
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < M
    mu = tl.load(mean_ptr + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
    r = tl.load(rstd_ptr + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
    gr = g + rows[:, None] * L
    xr = x + rows[:, None] * L
    dr = dx + rows[:, None] * L
    ch0 = ((rows % GROUPS) * CPG)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < L)
        wg = tl.load(gr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_W:
            wg = wg * tl.load(w + ch0 + cols // HW, mask=mask, other=0.0).to(tl.float32)
        xh = tl.where(mask, (tl.load(xr + cols, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
        c1 = tl.sum(wg * xh, 1)[:, None] / L
        c2 = tl.sum(wg, 1)[:, None] / L
        tl.store(dr + cols, ((wg - c2 - xh * c1) * r).to(dx.dtype.element_ty), mask=mask)
    else:
        a1 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        a2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, L, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < L)
            wg = tl.load(gr + c, mask=mask, other=0.0).to(tl.float32)
            if HAS_W:
                wg = wg * tl.load(w + ch0 + c // HW, mask=mask, other=0.0).to(tl.float32)
            xh = tl.where(mask, (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
            a1 += wg * xh
            a2 += wg
        c1 = tl.sum(a1, 1)[:, None] / L
        c2 = tl.sum(a2, 1)[:, None] / L
        for start in range(0, L, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < L)
            wg = tl.load(gr + c, mask=mask, other=0.0).to(tl.float32)
            if HAS_W:
                wg = wg * tl.load(w + ch0 + c // HW, mask=mask, other=0.0).to(tl.float32)
            xh = tl.where(mask, (tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mu) * r, 0.0)
            tl.store(dr + c, ((wg - c2 - xh * c1) * r).to(dx.dtype.element_ty), mask=mask)


_L_gn_bwd_dx_kernel = launcher(_gn_bwd_dx_kernel)
_L_gn_fwd_kernel = launcher(_gn_fwd_kernel)
_FWD = RowPlanner("group_norm_fwd", [_gn_fwd_kernel])
_BWD = RowPlanner("group_norm_bwd", [_gn_bwd_dx_kernel])


def _check(input, weight, bias, N, C, HxW, group):
    if not on_vendor_device(input, weight, bias) or input.dtype not in KERNEL_DTYPES:
        raise Unsupported
    if input.dim() < 2 or not input.is_contiguous() or group <= 0 or C % group or N * C * HxW != input.numel():
        raise Unsupported
    for p in (weight, bias):
        if p is not None and (p.dtype not in KERNEL_DTYPES or p.numel() != C):
            raise Unsupported
    if needs_int64(input) or input.numel() == 0:
        raise Unsupported  # empty inputs: torch's NaN/shape conventions


def _stat_dtype(input, weight, bias):
    mixed = any(p is not None and p.dtype != input.dtype for p in (weight, bias))
    return torch.float32 if mixed else input.dtype


@with_fallback("native_group_norm")
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    """aten::native_group_norm."""
    _check(input, weight, bias, N, C, HxW, group)
    sdt = _stat_dtype(input, weight, bias)
    y = torch.empty_like(input)
    mean = torch.empty((N, group), dtype=sdt, device=input.device)
    rstd = torch.empty((N, group), dtype=sdt, device=input.device)
    m, cpg = N * group, C // group
    length = cpg * HxW
    w = None if weight is None else weight.contiguous()
    b = None if bias is None else bias.contiguous()

    def launch(p):
        _L_gn_fwd_kernel(
            (cdiv(m, p["BLOCK_M"]),), y, mean, rstd, input, w, b, m, length, HxW, cpg, group, float(eps),
            HAS_W=w is not None, HAS_B=b is not None, ONE_PASS=p["ONE_PASS"],
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"],
        )

    launch(_FWD.plan(length, m, launch))
    return y, mean, rstd


@with_fallback("native_group_norm_backward")
def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask):
    """aten::native_group_norm_backward."""
    _check(input, weight, None, N, C, HxW, group)
    if not on_vendor_device(grad_out, mean, rstd) or grad_out.shape != input.shape \
            or grad_out.dtype not in KERNEL_DTYPES or mean.numel() != N * group or rstd.numel() != N * group:
        raise Unsupported
    if weight is None and (output_mask[1] or output_mask[2]):
        raise Unsupported  # torch decides what a parameter gradient without a weight means
    g = grad_out.contiguous()
    m, cpg = N * group, C // group
    length = cpg * HxW
    mu, r = mean.contiguous(), rstd.contiguous()
    dx = dw = db = None
    if output_mask[0]:
        dx = torch.empty_like(input)
        w = None if weight is None else weight.contiguous()

        def launch(p):
            _L_gn_bwd_dx_kernel(
                (cdiv(m, p["BLOCK_M"]),), dx, g, input, mu, r, w, m, length, HxW, cpg, group,
                HAS_W=w is not None, ONE_PASS=p["ONE_PASS"],
                BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"],
            )

        launch(_BWD.plan(length, m, launch))
    if output_mask[1] or output_mask[2]:
        # per-(n, c) sums of g*x and g, then dw[c] = sum_n (sum(g*x) - mean * sum(g)) * rstd
        gf = g.view(N, C, HxW).float()
        sg = gf.sum(-1)
        if output_mask[1]:
            sgx = (gf * input.view(N, C, HxW).float()).sum(-1)
            mu_c = mu.float().repeat_interleave(cpg, dim=1)
            r_c = r.float().repeat_interleave(cpg, dim=1)
            dw = ((sgx - mu_c * sg) * r_c).sum(0).to(weight.dtype)
        if output_mask[2]:
            db = sg.sum(0).to(weight.dtype)
    return dx, dw, db


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.group_norm`` through the gems kernels (differentiable)."""
    if not records_grad(input, weight, bias):
        return _GroupNormFn.forward(None, input, num_groups, weight, bias, eps)
    return _GroupNormFn.apply(input, num_groups, weight, bias, eps)


class _GroupNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps):
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // max(n * c, 1)
        y, mean, rstd = native_group_norm(x, weight, bias, n, c, hw, num_groups, eps)
        if ctx is not None:  # None: called directly for inference
            ctx.save_for_backward(x, mean, rstd, weight)
            ctx.args = (n, c, hw, num_groups)
            ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, mean, rstd, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        has_w = weight is not None
        mask = [need[0], has_w and need[2], has_w and ctx.has_bias and need[3]]
        dx, dw, db = native_group_norm_backward(g, x, mean, rstd, weight, *ctx.args, mask)
        if ctx.has_bias and need[3] and db is None:  # no weight: the bias gradient is sum(g)
            db = g.reshape(ctx.args[0], ctx.args[1], -1).sum((0, 2))
        return dx, None, dw, db, None


declare("group_norm", {
    "native_group_norm": native_group_norm,
    "native_group_norm_backward": native_group_norm_backward,
})
