"""var / std / var_mean / std_mean with ``correction`` and keepdim, as two passes (the mean, then
the sum of squared deviations from it), which stays accurate when the mean dwarfs the spread.
Rows that fit one block do both passes on registers after a single read."""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, declare, launcher, with_fallback
from ._common import TL_DTYPE, cdiv, next_pow2
from ._reduction import (DIV, DIV_SQRT, SQDIFF, SUM, acc_dtype, check_input, launch_reduce, normalize_dims, plan,
                         source)

ONEPASS_MAX = 4096  # longest row read once


@triton.jit
def _var_rows(x, out, mean_out, M, R, I, so, sr, si, div,
              ACC: tl.constexpr, SQRT: tl.constexpr, INT64: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    if INT64:
        rows = rows.to(tl.int64)
    base = (rows // I) * so + (rows % I) * si
    cols = tl.arange(0, BLOCK_N)
    mask = rmask[:, None] & (cols < R)[None, :]
    v = tl.load(x + base[:, None] + cols[None, :] * sr, mask=mask, other=0).to(ACC)
    mean = tl.sum(v, axis=1) / R
    d = tl.where(mask, v - mean[:, None], 0)
    var = tl.sum(d * d, axis=1) / div
    if SQRT:
        var = tl.sqrt(var)
    tl.store(out + rows, var.to(out.dtype.element_ty), mask=rmask)
    tl.store(mean_out + rows, mean.to(mean_out.dtype.element_ty), mask=rmask)

__all__ = ["var", "std", "var_mean", "std_mean"]


def _moments(self, dim, correction, keepdim, sqrt):
    check_input(self)
    if not self.dtype.is_floating_point:
        raise Unsupported  # torch: var/std only support floating point and complex
    g = plan(self, normalize_dims(self.dim(), dim), keepdim)
    acc = acc_dtype(self.dtype)
    res = torch.empty(g.out_shape, dtype=self.dtype, device=self.device)
    mean = torch.empty(g.out_shape, dtype=acc, device=self.device)
    if res.numel() == 0:
        return res, mean.to(self.dtype)
    src = source(self, g)
    # torch divides by max(0, N - correction): N <= correction gives inf or nan
    div = max(0, g.R - (1 if correction is None else correction))
    if float(div).is_integer():
        div = int(div)  # an int argument keeps fp64 exact (Triton passes Python floats as fp32)
    if g.rows and 1 <= g.R <= ONEPASS_MAX:
        bn = next_pow2(g.R)
        bm = min(max(1, 2048 // bn), next_pow2(g.M))
        launcher(_var_rows)[(cdiv(g.M, bm),)](src, res, mean, g.M, g.R, g.I, g.so, g.sr, g.si, div,
                                          ACC=TL_DTYPE[acc], SQRT=sqrt, INT64=g.int64, BLOCK_M=bm, BLOCK_N=bn,
                                          num_warps=4 if bm * bn <= 2048 else 8)
        return res, mean
    launch_reduce(src, g, mean, op=SUM, acc=acc, post=DIV, div=g.R)
    launch_reduce(src, g, res, op=SUM, acc=acc, pre=SQDIFF, post=DIV_SQRT if sqrt else DIV, div=div,
                  center=mean)
    return res, mean


@with_fallback("var.correction")
def var(self, dim=None, *, correction=None, keepdim=False):
    """torch.var(self, dim, correction=correction, keepdim=keepdim)."""
    return _moments(self, dim, correction, keepdim, False)[0]


@with_fallback("std.correction")
def std(self, dim=None, *, correction=None, keepdim=False):
    """torch.std(self, dim, correction=correction, keepdim=keepdim)."""
    return _moments(self, dim, correction, keepdim, True)[0]


def _with_mean(self, dim, correction, keepdim, sqrt):
    res, mean = _moments(self, dim, correction, keepdim, sqrt)
    return res, mean if mean.dtype == self.dtype else mean.to(self.dtype)


@with_fallback("var_mean.correction")
def var_mean(self, dim=None, *, correction=None, keepdim=False):
    """torch.var_mean(self, dim, correction=correction, keepdim=keepdim)."""
    return _with_mean(self, dim, correction, keepdim, False)


@with_fallback("std_mean.correction")
def std_mean(self, dim=None, *, correction=None, keepdim=False):
    """torch.std_mean(self, dim, correction=correction, keepdim=keepdim)."""
    return _with_mean(self, dim, correction, keepdim, True)


declare("var", {"var.correction": var})
declare("std", {"std.correction": std})
declare("var_mean", {"var_mean.correction": var_mean})
declare("std_mean", {"std_mean.correction": std_mean})
