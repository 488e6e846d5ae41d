"""amax/amin, max/min (with indices, and over everything), argmax/argmin. NaN wins; ties -> first index."""
import torch

from ..runtime import Unsupported, declare, with_fallback
from ._reduction import MAX, MIN, arg_reduce, reduce

__all__ = ["amax", "amin", "max_dim", "min_dim", "max_all", "min_all", "argmax", "argmin"]


def _extreme(self, dim, keepdim, op):
    # an empty reduced dim has no identity: torch raises, so it goes native
    return reduce(self, dim, keepdim, op=op, out_dtype=self.dtype, empty_ok=False)


@with_fallback("amax")
def amax(self, dim=(), keepdim=False):
    """torch.amax(self, dim, keepdim)."""
    return _extreme(self, dim, keepdim, MAX)


@with_fallback("amin")
def amin(self, dim=(), keepdim=False):
    """torch.amin(self, dim, keepdim)."""
    return _extreme(self, dim, keepdim, MIN)


@with_fallback("max")
def max_all(self):
    """torch.max(self)."""
    return _extreme(self, None, False, MAX)


@with_fallback("min")
def min_all(self):
    """torch.min(self)."""
    return _extreme(self, None, False, MIN)


@with_fallback("max.dim")
def max_dim(self, dim, keepdim=False):
    """torch.max(self, dim, keepdim) -> (values, indices)."""
    return arg_reduce(self, dim, keepdim, True, True)


@with_fallback("min.dim")
def min_dim(self, dim, keepdim=False):
    """torch.min(self, dim, keepdim) -> (values, indices)."""
    return arg_reduce(self, dim, keepdim, False, True)


@with_fallback("argmax")
def argmax(self, dim=None, keepdim=False):
    """torch.argmax(self, dim, keepdim); dim None -> index into the flattened tensor."""
    if self.dtype == torch.bool:
        raise Unsupported  # torch: argmax is not implemented for bool
    return arg_reduce(self, dim, keepdim, True, False)[1]


@with_fallback("argmin")
def argmin(self, dim=None, keepdim=False):
    """torch.argmin(self, dim, keepdim); dim None -> index into the flattened tensor."""
    if self.dtype == torch.bool:
        raise Unsupported
    return arg_reduce(self, dim, keepdim, False, False)[1]


declare("amax", {"amax": amax})
declare("amin", {"amin": amin})
declare("max", {"max": max_all, "max.dim": max_dim})
declare("min", {"min": min_all, "min.dim": min_dim})
declare("argmax", {"argmax": argmax})
declare("argmin", {"argmin": argmin})
