"""The reduction skeleton shared by sum, mean, amax/max/argmax, prod, var, all/any and vector_norm
(cumsum's scan kernels reuse its dim handling).

Every reduction sees its input as a strided 3-D view ``[O, R, I]`` (outer kept dims,
reduced dims, inner kept dims) with element ``(o, r, i)`` at ``o*so + r*sr + i*si`` and
writes a contiguous ``[O, I]`` result. ``plan`` builds that view without copying when
the reduced dims merge into one strided dim and the kept dims into at most two (any
contiguous, permuted, sliced or expanded input whose dims line up); otherwise the input
is permuted to (kept, reduced) and copied once.

Two kernel shapes:
- rows (the reduced dim is the fastest one, ``|sr| <= |si|`` or ``I == 1``): a program
  takes ``BLOCK_M`` output rows and walks the reduced dim in ``BLOCK_N`` chunks;
- columns (``I > 1`` and the inner dim is faster): a program takes ``BLOCK_I`` adjacent
  outputs and walks the reduced dim in ``BLOCK_R`` steps, so loads stay coalesced.
When there are too few outputs to fill the GPU, the reduced dim is split over ``S``
programs that write partials (in the accumulator dtype) and a second launch of the
same kernels combines them.

Numerics: fp16/bf16 accumulate in fp32, integers and bool sum/prod in int64; each lane
accumulates elementwise across the loop and the tile is reduced once at the end. max/min
propagate NaN (a NaN anywhere wins); arg-reductions pick the first index on ties and the
first NaN's index when there is one, like torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Plans, Tuner, Unsupported, bucket, launcher, on_device, on_vendor_device
from ._common import (TL_DTYPE, allocation_stand_in, cdiv, kernel_dtype_ok, l2_bytes, needs_int64, next_pow2,
                      planned_output, sm_count)

# combine ops (constexpr OP)
SUM, PROD, MAX, MIN = 0, 1, 2, 3
# maps applied to each element before combining (constexpr PRE)
NONE, ABS, SQUARE, POW, NONZERO, SQDIFF = 0, 1, 2, 3, 4, 5
# maps applied to the result (constexpr POST): divide, sqrt, x**(1/p) via exp2/log2
DIV, SQRT, DIV_SQRT, ROOT = 1, 2, 3, 4

INTEGRAL = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)


# ----------------------------------------------------------------------------- jit helpers
@triton.jit
def _prep(v, c, p, CAST: tl.constexpr, ACC: tl.constexpr, PRE: tl.constexpr):
    if CAST is not None:
        v = v.to(CAST)
    if PRE == 4:  # NONZERO: compare in the input dtype (NaN counts as nonzero)
        v = (v != 0).to(ACC)
    else:
        v = v.to(ACC)
        if PRE == 1:
            v = tl.abs(v)
        elif PRE == 2:
            v = v * v
        elif PRE == 3:
            v = tl.exp2(p * tl.log2(tl.abs(v)))
        elif PRE == 5:
            d = v - c
            v = d * d
    return v


@triton.jit
def _load_step(ptrs, mask, c, p, OP: tl.constexpr, CAST: tl.constexpr, ACC: tl.constexpr, PRE: tl.constexpr,
               INIT: tl.constexpr, FLOAT: tl.constexpr, EVICT: tl.constexpr):
    """One step's elements, mapped by PRE, with INIT in the masked lanes."""
    if FLOAT and OP >= 2 and PRE == 0 and CAST is None:
        # max/min of a float input as it is: masked lanes load the identity (+-inf, exact in
        # every float type, also under the interpreter) directly, a select per element less
        # (H100, 4096x4096 bf16 amax: 21.6 -> 18.2 us with the max.NaN combine)
        if EVICT:
            v = tl.load(ptrs, mask=mask, other=INIT, eviction_policy="evict_first").to(ACC)
        else:
            v = tl.load(ptrs, mask=mask, other=INIT).to(ACC)
    else:
        if EVICT:
            v = tl.load(ptrs, mask=mask, other=0, eviction_policy="evict_first")
        else:
            v = tl.load(ptrs, mask=mask, other=0)
        v = tl.where(mask, _prep(v, c, p, CAST, ACC, PRE), INIT)
    return v


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _combine(a, b, OP: tl.constexpr):
    if OP == 0:
        r = a + b
    elif OP == 1:
        r = a * b
    elif OP == 2:
        # one max.NaN instruction per element; a compare-select pair that also tests for NaN
        # cost 5% at 16384x8192 bf16 on an H100 (95.5 against 100.4 us, 94% of copy bandwidth)
        r = tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)
    else:
        r = tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)
    return r


@triton.jit
def _has_nan(acc, AXIS: tl.constexpr):
    return tl.max((acc != acc).to(tl.int32), axis=AXIS) > 0


@triton.jit
def _finish(acc, AXIS: tl.constexpr, OP: tl.constexpr, FLOAT: tl.constexpr):
    # built-in max/min (they may drop NaN) plus an explicit NaN check: the interpreter runs
    # custom combine functions element by element, which is far too slow for CI
    if OP == 0:
        r = tl.sum(acc, axis=AXIS)
    elif OP == 1:
        r = tl.reduce(acc, AXIS, _mul)  # no built-in product (slow under the interpreter, fine on GPU)
    elif OP == 2:
        r = tl.max(acc, axis=AXIS)
    else:
        r = tl.min(acc, axis=AXIS)
    if FLOAT and OP >= 2:
        r = tl.where(_has_nan(acc, AXIS), float("nan"), r)
    return r


@triton.jit
def _post(r, div, inv_p, POST: tl.constexpr):
    if POST == 1:
        r = r / div
    elif POST == 2:
        r = tl.sqrt(r)
    elif POST == 3:
        r = tl.sqrt(r / div)
    elif POST == 4:
        r = tl.exp2(inv_p * tl.log2(r))
    return r


# ----------------------------------------------------------------------------- value reductions
@triton.jit
def _reduce_rows(
    x, out, center, M, R, I, so, sr, si, chunk, S, p, inv_p, div,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, CAST: tl.constexpr, ACC: tl.constexpr,
    INIT: tl.constexpr, FLOAT: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVICT: tl.constexpr,
):
    # EVICT: the input is read once, so its lines go first when L2 needs room (a 16384x8192
    # bf16 row sum on an H100: 2 rows of 8192 per program with 32 warps, 98.2 -> 94.4 us)
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        # split starts (pid_s * chunk) pass 2**31 when the reduced dim does (one row of 2**31 elements)
        pid_s = pid_s.to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    if INT64:
        rows = rows.to(tl.int64)
    base = (rows // I) * so + (rows % I) * si
    r0 = pid_s * chunk
    r_end = tl.minimum(R, r0 + chunk)
    c = tl.zeros([BLOCK_M], ACC)
    if PRE == 5:
        c = tl.load(center + rows, mask=rmask, other=0).to(ACC)
    acc = tl.full([BLOCK_M, BLOCK_N], INIT, ACC)
    for k in range(0, chunk, BLOCK_N):
        cols = r0 + k + tl.arange(0, BLOCK_N)
        if INT64:
            cols = cols.to(tl.int64)
        mask = rmask[:, None] & (cols < r_end)[None, :]
        v = _load_step(x + base[:, None] + cols[None, :] * sr, mask, c[:, None], p, OP, CAST, ACC, PRE, INIT,
                       FLOAT, EVICT)
        acc = _combine(acc, v, OP)
    r = _post(_finish(acc, 1, OP, FLOAT), div, inv_p, POST)
    tl.store(out + rows * S + pid_s, r.to(out.dtype.element_ty), mask=rmask)


@triton.jit
def _reduce_cols(
    x, out, center, O, R, I, so, sr, si, chunk, S, p, inv_p, div,
    OP: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr, CAST: tl.constexpr, ACC: tl.constexpr,
    INIT: tl.constexpr, FLOAT: tl.constexpr, INT64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        pid_s = pid_s.to(tl.int64)
    nib = tl.cdiv(I, BLOCK_I)
    o = pid // nib
    cols = (pid % nib) * BLOCK_I + tl.arange(0, BLOCK_I)
    cmask = cols < I
    if INT64:
        o = o.to(tl.int64)
        cols = cols.to(tl.int64)
    base = o * so + cols * si
    r0 = pid_s * chunk
    r_end = tl.minimum(R, r0 + chunk)
    c = tl.zeros([BLOCK_I], ACC)
    if PRE == 5:
        c = tl.load(center + o * I + cols, mask=cmask, other=0).to(ACC)
    acc = tl.full([BLOCK_R, BLOCK_I], INIT, ACC)
    for k in range(0, chunk, BLOCK_R):
        rr = r0 + k + tl.arange(0, BLOCK_R)
        if INT64:
            rr = rr.to(tl.int64)
        mask = (rr < r_end)[:, None] & cmask[None, :]
        v = _load_step(x + base[None, :] + rr[:, None] * sr, mask, c[None, :], p, OP, CAST, ACC, PRE, INIT,
                       FLOAT, 0)
        acc = _combine(acc, v, OP)
    r = _post(_finish(acc, 0, OP, FLOAT), div, inv_p, POST)
    tl.store(out + pid_s * O * I + o * I + cols, r.to(out.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------- arg reductions
@triton.jit
def _arg_step(bv, bi, v, i, IS_MAX: tl.constexpr):
    # a later chunk's index is always larger in the same lane, so ties keep the earlier one
    if IS_MAX:
        gt = v > bv
    else:
        gt = v < bv
    # ties only replace the sentinel index of a lane that has not seen an element yet
    take = gt | ((v != v) & (bv == bv)) | ((v == bv) & (i < bi))
    return tl.where(take, v, bv), tl.where(take, i, bi)


@triton.jit
def _arg_finish(bv, bi, AXIS: tl.constexpr, IS_MAX: tl.constexpr, FLOAT: tl.constexpr):
    """(value, first index) over AXIS: the extreme (NaN if any), then the least index holding it."""
    if IS_MAX:
        m = tl.max(bv, axis=AXIS)
    else:
        m = tl.min(bv, axis=AXIS)
    hit = bv == tl.expand_dims(m, AXIS)
    if FLOAT:
        nan = bv != bv
        any_nan = _has_nan(bv, AXIS)
        m = tl.where(any_nan, float("nan"), m)
        hit = tl.where(tl.expand_dims(any_nan, AXIS), nan, hit)
    i = tl.min(tl.where(hit, bi, 2**62), axis=AXIS)
    return m, i


@triton.jit
def _arg_rows(
    x, idx_in, vout, iout, M, R, I, so, sr, si, chunk, S,
    IS_MAX: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, FLOAT: tl.constexpr, IDX_IN: tl.constexpr,
    INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        pid_s = pid_s.to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    if INT64:
        rows = rows.to(tl.int64)
    base = (rows // I) * so + (rows % I) * si
    r0 = pid_s * chunk
    r_end = tl.minimum(R, r0 + chunk)
    bv = tl.full([BLOCK_M, BLOCK_N], INIT, ACC)
    bi = tl.full([BLOCK_M, BLOCK_N], 2**62, tl.int64)
    for k in range(0, chunk, BLOCK_N):
        cols = (r0 + k + tl.arange(0, BLOCK_N)).to(tl.int64)
        mask = rmask[:, None] & (cols < r_end)[None, :]
        offs = base[:, None] + cols[None, :] * sr
        v = tl.where(mask, tl.load(x + offs, mask=mask, other=0).to(ACC), INIT)
        i = cols[None, :] + tl.zeros([BLOCK_M, BLOCK_N], tl.int64)
        if IDX_IN:
            i = tl.load(idx_in + offs, mask=mask, other=2**62)
        bv, bi = _arg_step(bv, bi, v, tl.where(mask, i, 2**62), IS_MAX)
    v, i = _arg_finish(bv, bi, 1, IS_MAX, FLOAT)
    tl.store(vout + rows * S + pid_s, v.to(vout.dtype.element_ty), mask=rmask)
    tl.store(iout + rows * S + pid_s, i, mask=rmask)


@triton.jit
def _arg_cols(
    x, idx_in, vout, iout, O, R, I, so, sr, si, chunk, S,
    IS_MAX: tl.constexpr, ACC: tl.constexpr, INIT: tl.constexpr, FLOAT: tl.constexpr, IDX_IN: tl.constexpr,
    INT64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        pid_s = pid_s.to(tl.int64)
    nib = tl.cdiv(I, BLOCK_I)
    o = pid // nib
    cols = (pid % nib) * BLOCK_I + tl.arange(0, BLOCK_I)
    cmask = cols < I
    if INT64:
        o = o.to(tl.int64)
        cols = cols.to(tl.int64)
    base = o * so + cols * si
    r0 = pid_s * chunk
    r_end = tl.minimum(R, r0 + chunk)
    bv = tl.full([BLOCK_R, BLOCK_I], INIT, ACC)
    bi = tl.full([BLOCK_R, BLOCK_I], 2**62, tl.int64)
    for k in range(0, chunk, BLOCK_R):
        rr = (r0 + k + tl.arange(0, BLOCK_R)).to(tl.int64)
        mask = (rr < r_end)[:, None] & cmask[None, :]
        offs = base[None, :] + rr[:, None] * sr
        v = tl.where(mask, tl.load(x + offs, mask=mask, other=0).to(ACC), INIT)
        i = rr[:, None] + tl.zeros([BLOCK_R, BLOCK_I], tl.int64)
        if IDX_IN:
            i = tl.load(idx_in + offs, mask=mask, other=2**62)
        bv, bi = _arg_step(bv, bi, v, tl.where(mask, i, 2**62), IS_MAX)
    v, i = _arg_finish(bv, bi, 0, IS_MAX, FLOAT)
    dst = pid_s * O * I + o * I + cols
    tl.store(vout + dst, v.to(vout.dtype.element_ty), mask=cmask)
    tl.store(iout + dst, i, mask=cmask)


# ----------------------------------------------------------------------------- host side
def normalize_dims(ndim: int, dim, empty_all: bool = True) -> tuple:
    """Sorted, wrapped reduced dims; None means all, [] too unless ``empty_all`` is False
    (all/any reduce nothing then). Bad or repeated dims -> native."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    if len(dim) == 0:
        return tuple(range(ndim)) if empty_all else ()
    n = max(ndim, 1)
    out = set()
    for d in dim:
        if not -n <= d < n:
            raise Unsupported  # torch's IndexError
        d = d % n
        if d in out:
            raise Unsupported  # torch's "appears multiple times" error
        out.add(d)
    if ndim == 0:
        return ()
    return tuple(sorted(out))


def merge_dims(dims):
    """Merge (size, stride) pairs listed outermost first when each is contiguous over the next."""
    merged = []
    for size, stride in dims:
        if merged and merged[-1][1] == stride * size:
            merged[-1] = (merged[-1][0] * size, stride)
        else:
            merged.append((size, stride))
    return merged


class Geometry:
    __slots__ = ("O", "R", "I", "so", "sr", "si", "out_shape", "perm", "rows", "int64", "key")

    @property
    def M(self):
        return self.O * self.I


_PLANS: dict = {}


def plan(x: torch.Tensor, dims: tuple, keepdim: bool, ordered: bool = False) -> Geometry:
    """The ``[O, R, I]`` view of ``x`` reduced over ``dims`` (cached per shape, strides, dims).

    ``ordered``: the reduced index must be the logical (row-major) flat index, as
    arg-reductions over several dims need; otherwise reduced dims may be reordered by
    stride so that permuted layouts merge.
    """
    key = (x.shape, x.stride(), dims, keepdim, ordered)
    g = _PLANS.get(key)
    if g is not None:
        return g
    shape, strides = x.shape, x.stride()
    red = set(dims)
    g = Geometry()
    if keepdim:
        g.out_shape = tuple(1 if d in red else s for d, s in enumerate(shape))
    else:
        g.out_shape = tuple(s for d, s in enumerate(shape) if d not in red)
    rdims = [(shape[d], strides[d]) for d in dims if shape[d] != 1]
    if not ordered:
        rdims.sort(key=lambda p: -abs(p[1]))
    kdims = [(s, st) for d, (s, st) in enumerate(zip(shape, strides)) if d not in red and s != 1]
    rm, km = merge_dims(rdims), merge_dims(kdims)
    g.perm = None
    if len(rm) > 1 or len(km) > 2 or any(s == 0 for s in shape):
        # copy once into (kept..., reduced...) order; also empty tensors (strides arbitrary)
        g.perm = [d for d in range(len(shape)) if d not in red] + list(dims)
        R = 1
        for d in dims:
            R *= shape[d]
        O = 1
        for d in range(len(shape)):
            if d not in red:
                O *= shape[d]
        g.O, g.R, g.I, g.so, g.sr, g.si = O, R, 1, R, 1, 0
    else:
        g.R, g.sr = rm[0] if rm else (1, 0)
        if not km:
            g.O, g.so, g.I, g.si = 1, 0, 1, 0
        elif len(km) == 1:
            (n, s), = km
            if abs(s) < abs(g.sr):
                g.O, g.so, g.I, g.si = 1, 0, n, s
            else:
                g.O, g.so, g.I, g.si = n, s, 1, 0
        else:
            (g.O, g.so), (g.I, g.si) = km
    g.rows = g.I == 1 or abs(g.sr) <= abs(g.si)
    g.int64 = needs_int64(x)
    g.key = (g.rows, min(bucket(g.R), 1 << 16), min(bucket(g.M), 1 << 14))
    if len(_PLANS) > 4096:
        _PLANS.clear()
    _PLANS[key] = g
    return g


def source(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """``x`` itself, or its one-time copy in (kept, reduced) order when the view needs one."""
    if g.perm is None:
        return x
    return x.permute(g.perm).contiguous()


def check_input(x: torch.Tensor, *others) -> None:
    """Raise Unsupported unless every tensor is on the vendor's device and x's dtype is a kernel dtype."""
    if not on_vendor_device(x, *others) or not kernel_dtype_ok(x.dtype) or x.is_complex():
        raise Unsupported



def _interp() -> bool:
    return VENDOR is None or VENDOR.interpreter


def _splits(programs: int, R: int, block: int, width: int) -> tuple[int, int]:
    """(S, chunk): split the reduced dim over S programs when the outputs alone leave the GPU idle.

    ``block`` is the step along the reduced dim, ``width`` the outputs a program holds;
    a split keeps at least about 16K elements per program.
    """
    if _interp():
        target, min_chunk = 4, 2 * block  # small, so CI exercises the two-stage path
    else:
        target, min_chunk = 4 * sm_count(torch.device(VENDOR.device_type), 1), max(2 * block, 16384 // width)
    if programs * 2 >= target or R < 2 * min_chunk:
        return 1, R
    s = min(cdiv(target, programs), cdiv(R, min_chunk), 65535)
    chunk = cdiv(cdiv(R, s), block) * block
    return cdiv(R, chunk), chunk


_UNCOMPILABLE: set = set()


def tuned(tuner, key, run, variant=(), cold=False) -> dict:
    """``tuner.choose(key, run, cold)``, or Unsupported (torch's kernel) when no candidate compiles.

    A Triton release can reject a kernel outright (a compiler pass failing on every config);
    the call then goes to torch instead of raising. The failure is remembered per key and
    ``variant`` (what compiles also depends on dtypes and constexprs) so that later calls do
    not recompile every candidate.
    """
    failed = (tuner.name, key, variant)
    if failed in _UNCOMPILABLE:
        raise Unsupported
    try:
        return tuner.choose(key, run, cold)
    except RuntimeError as err:  # the tuner's "no candidate config ran"
        _UNCOMPILABLE.add(failed)
        raise Unsupported from err


# configs: BLOCK_N / BLOCK_I cap the block along the contiguous dim, TILE is the elements a
# program holds per step (the other block dim is TILE // that one)
_row_tuner = Tuner("reduce_rows", kernels=[_reduce_rows, _arg_rows])
_col_tuner = Tuner("reduce_cols", kernels=[_reduce_cols, _arg_cols])


def _row_blocks(cfg, M, R):
    bn = min(cfg["BLOCK_N"], next_pow2(max(R, 1)))
    bm = min(max(1, cfg["TILE"] // bn), next_pow2(M))
    return bm, bn


def _col_blocks(cfg, R, I):
    bi = min(cfg["BLOCK_I"], next_pow2(I))
    br = min(max(1, cfg["TILE"] // bi), next_pow2(max(R, 1)))
    return br, bi


_LAYOUTS: dict = {}


def _layout(cfg, g: Geometry) -> tuple:
    """Blocks, grid and split of ``g`` under ``cfg``, and of the combining launch (memoized).

    (block along outputs or reduced dim, the other block, programs, S, chunk, then the
    same two blocks and programs for the second launch when S > 1).
    """
    key = (id(cfg), g.rows, g.O, g.R, g.I)  # tuner configs live as long as the process
    lay = _LAYOUTS.get(key)
    if lay is None:
        if g.rows:
            a, b = _row_blocks(cfg, g.M, g.R)
            programs = cdiv(g.M, a)
            S, chunk = _splits(programs, g.R, b, a)
            a2, b2 = _row_blocks(cfg, g.M, S)
            programs2 = cdiv(g.M, a2)
        else:
            a, b = _col_blocks(cfg, g.R, g.I)
            programs = g.O * cdiv(g.I, b)
            S, chunk = _splits(programs, g.R, a, b)
            a2, b2 = _col_blocks(cfg, S, g.M)
            programs2 = cdiv(g.M, b2)
        if len(_LAYOUTS) > 4096:
            _LAYOUTS.clear()
        lay = _LAYOUTS[key] = (a, b, programs, S, chunk, a2, b2, programs2)
    return lay


def init_value(op: int, acc: torch.dtype):
    """The identity of ``op`` in ``acc`` (what masked lanes and empty reductions hold)."""
    if op == SUM:
        return 0
    if op == PROD:
        return 1
    if acc.is_floating_point:
        return float("-inf") if op == MAX else float("inf")
    info = torch.iinfo(acc)
    return info.min if op == MAX else info.max


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types, fp64 for fp64, int64 for integers and bool (sum/prod)."""
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    if dtype == torch.float64:
        return torch.float64
    return torch.int64


def _tl(dtype):
    return TL_DTYPE[dtype]


def launch_reduce(x, g: Geometry, out, *, op, acc, pre=NONE, post=NONE, cast=None, p=0.0, div=1,
                  center=None, init=None):
    """Reduce ``x`` (already ``source``-d) laid out as ``g`` into the contiguous ``out`` ([M]).

    Returns the launch as (bound kernel, grid, integer arguments after x, out, center) when
    it was a single one, else None.
    """
    int64 = g.int64
    if init is None:
        init = init_value(op, acc)
    acc_tl = _tl(acc)
    flt = acc.is_floating_point
    cast_tl = None if cast is None else _tl(cast)
    inv_p = 1.0 / p if p not in (0, 0.0) else 0.0
    if center is None:
        center = out

    rows = g.rows
    kernel = _reduce_rows if rows else _reduce_cols
    blocks = ("BLOCK_M", "BLOCK_N") if rows else ("BLOCK_R", "BLOCK_I")

    def run(cfg):
        a, b, programs, S, chunk, a2, b2, programs2 = _layout(cfg, g)
        common = dict(ACC=acc_tl, INIT=init, FLOAT=flt, INT64=int64, num_warps=cfg["num_warps"])
        evict = {"EVICT": cfg.get("EVICT", 0)} if rows else {}
        dst = out if S == 1 else torch.empty((g.M, S) if rows else (S, g.M), dtype=acc, device=out.device)
        bound = launcher(kernel).bind(OP=op, PRE=pre, POST=post if S == 1 else NONE, CAST=cast_tl,
                                      **{blocks[0]: a, blocks[1]: b}, **evict, **common)
        ints = (g.M if rows else g.O, g.R, g.I, g.so, g.sr, g.si, chunk, S, p, inv_p, div)
        bound((programs, S), x, dst, center, *ints)
        if S == 1:
            return bound, (programs, S), ints
        # the second stage reduces each output's S partial results (rows of dst, or its columns)
        geometry = (g.M, S, 1, S, 1, 0) if rows else (1, S, g.M, 0, g.M, 1)
        launcher(kernel)[(programs2, 1)](dst, out, out, *geometry, S, 1, p, inv_p, div, OP=op, PRE=NONE, POST=post,
                                         CAST=None, **{blocks[0]: a2, blocks[1]: b2},
                                         **({"EVICT": 0} if rows else {}), **common)
        return None

    tuner = _row_tuner if g.rows else _col_tuner
    # the op and its per-element step are part of the key: a config that suits a sum does not
    # suit every reduction (H100, 16384x8192 bf16: amax on the sum's pick of two 8192-wide rows
    # per program with 32 warps took 134 us against 101 on its own pick)
    key = ("val", x.element_size(), op, pre) + g.key
    # an input larger than L2 is timed with L2 cleared, the state a model's earlier kernels
    # leave it in: replayed warm, the candidates time alike and the pick is noise (H100,
    # 16384x8192 bf16 amax: the warm pick took 100.0 us with L2 cleared, the best config 95.5)
    cold = g.M * g.R * x.element_size() > l2_bytes(x.device, 1 << 16)
    return run(tuned(tuner, key, run, (x.dtype, acc, op, pre, post, cast), cold))


def reduce(x, dim, keepdim, *, op, out_dtype, acc=None, pre=NONE, post=NONE, cast=None, p=0.0,
           div=None, out=None, empty_ok=True, empty_all=True, init=None):
    """``x`` reduced over ``dim`` (int, list or None) into a new ``out_dtype`` tensor, or ``out``.

    ``div=None`` with a dividing ``post`` divides by the reduced element count (mean).
    ``empty_ok=False``: an empty reduced dim has no identity (amax), torch raises.
    ``init``: the identity when it is not the op's usual one (all/any over 0/1 values).
    """
    sig = None
    if out is None:
        sig = (x.shape, x.stride(), x.dtype, tuple(dim) if type(dim) is list else dim, keepdim, op, out_dtype,
               acc, pre, post, cast, p, div, empty_all, init)
        planned = _CALLS.get(sig)
        if planned is not None and on_device(x):
            out_like, shape, strides, prepared = planned
            out = planned_output(out_like, shape, strides, out_dtype, x)
            prepared(x, out, out)
            return out
    check_input(x, out)
    if not kernel_dtype_ok(out_dtype) or (cast is not None and not kernel_dtype_ok(cast)):
        raise Unsupported
    dims = normalize_dims(x.dim(), dim, empty_all)
    g = plan(x, dims, keepdim)
    if g.R == 0 and not empty_ok:
        raise Unsupported
    if out is None:
        out = torch.empty(g.out_shape, dtype=out_dtype, device=x.device)
    elif out.shape != g.out_shape or out.dtype != out_dtype or not out.is_contiguous():
        raise Unsupported  # resizing / casting out= is torch's business
    if out.numel() == 0:
        return out
    if acc is None:
        acc = acc_dtype(cast or x.dtype)
    if div is None:
        div = g.R
    launched = launch_reduce(source(x, g), g, out, op=op, acc=acc, pre=pre, post=post, cast=cast, p=p, div=div,
                             init=init)
    if sig is not None and launched is not None and g.perm is None:
        bound, grid, ints = launched
        _CALLS.keep(sig, (allocation_stand_in(out), out.shape, out.stride(), bound.prepare(grid, ints).planned))
    return out


# reduce() call signature -> (output's allocation stand-in, shape, strides, prepared launch),
# for reductions of one launch over x as it is (no reordering copy)
_CALLS = Plans()


def arg_reduce(x, dim, keepdim, is_max: bool, values: bool):
    """(values or None, int64 indices) of the max/min over one dim, or over all dims (dim None)."""
    sig = (x.shape, x.stride(), x.dtype, tuple(dim) if type(dim) is list else dim, keepdim, is_max, values)
    planned = _ARG_CALLS.get(sig)
    if planned is not None and on_device(x):
        result = planned(x)
        if result is not None:
            return result
    check_input(x)
    if dim is None:
        g = plan(x, tuple(range(x.dim())), False, ordered=True)
        out_shape = (1,) * x.dim() if keepdim else ()
    else:
        g = plan(x, normalize_dims(x.dim(), dim), keepdim, ordered=True)
        out_shape = g.out_shape
    if g.R == 0:
        raise Unsupported  # torch: "cannot perform reduction on an empty dim"
    dev = x.device
    iout = torch.empty(out_shape, dtype=torch.int64, device=dev)
    vout = torch.empty(out_shape, dtype=x.dtype, device=dev) if values else None
    if iout.numel() == 0:
        return vout, iout
    src = source(x, g)
    # compare half types in fp32 and every integer type in int64 (exact), one loop-carried dtype
    acc = acc_dtype(x.dtype)
    acc_tl = _tl(acc)
    init = init_value(MAX if is_max else MIN, acc)
    int64 = g.int64
    vdst = vout if values else torch.empty(out_shape, dtype=acc, device=dev)
    steps = []  # the launches of the last run: (bound, grid, integers, partials shape or None)

    def run(cfg):
        steps.clear()
        common = dict(IS_MAX=is_max, ACC=acc_tl, INIT=init, FLOAT=acc.is_floating_point, INT64=int64,
                      num_warps=cfg["num_warps"])
        if g.rows:
            bm, bn, programs, S, chunk, bm2, bn2, programs2 = _layout(cfg, g)
            kernel, blocks, blocks2 = _arg_rows, dict(BLOCK_M=bm, BLOCK_N=bn), dict(BLOCK_M=bm2, BLOCK_N=bn2)
            one = (g.M, g.R, g.I, g.so, g.sr, g.si, g.R, 1)
            first = (g.M, g.R, g.I, g.so, g.sr, g.si, chunk, S)
            second = (g.M, S, 1, S, 1, 0, S, 1)
            partials = (g.M, S)
        else:
            br, bi, programs, S, chunk, br2, bi2, programs2 = _layout(cfg, g)
            kernel, blocks, blocks2 = _arg_cols, dict(BLOCK_R=br, BLOCK_I=bi), dict(BLOCK_R=br2, BLOCK_I=bi2)
            one = (g.O, g.R, g.I, g.so, g.sr, g.si, g.R, 1)
            first = (g.O, g.R, g.I, g.so, g.sr, g.si, chunk, S)
            second = (1, S, g.M, 0, g.M, 1, S, 1)
            partials = (S, g.M)
        if S == 1:
            bound = launcher(kernel).bind(IDX_IN=False, **blocks, **common)
            bound((programs, 1), src, src, vdst, iout, *one)
            steps.append((bound, (programs, 1), one, None))
            return
        pv = torch.empty(partials, dtype=acc, device=dev)
        pi = torch.empty(partials, dtype=torch.int64, device=dev)
        bound = launcher(kernel).bind(IDX_IN=False, **blocks, **common)
        bound((programs, S), src, src, pv, pi, *first)
        bound2 = launcher(kernel).bind(IDX_IN=True, **blocks2, **common)
        bound2((programs2, 1), pv, pi, vdst, iout, *second)
        steps.extend([(bound, (programs, S), first, (pv, pi)), (bound2, (programs2, 1), second, None)])

    tuner = _row_tuner if g.rows else _col_tuner
    run(tuned(tuner, ("arg", x.element_size()) + g.key, run, (x.dtype, is_max, values)))
    if g.perm is None and steps:
        _ARG_CALLS.keep(sig, _ArgPlan(steps, vdst, iout, values))
    return vout, iout


class _ArgPlan:
    """A kept arg-reduction of one call signature over x as it is: its outputs' and partial
    results' allocation stand-ins and its one or two prepared launches (the argmax of a
    decode step's logits: four allocations and two launches a call)."""

    __slots__ = ("launches", "vdst_like", "iout_like", "partials_like", "values")

    def __init__(self, steps, vdst, iout, values):
        self.launches = [bound.prepare(grid, ints).planned for bound, grid, ints, _ in steps]
        self.vdst_like, self.iout_like = allocation_stand_in(vdst), allocation_stand_in(iout)
        partials = steps[0][3]
        self.partials_like = None if partials is None else tuple(allocation_stand_in(t) for t in partials)
        self.values = values

    def __call__(self, x):
        """(values or None, indices), or None where a stand-in is missing or on another device."""
        dev = x.get_device()
        iout_like, vdst_like = self.iout_like, self.vdst_like
        if iout_like is None or vdst_like is None or iout_like.get_device() != dev:
            return None
        iout, vdst = torch.empty_like(iout_like), torch.empty_like(vdst_like)
        if self.partials_like is None:
            self.launches[0](x, x, vdst, iout)
        else:
            pv_like, pi_like = self.partials_like
            if pv_like is None or pi_like is None:
                return None
            pv, pi = torch.empty_like(pv_like), torch.empty_like(pi_like)
            self.launches[0](x, x, pv, pi)
            self.launches[1](pv, pi, vdst, iout)
        return (vdst if self.values else None), iout


# arg_reduce() call signature -> _ArgPlan, for arg-reductions over x as it is (no reordering copy)
_ARG_CALLS = Plans()
