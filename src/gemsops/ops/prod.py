"""prod: over one dim or everything, with keepdim and ``dtype=`` (integers and bool in int64)."""
import torch

from ..runtime import declare, with_fallback
from ._reduction import INTEGRAL, PROD, reduce

__all__ = ["prod_dim", "prod_all"]


def _prod(self, dim, keepdim, dtype):
    if dtype is None:
        dtype = torch.int64 if self.dtype in INTEGRAL else self.dtype
    cast = None if dtype == self.dtype else dtype
    return reduce(self, dim, keepdim, op=PROD, out_dtype=dtype, cast=cast)


@with_fallback("prod.dim_int")
def prod_dim(self, dim, keepdim=False, *, dtype=None):
    """torch.prod(self, dim, keepdim, dtype=dtype)."""
    return _prod(self, dim, keepdim, dtype)


@with_fallback("prod")
def prod_all(self, *, dtype=None):
    """torch.prod(self, dtype=dtype)."""
    return _prod(self, None, False, dtype)


declare("prod", {"prod.dim_int": prod_dim, "prod": prod_all})
