"""mean: over dims or everything, with keepdim and ``dtype=``; integer inputs without dtype -> torch's error."""
import torch

from ..runtime import Unsupported, declare, with_fallback
from ._reduction import DIV, SUM, reduce

__all__ = ["mean_dim", "mean_all"]


def _mean(self, dim, keepdim, dtype, out=None):
    dtype = dtype or self.dtype
    if not dtype.is_floating_point:
        raise Unsupported  # torch: "mean(): could not infer output dtype"
    cast = None if dtype == self.dtype else dtype
    # the sum divided by the count (not multiplied by 1/count), rounded once to dtype
    return reduce(self, dim, keepdim, op=SUM, post=DIV, out_dtype=dtype, cast=cast, out=out)


@with_fallback("mean.dim")
def mean_dim(self, dim, keepdim=False, *, dtype=None):
    """torch.mean(self, dim, keepdim, dtype=dtype)."""
    return _mean(self, dim, keepdim, dtype)


@with_fallback("mean")
def mean_all(self, *, dtype=None):
    """torch.mean(self, dtype=dtype)."""
    return _mean(self, None, False, dtype)


@with_fallback("mean.out")
def mean_out(self, dim, keepdim=False, *, dtype=None, out):
    return _mean(self, dim, keepdim, dtype, out)


declare("mean", {"mean.dim": mean_dim, "mean": mean_all, "mean.out": mean_out})
