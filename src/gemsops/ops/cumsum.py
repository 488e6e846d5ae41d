"""cumsum: inclusive prefix sum along one dim (``tl.cumsum`` per block, a running carry across
blocks), with ``dtype=``; integers and bool accumulate in int64, fp16/bf16 in fp32."""
import torch
import triton
import triton.language as tl

from ..runtime import Tuner, Unsupported, bucket, declare, launcher, with_fallback
from ._common import TL_DTYPE, cdiv, kernel_dtype_ok, needs_int64, next_pow2
from ._reduction import INTEGRAL, acc_dtype, check_input, merge_dims, normalize_dims, tuned

__all__ = ["cumsum"]


@triton.jit
def _scan_rows(
    x, out, M, R, I, so, sr, si, oo, orr, oi,
    CAST: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    if INT64:
        rows = rows.to(tl.int64)
    o = rows // I
    i = rows % I
    base = o * so + i * si
    obase = o * oo + i * oi
    carry = tl.zeros([BLOCK_M], ACC)
    for k in range(0, R, BLOCK_N):
        cols = k + tl.arange(0, BLOCK_N)
        if INT64:
            cols = cols.to(tl.int64)
        mask = rmask[:, None] & (cols < R)[None, :]
        v = tl.load(x + base[:, None] + cols[None, :] * sr, mask=mask, other=0)
        if CAST is not None:
            v = v.to(CAST)
        v = v.to(ACC)
        c = tl.cumsum(v, axis=1) + carry[:, None]
        tl.store(out + obase[:, None] + cols[None, :] * orr, c.to(out.dtype.element_ty), mask=mask)
        # The carry is the block's last prefix (masked lanes load 0), picked out by a
        # select-and-sum rather than `carry += tl.sum(v)`: Triton 3.6's
        # OptimizeThreadLocality pass rewrites a loop-carried sum of a loaded tile and
        # asserts the loop result has exactly one use, which aborts compilation here
        # (the carry is dead after the loop). It also makes the next block continue from
        # the exact value stored, as a sequential scan would.
        carry = tl.sum(tl.where(tl.arange(0, BLOCK_N)[None, :] == BLOCK_N - 1, c, 0), axis=1)


@triton.jit
def _scan_cols(
    x, out, O, R, I, so, sr, si, oo, orr, oi,
    CAST: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):
    pid = tl.program_id(0)
    nib = tl.cdiv(I, BLOCK_I)
    o = pid // nib
    cols = (pid % nib) * BLOCK_I + tl.arange(0, BLOCK_I)
    cmask = cols < I
    if INT64:
        o = o.to(tl.int64)
        cols = cols.to(tl.int64)
    base = o * so + cols * si
    obase = o * oo + cols * oi
    carry = tl.zeros([BLOCK_I], ACC)
    for k in range(0, R, BLOCK_R):
        rr = k + tl.arange(0, BLOCK_R)
        if INT64:
            rr = rr.to(tl.int64)
        mask = (rr < R)[:, None] & cmask[None, :]
        v = tl.load(x + base[None, :] + rr[:, None] * sr, mask=mask, other=0)
        if CAST is not None:
            v = v.to(CAST)
        v = v.to(ACC)
        c = tl.cumsum(v, axis=0) + carry[None, :]
        tl.store(out + obase[None, :] + rr[:, None] * orr, c.to(out.dtype.element_ty), mask=mask)
        # the block's last prefix, as in _scan_rows
        carry = tl.sum(tl.where(tl.arange(0, BLOCK_R)[:, None] == BLOCK_R - 1, c, 0), axis=0)


_rows_tuner = Tuner("scan_rows", kernels=[_scan_rows])
_cols_tuner = Tuner("scan_cols", kernels=[_scan_cols])


def _split(t, d):
    """(O, R, I, so, sr, si) of ``t`` around dim ``d``, or None when the dims before/after do not merge."""
    shape, strides = t.shape, t.stride()
    pre = merge_dims([(s, st) for s, st in zip(shape[:d], strides[:d]) if s != 1])
    post = merge_dims([(s, st) for s, st in zip(shape[d + 1:], strides[d + 1:]) if s != 1])
    if len(pre) > 1 or len(post) > 1:
        return None
    O, so = pre[0] if pre else (1, 0)
    I, si = post[0] if post else (1, 0)
    return O, shape[d], I, so, strides[d], si


def _scan(self, dim, dtype, out=None):
    check_input(self, out)
    if dtype is None:
        dtype = torch.int64 if self.dtype in INTEGRAL else self.dtype
    if not kernel_dtype_ok(dtype):
        raise Unsupported
    d = normalize_dims(self.dim(), dim)[0]
    if out is None:
        out = torch.empty(self.shape, dtype=dtype, device=self.device)
    elif out.dtype != dtype or out.shape != self.shape:
        raise Unsupported  # resizing / casting out= is torch's business
    if out.numel() == 0:
        return out
    ogeo = _split(out, d)
    if ogeo is None or any(s == 0 and n > 1 for s, n in zip(out.stride(), out.shape)):
        raise Unsupported  # an overlapping out= is torch's error
    if out is not self and out.untyped_storage().data_ptr() == self.untyped_storage().data_ptr() and not (
            out.data_ptr() == self.data_ptr() and out.stride() == self.stride()):
        raise Unsupported  # out= partly overlapping the input
    geo = _split(self, d)
    if geo is None:
        self = self.contiguous()
        geo = _split(self, d)
    O, R, I, so, sr, si = geo
    _, _, _, oo, orr, oi = ogeo
    acc = acc_dtype(dtype)
    cast = None if dtype == self.dtype else TL_DTYPE[dtype]
    int64 = needs_int64(self, out)
    rows = I == 1 or abs(sr) <= abs(si)
    key = (min(bucket(R), 1 << 16), min(bucket(O * I), 1 << 14), self.element_size())

    def run(cfg, out=out):
        common = dict(CAST=cast, ACC=TL_DTYPE[acc], INT64=int64, num_warps=cfg["num_warps"])
        if rows:
            bn = min(cfg["BLOCK_N"], next_pow2(R))
            bm = min(max(1, cfg["TILE"] // bn), next_pow2(O * I))
            launcher(_scan_rows)[(cdiv(O * I, bm),)](self, out, O * I, R, I, so, sr, si, oo, orr, oi,
                                                  BLOCK_M=bm, BLOCK_N=bn, **common)
        else:
            bi = min(cfg["BLOCK_I"], next_pow2(I))
            br = min(max(1, cfg["TILE"] // bi), next_pow2(R))
            launcher(_scan_cols)[(O * cdiv(I, bi),)](self, out, O, R, I, so, sr, si, oo, orr, oi,
                                                 BLOCK_R=br, BLOCK_I=bi, **common)

    # tuning launches every candidate: an in-place scan must not be applied to its input twice
    trial = run if out is not self else (lambda cfg: run(cfg, torch.empty_strided(out.shape, out.stride(),
                                                                                  dtype=out.dtype, device=out.device)))
    tuner = _rows_tuner if rows else _cols_tuner
    run(tuned(tuner, (rows,) + key, trial, (self.dtype, dtype)))
    return out


@with_fallback("cumsum")
def cumsum(self, dim, *, dtype=None):
    """torch.cumsum(self, dim, dtype=dtype)."""
    if self.dim() == 0:
        check_input(self)
        normalize_dims(0, dim)
        return _scan(self.reshape(1), 0, dtype).reshape(())
    return _scan(self, dim, dtype)


@with_fallback("cumsum.out")
def cumsum_out(self, dim, *, dtype=None, out):
    if self.dim() == 0:
        raise Unsupported
    return _scan(self, dim, dtype, out)


@with_fallback("cumsum_")
def cumsum_inplace(self, dim, *, dtype=None):
    if self.dim() == 0 or (dtype is not None and dtype != self.dtype):
        raise Unsupported
    # in place: each element is loaded before its own store, and programs own disjoint lines
    return _scan(self, dim, self.dtype, out=self)


declare("cumsum", {"cumsum": cumsum, "cumsum.out": cumsum_out, "cumsum_": cumsum_inplace})
