"""softmax over any dim: ``_softmax``, ``_softmax.out`` and ``_softmax_backward_data``.

One kernel serves every dim. The input is seen as ``[outer, n, inner]`` (``n`` the softmax
dim); a program owns ``BLOCK_M`` of the ``outer * inner`` rows and reduces along ``n``.
The last dim (``inner == 1``) is the fast path: whole rows in registers when they fit
(``BLOCK_N >= n``), otherwise an online max/sum pass followed by a write pass (two reads
of the row instead of three). ``log_softmax`` reuses these kernels with ``LOG=True``.
Rows of -inf give NaN, as torch's kernels do (exp(-inf - -inf)).

A few very wide rows (the logits of a decode batch over a 128k vocabulary) would leave
most SMs idle with one program per row, so there each row is split into chunks: one
kernel writes every chunk's max and sum of exponentials, a second combines a row's
partials and writes its chunk (the second read of a chunk mostly hits L2).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Plans, Unsupported, declare, on_device, on_vendor_device, with_fallback
from ._rows import ONE_PASS_MAX, RowPlanner, collapsed_stride, launcher, processors
from ._common import allocation_stand_in, cdiv, needs_int64, next_pow2, planned_output

__all__ = ["softmax"]

# fp64 stays native: Triton's exp/log on fp64 need libdevice on some backends
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _row_offsets(rows, inner, s_outer, s_inner, LASTDIM: tl.constexpr):
    if LASTDIM:
        return rows * s_outer
    return (rows // inner) * s_outer + (rows % inner) * s_inner


@triton.jit
def _softmax_fwd_kernel(
    out, x, R, N, inner, xs_outer, xs_inner, xs_n, os_outer, os_inner, os_n,
    LOG: tl.constexpr, LASTDIM: tl.constexpr, ONE_PASS: tl.constexpr, COMPUTE: tl.constexpr,
    INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    rmask = rows < R
    xr = x + _row_offsets(rows, inner, xs_outer, xs_inner, LASTDIM)[:, None]
    orow = out + _row_offsets(rows, inner, os_outer, os_inner, LASTDIM)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < N)
        # padding columns are -inf; padding rows are 0 (finite, so no NaN work on them)
        v = tl.load(xr + cols * xs_n, mask=mask, other=0.0).to(COMPUTE)
        v = tl.where(cols < N, v, -float("inf"))
        m = tl.max(v, 1)[:, None]
        e = tl.exp(v - m)
        s = tl.sum(e, 1)[:, None]
        if LOG:
            r = v - m - tl.log(s)
        else:
            r = e * (1.0 / s)
        tl.store(orow + cols * os_n, r.to(out.dtype.element_ty), mask=mask)
    else:
        # online max and sum, one exp per element; m_safe keeps a row that is -inf so far
        # from producing exp(-inf - -inf) = NaN before a finite value arrives
        m = tl.full([BLOCK_M], -float("inf"), COMPUTE)
        s = tl.zeros([BLOCK_M], COMPUTE)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            v = tl.load(xr + c * xs_n, mask=mask, other=0.0).to(COMPUTE)
            v = tl.where(c < N, v, -float("inf"))
            m_new = tl.maximum(m, tl.max(v, 1))
            m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
            s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(v - m_safe[:, None]), 1)
            m = m_new
        m = tl.where(m == -float("inf"), 0.0, m)[:, None]  # all -inf: 0/0 below gives NaN
        if LOG:
            shift = m + tl.log(s)[:, None]
        else:
            inv = 1.0 / s[:, None]
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            v = tl.load(xr + c * xs_n, mask=mask, other=-float("inf")).to(COMPUTE)
            if LOG:
                r = v - shift
            else:
                r = tl.exp(v - m) * inv
            tl.store(orow + c * os_n, r.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(
    dx, g, y, R, N, inner, gs_outer, gs_inner, gs_n, ys_outer, ys_inner, ys_n,
    ds_outer, ds_inner, ds_n,
    LOG: tl.constexpr, LASTDIM: tl.constexpr, ONE_PASS: tl.constexpr, COMPUTE: tl.constexpr,
    INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # softmax: dx = y * (g - sum(g * y)); log_softmax: dx = g - exp(y) * sum(g)
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    if INT64:
        rows = rows.to(tl.int64)
    rmask = rows < R
    gr = g + _row_offsets(rows, inner, gs_outer, gs_inner, LASTDIM)[:, None]
    yr = y + _row_offsets(rows, inner, ys_outer, ys_inner, LASTDIM)[:, None]
    dr = dx + _row_offsets(rows, inner, ds_outer, ds_inner, LASTDIM)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_PASS:
        mask = rmask[:, None] & (cols < N)
        gv = tl.load(gr + cols * gs_n, mask=mask, other=0.0).to(COMPUTE)
        yv = tl.load(yr + cols * ys_n, mask=mask, other=0.0).to(COMPUTE)
        if LOG:
            r = gv - tl.exp(yv) * tl.sum(gv, 1)[:, None]
        else:
            r = yv * (gv - tl.sum(gv * yv, 1)[:, None])
        tl.store(dr + cols * ds_n, r.to(dx.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], COMPUTE)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            gv = tl.load(gr + c * gs_n, mask=mask, other=0.0).to(COMPUTE)
            if LOG:
                acc += gv
            else:
                acc += gv * tl.load(yr + c * ys_n, mask=mask, other=0.0).to(COMPUTE)
        total = tl.sum(acc, 1)[:, None]
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = rmask[:, None] & (c < N)
            gv = tl.load(gr + c * gs_n, mask=mask, other=0.0).to(COMPUTE)
            yv = tl.load(yr + c * ys_n, mask=mask, other=0.0).to(COMPUTE)
            if LOG:
                r = gv - tl.exp(yv) * total
            else:
                r = yv * (gv - total)
            tl.store(dr + c * ds_n, r.to(dx.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_split_stats_kernel(stats, x, N, xs_outer, CHUNK, SPLITS, RS, BLOCK_N: tl.constexpr):
    # program (row, split): the max and sum of exp(x - max) of its chunk, at stats[pid]
    # and stats[RS + pid]; an all -inf chunk gives (-inf, 0)
    pid = tl.program_id(0)
    row = pid // SPLITS
    start = (pid % SPLITS) * CHUNK
    xr = x + row.to(tl.int64) * xs_outer
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([], -float("inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    for off in range(0, CHUNK, BLOCK_N):
        c = start + off + cols
        v = tl.load(xr + c, mask=c < N, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(v, 0))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(v - m_safe), 0)
        m = m_new
    tl.store(stats + pid, m)
    tl.store(stats + RS + pid, s)


@triton.jit
def _softmax_split_write_kernel(out, x, stats, N, xs_outer, os_outer, CHUNK, SPLITS, RS,
                                LOG: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    row = pid // SPLITS
    start = (pid % SPLITS) * CHUNK
    parts = row * SPLITS + tl.arange(0, BLOCK_S)
    pmask = tl.arange(0, BLOCK_S) < SPLITS
    pm = tl.load(stats + parts, mask=pmask, other=-float("inf"))
    ps = tl.load(stats + RS + parts, mask=pmask, other=0.0)
    m = tl.max(pm, 0)
    m = tl.where(m == -float("inf"), 0.0, m)  # all -inf: 0/0 below gives NaN, as torch
    total = tl.sum(ps * tl.exp(pm - m), 0)
    if LOG:
        shift = m + tl.log(total)
    else:
        inv = 1.0 / total
    xr = x + row.to(tl.int64) * xs_outer
    orow = out + row.to(tl.int64) * os_outer
    cols = tl.arange(0, BLOCK_N)
    for off in range(0, CHUNK, BLOCK_N):
        c = start + off + cols
        mask = c < N
        v = tl.load(xr + c, mask=mask, other=-float("inf")).to(tl.float32)
        if LOG:
            r = v - shift
        else:
            r = tl.exp(v - m) * inv
        tl.store(orow + c, r.to(out.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- launch configuration

_L_softmax_bwd_kernel = launcher(_softmax_bwd_kernel)
_L_softmax_fwd_kernel = launcher(_softmax_fwd_kernel)
_L_split_stats = launcher(_softmax_split_stats_kernel)
_L_split_write = launcher(_softmax_split_write_kernel)
_FWD = RowPlanner("softmax_fwd", [_softmax_fwd_kernel])
_BWD = RowPlanner("softmax_bwd", [_softmax_bwd_kernel])


def _plan(planner: RowPlanner, n: int, rows: int, lastdim: bool, launch) -> dict:
    if lastdim:
        return planner.plan(n, rows, launch)
    # rows of a strided softmax are neighbours in memory: take many of them per program
    # and keep the [BLOCK_M, BLOCK_N] tile within the register budget
    p = planner.plan(n, rows, lambda c: launch(_strided(c, n)), key="strided")
    return _strided(p, n)


def _strided(p: dict, n: int) -> dict:
    p = dict(p)
    p["BLOCK_M"] = bm = max(p["BLOCK_M"], int(p.get("BLOCK_M_STRIDED", 16)))
    p["BLOCK_N"] = bn = min(p["BLOCK_N"], next_pow2(max(1, int(p.get("MAX_TILE_STRIDED", 8192)) // bm)))
    p["ONE_PASS"] = p["ONE_PASS"] and bn >= n
    return p


def _split_config() -> dict:
    return dict(VENDOR.config("softmax_split").get("default", {})) if VENDOR else {}


_SPLIT = _split_config()


def _split_launch(out, rows: int, n: int, xs_outer: int, log: bool):
    """``launch(out, x)`` computing a last-dim softmax with each row split into chunks, or
    None where one program per row already fills the GPU (see the module docstring)."""
    if not _SPLIT or n <= ONE_PASS_MAX or n >= 2**31 - 2**20:
        return None
    sms = processors(out.device)
    if rows >= int(_SPLIT.get("split_below_rows_per_sm", 1)) * sms:
        return None
    block_n = int(_SPLIT["BLOCK_N"])
    splits = cdiv(int(_SPLIT.get("programs_per_sm", 4)) * sms, rows)
    chunk = cdiv(cdiv(n, splits), block_n) * block_n
    splits = cdiv(n, chunk)
    if splits < 2:
        return None
    warps = int(_SPLIT.get("num_warps", 8))
    rs = rows * splits
    grid = (rs,)
    # the head of each launch is tensors of the plan's dtypes only: ``planned`` launches
    stats = _L_split_stats.bind(BLOCK_N=block_n, num_warps=warps).prepare(
        grid, (n, xs_outer, chunk, splits, rs)).planned
    write = _L_split_write.bind(LOG=log, BLOCK_S=next_pow2(splits), BLOCK_N=block_n, num_warps=warps).prepare(
        grid, (n, xs_outer, n, chunk, splits, rs)).planned
    partials_like = allocation_stand_in(torch.empty(2 * rs, dtype=torch.float32, device=out.device))

    def launch(out, x):
        # (plans are kept per signature, not per device: a call on another GPU allocates plainly)
        partials = torch.empty_like(partials_like) if partials_like.get_device() == x.get_device() else \
            torch.empty(2 * rs, dtype=torch.float32, device=x.device)
        stats(partials, x)
        write(out, x, partials)

    return launch


# ---------------------------------------------------------------- layouts

def _layout(t: torch.Tensor, dim: int):
    """(tensor, outer, n, inner, (s_outer, s_inner, s_n)) viewing ``t`` as [outer, n, inner].

    Last-dim views whose leading dims collapse to one stride (slices, padded rows) are used
    as they are; other layouts are made contiguous first.
    """
    shape = t.shape
    n = shape[dim] if t.dim() else 1
    inner = 1
    for s in shape[dim + 1:]:
        inner *= s
    outer = t.numel() // max(n * inner, 1) if t.numel() else 0
    if t.is_contiguous():
        return t, outer, n, inner, (n * inner, 1, inner)
    if t.dim() and dim == t.dim() - 1 and (t.stride(-1) == 1 or n == 1):
        s_outer = collapsed_stride(t)
        if s_outer is not None:
            return t, outer, n, 1, (s_outer, 0, 1)
    return t.contiguous(), outer, n, inner, (n * inner, 1, inner)


def _check(t: torch.Tensor):
    if not on_vendor_device(t) or t.dtype not in KERNEL_DTYPES:
        raise Unsupported


def _norm_dim(dim: int, ndim: int) -> int:
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise Unsupported  # torch's own IndexError
    return dim % max(ndim, 1)


def softmax_forward(x: torch.Tensor, dim: int, out_dtype: torch.dtype, log: bool, out=None):
    """Softmax (or log-softmax) of ``x`` along ``dim`` into a new or given contiguous tensor."""
    sig = None
    if out is None:
        sig = (x.shape, x.stride(), x.dtype, dim, out_dtype, log)
        planned = _FORWARDS.get(sig)
        if planned is not None and on_device(x):
            out_like, strides, prepared = planned
            out = planned_output(out_like, x.shape, strides, out_dtype, x)
            prepared(out, x)
            return out
    _check(x)
    dim = _norm_dim(dim, x.dim())
    if out is None:
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    elif out.shape != x.shape or out.dtype != out_dtype or not out.is_contiguous() or (
            out.numel() and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()):
        raise Unsupported  # resizing and in-place (aliased) outputs: torch's kernel
    if x.numel() == 0:
        return out
    xv, outer, n, inner, (xo, xi, xn) = _layout(x, dim)
    lastdim = inner == 1
    rows = outer * inner
    int64 = needs_int64(xv, out)
    compute = tl.float32

    if lastdim and xn == 1 and out.is_contiguous():
        split = _split_launch(out, rows, n, xo, log)
        if split is not None:
            split(out, xv)
            if sig is not None and xv is x:
                _FORWARDS.keep(sig, (allocation_stand_in(out), out.stride(), split))
            return out

    ints = (rows, n, inner, xo, xi, xn, n * inner, 1, inner)

    def launch(p):
        bound = _L_softmax_fwd_kernel.bind(
            LOG=log, LASTDIM=lastdim, ONE_PASS=p["ONE_PASS"], COMPUTE=compute, INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        grid = (cdiv(rows, p["BLOCK_M"]),)
        bound(grid, out, xv, *ints)
        return bound, grid

    bound, grid = launch(_plan(_FWD, n, rows, lastdim, launch))
    if sig is not None and xv is x:
        _FORWARDS.keep(sig, (allocation_stand_in(out), out.stride(), bound.prepare(grid, ints).planned))
    return out


# softmax_forward call signature -> (output's allocation stand-in, strides, launch(out, x):
# a prepared launch or a split-row pair)
_FORWARDS = Plans()


def softmax_backward(grad: torch.Tensor, output: torch.Tensor, dim: int, input_dtype, log: bool):
    """Gradient of softmax (or log-softmax) given the forward ``output``."""
    sig = (grad.shape, grad.stride(), grad.dtype, output.shape, output.stride(), output.dtype, dim, input_dtype, log)
    planned = _BACKWARDS.get(sig)
    if planned is not None and on_device(grad) and on_device(output):
        dx_like, strides, prepared = planned
        dx = planned_output(dx_like, grad.shape, strides, input_dtype, grad)
        prepared(dx, grad, output)
        return dx
    _check(grad)
    _check(output)
    if grad.shape != output.shape or input_dtype not in KERNEL_DTYPES:
        raise Unsupported
    dim = _norm_dim(dim, grad.dim())
    dx = torch.empty(grad.shape, dtype=input_dtype, device=grad.device)
    if grad.numel() == 0:
        return dx
    gv, outer, n, inner, (go, gi, gn) = _layout(grad, dim)
    yv, _, _, yinner, (yo, yi, yn) = _layout(output, dim)
    if yinner != inner:  # one is a last-dim view, the other was made contiguous
        gv, yv = grad.contiguous(), output.contiguous()
        go, gi, gn = yo, yi, yn = n * inner, 1, inner
    lastdim = inner == 1
    rows = outer * inner
    int64 = needs_int64(gv, yv, dx)

    ints = (rows, n, inner, go, gi, gn, yo, yi, yn, n * inner, 1, inner)

    def launch(p):
        bound = _L_softmax_bwd_kernel.bind(
            LOG=log, LASTDIM=lastdim, ONE_PASS=p["ONE_PASS"], COMPUTE=tl.float32, INT64=int64,
            BLOCK_M=p["BLOCK_M"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
        grid = (cdiv(rows, p["BLOCK_M"]),)
        bound(grid, dx, gv, yv, *ints)
        return bound, grid

    bound, grid = launch(_plan(_BWD, n, rows, lastdim, launch))
    if gv is grad and yv is output:
        _BACKWARDS.keep(sig, (allocation_stand_in(dx), dx.stride(), bound.prepare(grid, ints).planned))
    return dx


# softmax_backward call signature -> (gradient's allocation stand-in, strides, prepared launch)
_BACKWARDS = Plans()


def _out_dtype(x: torch.Tensor, half_to_float: bool) -> torch.dtype:
    if half_to_float:
        if x.dtype not in (torch.float16, torch.bfloat16):
            raise Unsupported  # torch's own error message
        return torch.float32
    return x.dtype


@with_fallback("_softmax")
def _softmax(self, dim, half_to_float):
    """aten::_softmax."""
    return softmax_forward(self, dim, _out_dtype(self, half_to_float), False)


@with_fallback("_softmax.out")
def _softmax_out(self, dim, half_to_float, *, out):
    """aten::_softmax.out."""
    softmax_forward(self, dim, _out_dtype(self, half_to_float), False, out=out)
    return out


@with_fallback("_softmax_backward_data")
def _softmax_backward_data(grad_output, output, dim, input_dtype):
    """aten::_softmax_backward_data."""
    return softmax_backward(grad_output, output, dim, input_dtype, False)


def softmax(input, dim, dtype=None):
    """``torch.softmax(input, dim, dtype)`` through the gems kernels (differentiable)."""
    if dtype is not None:
        input = input.to(dtype)
    if not (torch.is_grad_enabled() and input.requires_grad):
        return _softmax(input, dim, False)
    return _SoftmaxFn.apply(input, dim)


class _SoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = _softmax(x, dim, False)
        ctx.save_for_backward(y)
        ctx.dim, ctx.dtype = dim, x.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return _softmax_backward_data(g, y, ctx.dim, ctx.dtype), None


declare("softmax", {
    "_softmax": _softmax,
    "_softmax.out": _softmax_out,
    "_softmax_backward_data": _softmax_backward_data,
})
