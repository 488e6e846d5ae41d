"""linalg_vector_norm: ord 2, 1, inf, -inf, 0 and any other p, over dims, with keepdim and ``dtype=``."""
import math

import torch

from ..runtime import Unsupported, declare, with_fallback
from ._reduction import ABS, MAX, MIN, NONZERO, POW, ROOT, SQRT, SQUARE, SUM, reduce

__all__ = ["linalg_vector_norm"]


@with_fallback("linalg_vector_norm")
def linalg_vector_norm(self, ord=2, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.vector_norm(self, ord, dim, keepdim, dtype=dtype)."""
    if not self.dtype.is_floating_point or (dtype is not None and not dtype.is_floating_point):
        raise Unsupported  # integer inputs and complex: torch's errors / kernels
    dtype = dtype or self.dtype
    cast = None if dtype == self.dtype else dtype
    ord = float(ord)
    kw = dict(out_dtype=dtype, cast=cast)
    if ord == 2:
        return reduce(self, dim, keepdim, op=SUM, pre=SQUARE, post=SQRT, **kw)
    if ord == 1:
        return reduce(self, dim, keepdim, op=SUM, pre=ABS, **kw)
    if ord == 0:
        # compare in fp32 (exact for half types; the interpreter mishandles bf16 != 0 here)
        kw["cast"] = torch.float32 if dtype in (torch.float16, torch.bfloat16) else cast
        return reduce(self, dim, keepdim, op=SUM, pre=NONZERO, acc=_acc(dtype), **kw)
    if math.isinf(ord):
        # no identity for max/min of an empty set: torch raises
        return reduce(self, dim, keepdim, op=MAX if ord > 0 else MIN, pre=ABS, empty_ok=False, **kw)
    if dtype == torch.float64 or ord < 0 or math.isnan(ord):
        raise Unsupported  # |x|**p goes through fp32 exp2/log2; negative p and fp64 stay native
    return reduce(self, dim, keepdim, op=SUM, pre=POW, post=ROOT, p=ord, **kw)


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


declare("linalg_vector_norm", {"linalg_vector_norm": linalg_vector_norm})
