"""fill_ / fill (Scalar, 0-d Tensor), zero_ / zero, and masked_fill (Scalar, 0-d Tensor).

The value is stored with a cast to the tensor's dtype, as torch converts it. Values Triton
would round on the way (a float into float64 or into an integer tensor) are converted
exactly on the host first.
"""
import math

import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from ._pointwise import Pointwise, Promotion, _to_bf16, declare_pointwise, f64_scalar

__all__ = ["fill_", "zero_", "masked_fill"]


@triton.jit
def _value(v):
    return v


@triton.jit
def _masked(x, mask, v):
    if x.dtype == tl.bfloat16:
        v = _to_bf16(v)
    return tl.where(mask, tl.cast(v, x.dtype), x)


_store = Pointwise("fill", _value, promote=())  # a casting store into out
# the result has self's dtype; the value is cast to it in the kernel
_masked_op = Pointwise("masked_fill", _masked, Promotion.NO_OPMATH, promote=(0,))


def _exact_value(value, dtype, device):
    """``value`` in a form Triton passes without rounding for ``dtype``."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise Unsupported  # torch's own error: value must be 0-d
        return value
    if type(value) is float:
        if dtype == torch.float64:
            return f64_scalar(value, device)
        if not dtype.is_floating_point and dtype != torch.bool:
            if not math.isfinite(value):
                raise Unsupported
            return int(value)  # C's float-to-int conversion truncates toward zero
    elif not isinstance(value, (int, float, bool)):
        raise Unsupported  # complex
    return value


def _fill_run(self, value, *, out=None):
    target = self if out is None else out
    if out is not None and out is not self:
        if out.shape != self.shape:
            raise Unsupported  # out= resizing: torch's rules
        target = out
    return _store(_exact_value(value, target.dtype, target.device), out=target)


def _fill_functional(self, value, *, out=None):
    if out is None:
        out = torch.empty_like(self)
    return _fill_run(self, value, out=out)


def _zero_run(self, *, out=None):
    return _fill_run(self, 0, out=self if out is None else out)


def _zero_functional(self, *, out=None):
    return _fill_functional(self, 0, out=out)


def _masked_fill_run(self, mask, value, *, out=None):
    if mask.dtype != torch.bool:
        raise Unsupported  # torch's own error
    return _masked_op(self, mask, _exact_value(value, self.dtype, self.device), out=out)


fill_ = declare_pointwise("fill_", _fill_run, ["fill_.Scalar", "fill_.Tensor"], public=torch.Tensor.fill_)
declare_pointwise("fill", _fill_functional, ["fill.Scalar", "fill.Tensor", "fill.Scalar_out", "fill.Tensor_out"])
zero_ = declare_pointwise("zero_", _zero_run, ["zero_.default"], public=torch.Tensor.zero_)
declare_pointwise("zero", _zero_functional, ["zero.default", "zero.out"], public=torch.zeros_like)
masked_fill = declare_pointwise("masked_fill", _masked_fill_run, [
    "masked_fill.Scalar", "masked_fill.Tensor", "masked_fill.Scalar_out", "masked_fill.Tensor_out",
    "masked_fill_.Scalar", "masked_fill_.Tensor"])
