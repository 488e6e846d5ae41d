"""group_norm: aten ``native_group_norm`` and ``native_group_norm_backward``.

A contiguous ``[N, C, *]`` input is ``N * group`` rows of ``C / group * HxW`` elements; each
program normalizes rows with fp32 statistics (whole row in registers when it fits, else
looped passes), applying the per-channel affine of column ``c = g * C/group + col // HxW``.
``mean``/``rstd`` are ``[N, group]`` in the input's dtype, fp32 when the parameters are fp32
on a reduced-precision input (torch's rule). The backward first sums g*xhat and g per
(n, c) in one pass (the weight/bias gradients, and the two group means dx needs), then
writes dx elementwise: a row kernel over the N*group rows left most of the GPU idle when
groups are few and long (H100, bf16, a training step 0.31-0.83x native before).
Channels-last and other layouts go to torch's kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, declare, on_vendor_device, records_grad, with_fallback
from ._rows import RowPlanner, launcher
from ._common import cdiv, next_pow2

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
    dx, g, x, w, mean_ptr, rstd_ptr, c1_ptr, c2_ptr, M, C, HW, CPG,
    HAS_W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    # dx = rstd * (w g - c2 - xhat c1), with c1 = mean(w g xhat) and c2 = mean(w g) over the
    # group, precomputed per (n, group) from the per-channel sums. Elementwise: a tile of
    # BLOCK_R channel rows (n*C + c) by BLOCK_HW positions, so every element has its own
    # program slot however few and long the groups are.
    pid = tl.program_id(0)
    blocks = tl.cdiv(HW, BLOCK_HW)
    rows = ((pid // blocks) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = (pid % blocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    rmask = rows < M
    mask = rmask[:, None] & (cols < HW)[None, :]
    stat = rows // CPG
    mu = tl.load(mean_ptr + stat, mask=rmask, other=0.0).to(tl.float32)[:, None]
    r = tl.load(rstd_ptr + stat, mask=rmask, other=0.0).to(tl.float32)[:, None]
    c1 = tl.load(c1_ptr + stat, mask=rmask, other=0.0)[:, None]
    c2 = tl.load(c2_ptr + stat, mask=rmask, other=0.0)[:, None]
    offs = rows[:, None] * HW + cols[None, :]
    wg = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_W:
        wg = wg * tl.load(w + rows % C, mask=rmask, other=0.0).to(tl.float32)[:, None]
    xh = (tl.load(x + offs, mask=mask, other=0.0).to(tl.float32) - mu) * r
    tl.store(dx + offs, ((wg - c2 - xh * c1) * r).to(dx.dtype.element_ty), mask=mask)


@triton.jit
def _gn_param_sums_kernel(
    sum_gxh, sum_g, g, x, mean_ptr, rstd_ptr, M, HW, CPG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # row n*C + c: sum over its HxW elements of g * xhat (weight gradient) and of g (bias
    # gradient). xhat is formed before the product: sum(g*x) - mean*sum(g) cancels when the
    # mean is large against the spread.
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < M
    stat = rows // CPG  # (n, group) of the channel
    mu = tl.load(mean_ptr + stat, mask=rmask, other=0.0).to(tl.float32)[:, None]
    r = tl.load(rstd_ptr + stat, mask=rmask, other=0.0).to(tl.float32)
    gr = g + rows[:, None] * HW
    xr = x + rows[:, None] * HW
    cols = tl.arange(0, BLOCK_N)[None, :]
    acc_gxh = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start in range(0, HW, BLOCK_N):
        c = start + cols
        mask = rmask[:, None] & (c < HW)
        gv = tl.load(gr + c, mask=mask, other=0.0).to(tl.float32)
        xc = tl.where(mask, tl.load(xr + c, mask=mask, other=0.0).to(tl.float32) - mu, 0.0)
        acc_gxh += gv * xc
        acc_g += gv
    tl.store(sum_gxh + rows, tl.sum(acc_gxh, 1) * r, mask=rmask)
    tl.store(sum_g + rows, tl.sum(acc_g, 1), mask=rmask)


@triton.jit
def _gn_finish_kernel(
    c1_ptr, c2_ptr, dw, db, sum_gxh, sum_g, w, N, C, CPG, SPLIT, inv_len,
    HAS_W: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    BLOCK_CPG: tl.constexpr,
):
    # one program per group: the per-(n, c) sums (each in SPLIT parts) become the two group
    # means dx needs, c1 = mean(w g xhat) and c2 = mean(w g), and the parameter gradients
    # summed over n. One launch where torch ops took ten on the host.
    grp = tl.program_id(0)
    groups = tl.num_programs(0)
    j = tl.arange(0, BLOCK_CPG)
    cmask = j < CPG
    ch = grp * CPG + j
    if HAS_W:
        wv = tl.load(w + ch, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_CPG], tl.float32)
    db_acc = tl.zeros([BLOCK_CPG], tl.float32)
    for n in range(N):
        base = (n * C + ch).to(tl.int64) * SPLIT
        t1 = tl.zeros([BLOCK_CPG], tl.float32)
        t2 = tl.zeros([BLOCK_CPG], tl.float32)
        for s in range(SPLIT):
            t1 += tl.load(sum_gxh + base + s, mask=cmask, other=0.0)
            t2 += tl.load(sum_g + base + s, mask=cmask, other=0.0)
        dw_acc += t1
        db_acc += t2
        if NEED_DX:
            if HAS_W:
                t1 = t1 * wv
                t2 = t2 * wv
            tl.store(c1_ptr + n * groups + grp, tl.sum(t1, 0) * inv_len)
            tl.store(c2_ptr + n * groups + grp, tl.sum(t2, 0) * inv_len)
    if NEED_DW:
        tl.store(dw + ch, dw_acc.to(dw.dtype.element_ty), mask=cmask)
    if NEED_DB:
        tl.store(db + ch, db_acc.to(db.dtype.element_ty), mask=cmask)


_L_gn_finish_kernel = launcher(_gn_finish_kernel)
_L_gn_param_sums_kernel = launcher(_gn_param_sums_kernel)
_L_gn_bwd_dx_kernel = launcher(_gn_bwd_dx_kernel)
_L_gn_fwd_kernel = launcher(_gn_fwd_kernel)
_FWD = RowPlanner("group_norm_fwd", [_gn_fwd_kernel])
_SUMS = RowPlanner("group_norm_param_sums", [_gn_param_sums_kernel], cold=True)
_DX_TILE = 2048  # elements per program of the elementwise dx kernel
_SUMS_MIN_ROWS, _SUMS_MIN_LENGTH = 4096, 1024  # split long rows of the sums until this many


def _check(input, weight, bias, N, C, HxW, group):
    if not on_vendor_device(input, weight, bias) or input.dtype not in KERNEL_DTYPES:
        raise Unsupported
    if input.dim() < 2 or not input.is_contiguous() or group <= 0 or C % group or N * C * HxW != input.numel():
        raise Unsupported
    for p in (weight, bias):
        if p is not None and (p.dtype not in KERNEL_DTYPES or p.numel() != C):
            raise Unsupported
    if input.numel() == 0:
        raise Unsupported  # torch's NaN/shape conventions


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
    cpg = C // group
    mu, r = mean.contiguous(), rstd.contiguous()
    rows = N * C
    # Per-(n, c) sums of g*xhat and g give the parameter gradients (summed over n) and the
    # two group means dx needs (weighted by the channel's weight, summed over its group).
    # Few long rows (2x128x256x256: 256 rows of 65536) would leave most SMs idle: each row
    # is then summed as ``split`` contiguous sub-rows (sub-row i belongs to channel row
    # i // split, so the kernel finds its statistics with the divisor cpg * split).
    split = 1
    while rows * split < _SUMS_MIN_ROWS and HxW % (2 * split) == 0 and HxW // (2 * split) >= _SUMS_MIN_LENGTH:
        split *= 2
    # one fp32 workspace (an allocation costs as much host time as a launch): the two sums,
    # then the two group means
    sums = rows * split
    work = torch.empty(2 * sums + 2 * N * group, dtype=torch.float32, device=input.device)
    sum_gxh, sum_g = work[:sums], work[sums:2 * sums]
    c1, c2 = work[2 * sums:2 * sums + N * group], work[2 * sums + N * group:]
    sub_rows, sub_len = rows * split, HxW // split

    def launch_sums(p):
        _L_gn_param_sums_kernel(
            (cdiv(sub_rows, p["BLOCK_M"]),), sum_gxh, sum_g, g, input, mu, r, sub_rows, sub_len, cpg * split,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"],
        )

    launch_sums(_SUMS.plan(sub_len, sub_rows, launch_sums))
    need_dx, need_dw, need_db = (bool(m) for m in output_mask)
    dev, wc = input.device, None if weight is None else weight.contiguous()
    dx = dw = db = None
    if need_dw:
        dw = torch.empty((C,), dtype=weight.dtype, device=dev)
    if need_db:
        db = torch.empty((C,), dtype=weight.dtype, device=dev)
    _L_gn_finish_kernel(
        (group,), c1, c2, dw, db, sum_gxh, sum_g, wc, N, C, cpg, split, 1.0 / (cpg * HxW),
        HAS_W=wc is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db, BLOCK_CPG=next_pow2(cpg),
        num_warps=1 if cpg <= 256 else 4,
    )
    if need_dx:
        dx = torch.empty_like(input)
        block_hw = min(next_pow2(HxW), _DX_TILE)
        block_r = _DX_TILE // block_hw
        _L_gn_bwd_dx_kernel(
            (cdiv(rows, block_r) * cdiv(HxW, block_hw),), dx, g, input, wc, mu, r, c1, c2, rows, C, HxW, cpg,
            HAS_W=wc is not None, BLOCK_R=block_r, BLOCK_HW=block_hw, num_warps=4,
        )
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
