"""fill_ / fill (Scalar, 0-d Tensor), zero_ / zero, and masked_fill (Scalar, 0-d Tensor).

The value is stored with a cast to the tensor's dtype, as torch converts it. Values Triton
would round on the way (a float into float64 or into an integer tensor) are converted
exactly on the host first; values torch refuses to convert (300 into int8, 1e6 into
float16) run torch's kernel, which raises its error.
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


def _scalar_value(value, dtype, device):
    """``value`` as torch converts a Scalar to ``dtype`` (``c10::checked_convert``), in a form
    Triton passes without rounding. Values torch rejects as overflowing raise Unsupported, so
    that torch's own kernel raises its error instead of a wrapped or saturated fill."""
    if isinstance(value, complex) or not isinstance(value, (bool, int, float)):
        raise Unsupported
    if dtype == torch.bool:
        return bool(value)  # every number converts to bool, NaN to True
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise Unsupported
    if dtype.is_floating_point:
        top = torch.finfo(dtype).max
        if math.isfinite(value) and not -top <= value <= top:
            raise Unsupported
        if dtype == torch.float64 and isinstance(value, float):
            return f64_scalar(value, device)
        return value
    info = torch.iinfo(dtype)
    if isinstance(value, float):
        # checked before truncation: torch rejects 127.9 for int8 and -0.5 for uint8
        if not (math.isfinite(value) and info.min <= value <= info.max):
            raise Unsupported
        return int(value)  # C's float-to-int conversion truncates toward zero
    # an integer may wrap into uint8 from as low as -255 (two's complement), as in torch
    lowest = -info.max if dtype == torch.uint8 else info.min
    if not lowest <= value <= info.max:
        raise Unsupported
    return value


def _fits(src, dst):
    """Every value of dtype ``src`` converts to ``dst`` without torch's overflow error."""
    if src == dst or dst == torch.bool or src == torch.bool:
        return True
    if dst.is_floating_point:
        top = torch.finfo(dst).max
        return (torch.finfo(src) if src.is_floating_point else torch.iinfo(src)).max <= top
    if src.is_floating_point:
        return False
    s, d = torch.iinfo(src), torch.iinfo(dst)
    return d.min <= s.min and s.max <= d.max


def _exact_value(value, dtype, device, checked):
    """The fill value for the kernel. A 0-d tensor on the target's device is read in the
    kernel: with ``copy_``'s unchecked conversion (``fill_.Tensor``), or, where torch reads it
    as a Scalar (``checked``: ``masked_fill``), only when no value of its dtype can overflow."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex():
            raise Unsupported  # torch's own error, or a complex value
        if value.device == device and (not checked or _fits(value.dtype, dtype)):
            return value
        value = value.item()  # as torch does here (a CPU value is free to read)
    return _scalar_value(value, dtype, device)


def _fill_run(self, value, *, out=None):
    target = self if out is None else out
    if out is not None and out is not self:
        if out.shape != self.shape:
            raise Unsupported  # out= resizing: torch's rules
        target = out
    return _store(_exact_value(value, target.dtype, target.device, checked=False), out=target)


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
    return _masked_op(self, mask, _exact_value(value, self.dtype, self.device, checked=True), out=out)


fill_ = declare_pointwise("fill_", _fill_run, ["fill_.Scalar", "fill_.Tensor"], public=torch.Tensor.fill_)
declare_pointwise("fill", _fill_functional, ["fill.Scalar", "fill.Tensor", "fill.Scalar_out", "fill.Tensor_out"])
zero_ = declare_pointwise("zero_", _zero_run, ["zero_.default"], public=torch.Tensor.zero_)
declare_pointwise("zero", _zero_functional, ["zero.default", "zero.out"], public=torch.zeros_like)
masked_fill = declare_pointwise("masked_fill", _masked_fill_run, [
    "masked_fill.Scalar", "masked_fill.Tensor", "masked_fill.Scalar_out", "masked_fill.Tensor_out",
    "masked_fill_.Scalar", "masked_fill_.Tensor"])
