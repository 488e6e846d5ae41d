"""sum: over dims or everything, with keepdim and ``dtype=`` (integers and bool sum in int64)."""
import torch

from ..runtime import declare, with_fallback
from ._reduction import INTEGRAL, SUM, reduce

__all__ = ["sum_dim", "sum_all"]


def _sum(self, dim, keepdim, dtype, out=None):
    if dtype is None:
        dtype = torch.int64 if self.dtype in INTEGRAL else self.dtype
    # torch casts the input to dtype first, then accumulates in that dtype's opmath
    cast = None if dtype == self.dtype else dtype
    return reduce(self, dim, keepdim, op=SUM, out_dtype=dtype, cast=cast, out=out)


@with_fallback("sum.dim_IntList")
def sum_dim(self, dim, keepdim=False, *, dtype=None):
    """torch.sum(self, dim, keepdim, dtype=dtype)."""
    return _sum(self, dim, keepdim, dtype)


@with_fallback("sum")
def sum_all(self, *, dtype=None):
    """torch.sum(self, dtype=dtype)."""
    return _sum(self, None, False, dtype)


@with_fallback("sum.IntList_out")
def sum_dim_out(self, dim, keepdim=False, *, dtype=None, out):
    return _sum(self, dim, keepdim, dtype, out)


@with_fallback("sum.out")
def sum_all_out(self, *, dtype=None, out):
    return _sum(self, None, False, dtype, out)


declare("sum", {
    "sum.dim_IntList": sum_dim,
    "sum": sum_all,
    "sum.IntList_out": sum_dim_out,
    "sum.out": sum_all_out,
})
