"""div (true, 'trunc', 'floor'), true_divide and floor_divide, with torch's integer rules.

True division promotes integers to the default float dtype. Rounded division keeps the
promoted dtype: floats round the IEEE quotient (floor follows torch's fmod-based
formula, so 5 // inf is 0 and -5 // inf is -1); integers truncate or floor exactly.
Integer division by zero raises in torch on CPU, so such inputs go to torch's kernel, as
do rounded divisions of fp16/bf16 (torch rounds their quotient to the half type first).
"""
import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Unsupported
from . import _math
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["div", "floor_divide"]


@triton.jit
def _true_div(a, b):
    return a / b


@triton.jit
def _trunc_div(a, b):
    if a.dtype.is_floating():
        r = _math.trunc(_math.div_rn(a, b))
    else:
        r = a // b  # Triton's integer division truncates, like C
    return r


@triton.jit
def _floor_div(a, b):
    if a.dtype.is_floating():
        q = _math.div_rn(a, b)
        mod = a % b  # fmod: the sign of the dividend
        d = _math.div_rn(a - mod, b)
        d = tl.where((mod != 0) & ((b < 0) != (mod < 0)), d - 1.0, d)
        f = tl.floor(d)
        f = tl.where(d - f > 0.5, f + 1.0, f)
        f = tl.where(d == 0, q * 0.0, f)
        r = tl.where(b == 0, q, f)
    else:
        q = a // b
        rem = a % b
        r = tl.where((rem != 0) & ((rem < 0) != (b < 0)), q - 1, q)
    return r


_true = Pointwise("div", _true_div, Promotion.INT_TO_FLOAT)
_trunc = Pointwise("div", _trunc_div)
_floor = Pointwise("div", _floor_div)
_CPU = VENDOR is not None and VENDOR.device_type == "cpu"


def _run(self, other, *, rounding_mode=None, out=None):
    if rounding_mode is None:
        return _true(self, other, out=out)
    op = _trunc if rounding_mode == "trunc" else _floor if rounding_mode == "floor" else None
    if op is None:
        raise Unsupported  # torch's own error for an unknown mode
    compute, result = op.dtypes((self, other))
    if result in (torch.float16, torch.bfloat16):
        # torch rounds the quotient (and floor's intermediates) to the half type before
        # rounding it to an integer; its own kernel does that exactly
        raise Unsupported
    if compute is None or not compute.is_floating_point:
        if compute == torch.bool:
            raise Unsupported
        if isinstance(other, torch.Tensor):
            # torch raises ZeroDivisionError on CPU; checking costs nothing there
            if _CPU and other.numel() and (other.numpy() == 0).any():
                raise Unsupported
        elif other == 0:
            raise Unsupported
    return op(self, other, out=out)


def _floor_divide_run(self, other, *, out=None):
    return _run(self, other, rounding_mode="floor", out=out)


div = declare_pointwise("div", _run, [
    "div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode", "div.out", "div.out_mode",
    "div.Scalar_out", "div.Scalar_mode_out", "div_.Tensor", "div_.Scalar", "div_.Tensor_mode",
    "div_.Scalar_mode", "true_divide.out",  # true_divide's other overloads decompose to div
])
floor_divide = declare_pointwise("floor_divide", _floor_divide_run, [
    "floor_divide.default", "floor_divide.Scalar", "floor_divide.out", "floor_divide.Scalar_out",
    "floor_divide_.Tensor", "floor_divide_.Scalar",
])
