"""all / any: over dims or everything; bool result (uint8 stays uint8, as in torch); NaN is true."""
import torch

from ..runtime import declare, with_fallback
from ._reduction import MAX, MIN, NONZERO, reduce

__all__ = ["all_dims", "any_dims", "all_all", "any_all"]


def _run(self, dim, keepdim, is_all):
    out_dtype = torch.uint8 if self.dtype == torch.uint8 else torch.bool
    # each element becomes 0/1 in int32; all = min, any = max (empty: min -> 1, max -> 0)
    return reduce(self, dim, keepdim, op=MIN if is_all else MAX, pre=NONZERO, acc=torch.int32,
                  out_dtype=out_dtype, empty_all=False, init=int(is_all))


@with_fallback("all.dims")
def all_dims(self, dim=None, keepdim=False):
    """torch.all(self, dim, keepdim) over a list of dims."""
    return _run(self, dim, keepdim, True)


@with_fallback("all.dim")
def all_dim(self, dim, keepdim=False):
    return _run(self, dim, keepdim, True)


@with_fallback("all")
def all_all(self):
    """torch.all(self)."""
    return _run(self, None, False, True)


@with_fallback("any.dims")
def any_dims(self, dim=None, keepdim=False):
    """torch.any(self, dim, keepdim) over a list of dims."""
    return _run(self, dim, keepdim, False)


@with_fallback("any.dim")
def any_dim(self, dim, keepdim=False):
    return _run(self, dim, keepdim, False)


@with_fallback("any")
def any_all(self):
    """torch.any(self)."""
    return _run(self, None, False, False)


declare("all", {"all.dims": all_dims, "all.dim": all_dim, "all": all_all})
declare("any", {"any.dims": any_dims, "any.dim": any_dim, "any": any_all})
