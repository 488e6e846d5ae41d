"""Shared pieces of the indexing ops: the "take/put along index tensors" kernel, the
strided gather/scatter kernel, bounds checks and dim collapsing.

``take`` serves embedding, index_select, index.Tensor and index_put: the source is seen as
(outer, indexed, inner), where the indexed part is addressed by up to four flat index
tensors of equal length N, each with its own stride; the other side is a dense-ish
(outer, N, inner) tensor.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, VENDOR, launcher
from ._common import cdiv, next_pow2

MAX_INDICES = 4
TILE = 4096  # elements per program of the take kernel
GS_RANK = 4  # gather/scatter: dims after collapsing


def check_bounds(idx: torch.Tensor, size: int, allow_negative: bool) -> None:
    """Raise Unsupported (so torch raises its own IndexError) for indices out of range.

    Only on a CPU vendor: there the check reads the data directly (no sync cost), and
    torch's CPU kernels raise. On a GPU torch's kernels device-assert, and so skipping
    the check keeps the call free of a host sync (out-of-range indices are undefined).
    """
    if VENDOR.device_type != "cpu" or idx.numel() == 0:
        return
    a = idx.detach().numpy()
    lo, hi = int(a.min()), int(a.max())
    if hi >= size or lo < (-size if allow_negative else 0):
        raise Unsupported


def collapse(shape, strides):
    """(size, stride) of ``shape``/``strides`` merged into one dim, or None if impossible."""
    size, stride = 1, 0
    for s, st in zip(reversed(shape), reversed(strides)):
        if s == 1:
            continue
        if size == 1:
            size, stride = s, st
        elif st == stride * size:
            size *= s
        else:
            return None
    return size, stride


def split3(t: torch.Tensor, lo: int, hi: int):
    """View ``t`` as (outer = dims[:lo], middle = dims[lo:hi], inner = dims[hi:]) strides.

    Returns (outer size, outer stride, inner size, inner stride) or raises Unsupported.
    """
    shape, strides = t.shape, t.stride()
    outer = collapse(shape[:lo], strides[:lo])
    inner = collapse(shape[hi:], strides[hi:])
    if outer is None or inner is None:
        raise Unsupported
    return outer[0], outer[1], inner[0], inner[1]


@triton.jit
def _index_offset(ptr, j, rmask, stride, size, WRAP: tl.constexpr):
    x = tl.load(ptr + j, mask=rmask, other=0).to(tl.int64)
    if WRAP:
        x = tl.where(x < 0, x + size, x)
    return x * stride


@triton.jit
def _take_kernel(
    src, other, i0, i1, i2, i3,
    R, N, I,
    s_outer, s_inner, o_outer, o_mid, o_inner,
    s0, s1, s2, s3, n0, n1, n2, n3,
    K: tl.constexpr, WRAP: tl.constexpr, MODE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):
    # MODE 0: other[o, j, i] = src[o, idx(j), i]; 1: src[...] = other[...]; 2: src[...] += other[...]
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_I + tl.arange(0, BLOCK_I)
    rmask = rows < R
    o = rows // N
    j = rows % N
    off = o * s_outer + _index_offset(i0, j, rmask, s0, n0, WRAP)
    if K >= 2:
        off += _index_offset(i1, j, rmask, s1, n1, WRAP)
    if K >= 3:
        off += _index_offset(i2, j, rmask, s2, n2, WRAP)
    if K >= 4:
        off += _index_offset(i3, j, rmask, s3, n3, WRAP)
    src_off = off[:, None] + cols[None, :] * s_inner
    oth_off = (o * o_outer + j * o_mid)[:, None] + cols[None, :] * o_inner
    mask = rmask[:, None] & (cols < I)[None, :]
    if MODE == 0:
        tl.store(other + oth_off, tl.load(src + src_off, mask=mask), mask=mask)
    elif MODE == 1:
        v = tl.load(other + oth_off, mask=mask)
        tl.store(src + src_off, v.to(src.dtype.element_ty), mask=mask)
    else:
        v = tl.load(other + oth_off, mask=mask)
        tl.atomic_add(src + src_off, v.to(src.dtype.element_ty), mask=mask, sem="relaxed")


def take(src, outer, s_outer, inner, s_inner, indices, other, o_strides, mode, wrap):
    """Launch the take kernel; returns (bound kernel, grid, integer arguments) or None (nothing to do).

    ``indices``: list of (flat contiguous index tensor of length N, src stride, dim size).
    ``other``: the (outer, N, inner) tensor read or written, with ``o_strides``.
    The integer arguments follow src, other and the four index tensors (padded by repeating the first).
    """
    n = indices[0][0].numel()
    rows = outer * n
    if rows == 0 or inner == 0:
        return None
    block_i = min(next_pow2(inner), 1024)
    wide = min(next_pow2(inner), TILE)
    if inner % wide == 0:
        # whole rows of up to TILE elements per program where they split evenly (H100, bf16
        # embedding of 16384 / 4096 tokens from 128256x4096: 99.4 -> 97.4 / 30.2 -> 28.8 us)
        block_i = wide
    block_r = min(max(1, TILE // block_i), next_pow2(rows))
    pad = indices + [indices[0]] * (MAX_INDICES - len(indices))
    grid = (cdiv(rows, block_r), cdiv(inner, block_i))
    bound = launcher(_take_kernel).bind(K=len(indices), WRAP=wrap, MODE=mode, BLOCK_R=block_r, BLOCK_I=block_i)
    ints = (rows, n, inner, s_outer, s_inner, *o_strides, *(p[1] for p in pad), *(p[2] for p in pad))
    bound(grid, src, other, *(p[0] for p in pad), *ints)
    return bound, grid, ints


def flat_index(idx: torch.Tensor) -> torch.Tensor:
    """Index tensor as a flat contiguous int32/int64 tensor (a view when possible)."""
    if idx.dtype not in (torch.int64, torch.int32):
        raise Unsupported
    return idx.reshape(-1).contiguous()


# gather / scatter along one dim: walk the index tensor, rank <= GS_RANK after padding

@triton.jit
def _gs_kernel(
    data, idx, src, n, dim_size,
    d1, d2, d3,
    x0, x1, x2, x3,  # index strides
    a0, a1, a2, a3,  # strides of src (scatter) / out (gather) at the index position
    t0, t1, t2, t3,  # strides of data (self for gather, result for scatter)
    DIM: tl.constexpr, MODE: tl.constexpr, SCALAR: tl.constexpr, BLOCK: tl.constexpr,
):
    # MODE 0 gather: src[pos] = data[pos with dim replaced by idx]
    # MODE 1 scatter: data[...] = src[pos] (or the scalar src); MODE 2 scatter_add (atomics)
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = p < n
    i3 = p % d3
    r = p // d3
    i2 = r % d2
    r = r // d2
    i1 = r % d1
    i0 = r // d1
    k = tl.load(idx + (i0 * x0 + i1 * x1 + i2 * x2 + i3 * x3), mask=mask, other=0).to(tl.int64)
    k = tl.where(k < 0, k + dim_size, k)
    t = i0 * t0 + i1 * t1 + i2 * t2 + i3 * t3
    if DIM == 0:
        t += (k - i0) * t0
    elif DIM == 1:
        t += (k - i1) * t1
    elif DIM == 2:
        t += (k - i2) * t2
    else:
        t += (k - i3) * t3
    a = i0 * a0 + i1 * a1 + i2 * a2 + i3 * a3
    if MODE == 0:
        tl.store(src + a, tl.load(data + t, mask=mask), mask=mask)
    else:
        if SCALAR:
            # a scalar equal to 1 arrives as a constexpr on the GPU: broadcast it to a block
            v = tl.zeros((BLOCK,), dtype=data.dtype.element_ty) + src
        else:
            v = tl.load(src + a, mask=mask)
        v = v.to(data.dtype.element_ty)
        if MODE == 1:
            tl.store(data + t, v, mask=mask)
        else:
            tl.atomic_add(data + t, v, mask=mask, sem="relaxed")


GS_BLOCK = 1024


def gather_scatter(data, dim, index, src, mode):
    """gather (mode 0: ``src`` is the output) or scatter (1) / scatter_add (2) into ``data``.

    ``src`` may be a Python number for scatter (mode 1). All tensors have index's rank.
    """
    nd = index.dim()
    if nd > GS_RANK:
        raise Unsupported
    n = index.numel()
    if n == 0:
        return
    pad = GS_RANK - nd
    shape = [1] * pad + list(index.shape)
    xs = [0] * pad + list(index.stride())
    scalar = not isinstance(src, torch.Tensor)
    as_ = [0] * GS_RANK if scalar else [0] * pad + list(src.stride())
    ts = [0] * pad + list(data.stride())
    grid = (cdiv(n, GS_BLOCK),)
    launcher(_gs_kernel)[grid](
        data, index, src, n, data.shape[dim] if data.dim() else 1,
        shape[1], shape[2], shape[3], *xs, *as_, *ts,
        DIM=dim + pad, MODE=mode, SCALAR=scalar, BLOCK=GS_BLOCK,
    )

