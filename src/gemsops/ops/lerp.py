"""lerp(self, end, weight) with a Scalar or Tensor weight, torch's two-sided formula.

``weight < 0.5 ? self + weight * (end - self) : end - (end - self) * (1 - weight)`` keeps
both endpoints exact. torch requires self, end (and a tensor weight) to share a dtype.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["lerp"]


@triton.jit
def _lerp(a, b, w):
    d = b - a
    return tl.where(tl.abs(w) < 0.5, a + w * d, b - d * (1.0 - w))


_op = Pointwise("lerp", _lerp)


def _run(self, end, weight, *, out=None):
    if self.dtype != end.dtype or not self.dtype.is_floating_point:
        raise Unsupported  # torch's own errors
    if isinstance(weight, torch.Tensor):
        if weight.dtype != self.dtype:
            raise Unsupported
    elif not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise Unsupported
    return _op(self, end, weight, out=out)


lerp = declare_pointwise("lerp", _run, [
    "lerp.Scalar", "lerp.Tensor", "lerp.Scalar_out", "lerp.Tensor_out", "lerp_.Scalar", "lerp_.Tensor"])
