"""cat: up to four inputs per launch, any dim, dtype promotion, torch's empty-tensor rules.

Each input is read as rows (the dims before ``dim``) of ``c`` columns (``dim`` and the dims
after it). The row dims are split into up to three groups [A, B, C] that each walk every
input with one stride, which covers the transposed views models concatenate (the two
halves of ``q.view(b, s, h, d).transpose(1, 2)`` in rotary embeddings: b, h and s). An
input that no common split serves is copied first.
"""
import functools
import math
import operator

import torch
import triton
import triton.language as tl

from ..runtime import Plans, Unsupported, declare, launcher, on_vendor_device, with_fallback
from ._common import allocation_stand_in, cdiv, kernel_dtype_ok, next_pow2, unused_pointer
from ._indexing import collapse

__all__ = ["cat"]

PER_LAUNCH = 4
TILE = 8192  # elements per program
MAX_BLOCK_C = 4096
NUM_WARPS = 4


@triton.jit
def _copy_tile(out, x, rows, cols, outer, inner, c, col_off, s_a, s_b, s_c, rows_b, rows_c, s_dim, s_inner,
               c_total, LEVELS: tl.constexpr, FLAT: tl.constexpr):
    mask = (rows < outer)[:, None] & (cols < c)[None, :]
    if FLAT:
        # dim and the dims after it are one run of stride s_dim: no division per element
        # (64-bit division and modulo cost more than the copy itself)
        col = cols * s_dim
    else:
        col = (cols // inner) * s_dim + (cols % inner) * s_inner
    if LEVELS == 1:
        row = rows * s_a
    elif LEVELS == 2:
        row = (rows // rows_c) * s_a + (rows % rows_c) * s_c
    else:
        row = (rows // (rows_b * rows_c)) * s_a + ((rows // rows_c) % rows_b) * s_b + (rows % rows_c) * s_c
    v = tl.load(x + row[:, None] + col[None, :], mask=mask)
    tl.store(out + rows[:, None] * c_total + (cols + col_off)[None, :], v.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _cat_kernel(
    out, x0, x1, x2, x3, outer, inner, c_total, blocks, q1, q2, q3, rows_b, rows_c,
    c0, c1, c2, c3, f0, f1, f2, f3, d0, d1, d2, d3, k0, k1, k2, k3,
    a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3,
    N: tl.constexpr, LEVELS: tl.constexpr, FLAT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # one flat grid: (row block) x (column blocks of input 0, then of input 1, ...); input i's
    # blocks start at q_i (q_0 = 0, an absent input's q is ``blocks``), so inputs of very
    # different widths launch no empty programs
    pid = tl.program_id(0)
    rb = pid // blocks
    cb = pid % blocks
    rows = rb.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    if cb < q1:
        cols = cb.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        _copy_tile(out, x0, rows, cols, outer, inner, c0, f0, a0, b0, e0, rows_b, rows_c, d0, k0,
                   c_total, LEVELS, FLAT)
    if N >= 2:
        if (cb >= q1) & (cb < q2):
            cols = (cb - q1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
            _copy_tile(out, x1, rows, cols, outer, inner, c1, f1, a1, b1, e1, rows_b, rows_c, d1, k1,
                       c_total, LEVELS, FLAT)
    if N >= 3:
        if (cb >= q2) & (cb < q3):
            cols = (cb - q2).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
            _copy_tile(out, x2, rows, cols, outer, inner, c2, f2, a2, b2, e2, rows_b, rows_c, d2, k2,
                       c_total, LEVELS, FLAT)
    if N >= 4:
        if cb >= q3:
            cols = (cb - q3).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
            _copy_tile(out, x3, rows, cols, outer, inner, c3, f3, a3, b3, e3, rows_b, rows_c, d3, k3,
                       c_total, LEVELS, FLAT)


def _channels_last(t):
    return t.dim() in (4, 5) and not t.is_contiguous() and (
        t.is_contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d))


# (dim, device, per input (dtype, shape, strides)) -> (allocation stand-in of the output,
# [(prepared launch, itemgetter of the inputs it takes, padded as in _launch)])
_PLANS = Plans()


def _run(tensors, dim, out=None):
    if not tensors or not on_vendor_device(*tensors, out):
        raise Unsupported
    key = None
    if out is None:
        # a model concatenates the same layouts on every step (KV caches, rotary halves):
        # their launches are planned once
        key = (dim, tensors[0].get_device(), *[(t.dtype, t.shape, t.stride()) for t in tensors])
        plan = _PLANS.get(key)
        if plan is not None:
            out_like, launches = plan
            out = torch.empty_like(out_like)  # the key holds the device
            for prepared, inputs in launches:
                prepared(out, *inputs(tensors))
            return out
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    # legacy rule: 1-D empty tensors are skipped whatever the other shapes are
    parts = [(i, t) for i, t in enumerate(tensors) if not (t.dim() == 1 and t.numel() == 0)]
    if not parts or not kernel_dtype_ok(dtype) or any(not kernel_dtype_ok(t.dtype) for _, t in parts):
        raise Unsupported
    first = parts[0][1]
    nd = first.dim()
    if nd == 0:
        raise Unsupported
    dim = dim + nd if dim < 0 else dim
    if not 0 <= dim < nd:
        raise Unsupported
    ref = first.shape
    total = 0
    for _, t in parts:
        if t.dim() != nd or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref)) if i != dim):
            raise Unsupported  # torch's error message
        if _channels_last(t):
            raise Unsupported  # torch keeps that layout for the result
        total += t.shape[dim]
    shape = list(ref)
    shape[dim] = total
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=first.device)
    else:
        if list(out.shape) != shape or not out.is_contiguous() or not torch.can_cast(dtype, out.dtype):
            raise Unsupported
        base = out.untyped_storage().data_ptr()
        if any(t.untyped_storage().data_ptr() == base for t in tensors):
            raise Unsupported
    if out.numel() == 0:
        return out
    inner = 1
    for s in shape[dim + 1:]:
        inner *= s
    outer = out.numel() // (total * inner)
    c_total = total * inner
    rows_b, rows_c, row_strides = _row_strides([t for _, t in parts], dim)
    items, off = [], 0
    for (i, t), rs in zip(parts, row_strides):
        c = t.shape[dim] * inner
        if c:
            inner_dims = collapse(t.shape[dim + 1:], t.stride()[dim + 1:])
            if rs is None or inner_dims is None:  # not addressable as rows: copy this one input
                t = t.contiguous()
                rs = (rows_b * rows_c * c, rows_c * c, c)  # row r of a contiguous copy starts at r * c
                inner_dims = (inner, 1)
                key = None  # the copy is per call: no plan
            run = collapse(t.shape[dim:], t.stride()[dim:])
            items.append((i, t, c, off, t.stride(dim), inner_dims[1], *rs, None if run is None else run[1]))
        off += c
    groups = [items[g:g + PER_LAUNCH] for g in range(0, len(items), PER_LAUNCH)]
    launches = [_launch(group, outer, inner, c_total, rows_b, rows_c) for group in groups]
    for (bound, grid, _, tail), group in zip(launches, groups):
        bound(grid, out, *[it[1] for it in group], *tail)
    if key is not None:
        # prepared: the launches' grids, unused input slots and 37 integers each are fixed by the plan
        _PLANS.keep(key, (allocation_stand_in(out),
                          [(bound.prepare(grid, tail).planned, _picker(which)) for bound, grid, which, tail in launches]))
    return out


def _picker(which):
    """``pick(tensors)``: the inputs at positions ``which``, as a tuple."""
    if len(which) == 1:
        (i,) = which
        return lambda tensors: (tensors[i],)
    return operator.itemgetter(*which)


def _row_strides(tensors, dim):
    """(rows_b, rows_c, per input (row strides of A, B, C) or None): the dims before ``dim``
    seen as [A, B, C] with B of rows_b rows and C of rows_c.

    The fewest groups that serve every input win (empty groups have one row); an input that
    no common split serves gets None.
    """
    shape = tensors[0].shape  # the inputs agree on every dim but ``dim``
    outer = [d for d in range(dim) if shape[d] != 1]
    n = len(outer)

    def strides(t, cuts):
        st = t.stride()
        groups = [outer[lo:hi] for lo, hi in zip((0, *cuts), (*cuts, n))]
        walks = [collapse([shape[d] for d in g], [st[d] for d in g]) for g in groups]
        return None if None in walks else tuple(w[1] for w in walks)

    splits = [(n, n), *((q, q) for q in range(n - 1, 0, -1)),
              *((p, q) for q in range(n - 1, 0, -1) for p in range(q - 1, 0, -1))]
    for cuts in splits:
        found = [strides(t, cuts) for t in tensors]
        if None not in found:
            return (math.prod(shape[d] for d in outer[cuts[0]:cuts[1]]),
                    math.prod(shape[d] for d in outer[cuts[1]:]), found)
    return 1, 1, [strides(t, (n, n)) for t in tensors]


def _launch(group, outer, inner, c_total, rows_b, rows_c):
    """(bound launch, grid, input positions, trailing arguments) copying ``group`` into the
    output: ``bound(grid, out, *the group's inputs, *trailing)``. The trailing arguments
    are the unused input slots (a placeholder: the kernel prunes them by N) and the integers."""
    n = len(group)
    cmax = max(it[2] for it in group)
    # a program copies about TILE elements; a few rows of a wide input, or many short rows
    block_c = min(next_pow2(cmax), MAX_BLOCK_C)
    block_r = min(max(1, TILE // block_c), next_pow2(outer))
    starts, blocks = [], 0
    for it in group:
        starts.append(blocks)
        blocks += cdiv(it[2], block_c)
    q = (starts + [blocks] * PER_LAUNCH)[1:PER_LAUNCH]
    # FLAT: every input's dim and inner dims are one run of memory (item[9] is its stride)
    flat = all(it[9] is not None for it in group)
    pad = group + [group[0]] * (PER_LAUNCH - n)  # unused slots take the first input's integers
    grid = (cdiv(outer, block_r) * blocks,)
    # per input: columns, column offset, stride of dim (the run's stride when FLAT), inner
    # stride, row strides of A, B, C
    ints = (outer, inner, c_total, blocks, *q, rows_b, rows_c,
            *(p[2] for p in pad), *(p[3] for p in pad), *((p[9] if flat else p[4]) for p in pad),
            *(p[k] for k in range(5, 9) for p in pad))
    levels = 3 if rows_b > 1 else 2 if rows_c > 1 else 1
    bound = launcher(_cat_kernel).bind(N=n, LEVELS=levels, FLAT=flat, BLOCK_R=block_r, BLOCK_C=block_c,
                                       num_warps=NUM_WARPS)
    first = group[0][1]
    unused = (unused_pointer(first.device, first.dtype),) * (PER_LAUNCH - n)
    return bound, grid, [it[0] for it in group], (*unused, *ints)


@with_fallback("cat")
def cat(tensors, dim=0):
    """torch.cat(tensors, dim)."""
    return _run(tensors, dim)


@with_fallback("cat.out")
def cat_out(tensors, dim=0, *, out):
    return _run(tensors, dim, out)


declare("cat", {"cat": cat, "cat.out": cat_out})
