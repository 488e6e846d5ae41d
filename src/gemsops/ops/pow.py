"""pow: Tensor ** Tensor, Tensor ** Scalar, Scalar ** Tensor.

Floats use ``exp2(b * log2|a|)`` with C pow's special cases (``_math.pow_float``); common
scalar exponents (0, 1, 2, 3, 0.5, -0.5, -1, -2) get exact special forms, as in torch.
Integer tensors to non-negative integer scalars multiply by repeated squaring (wrapping
like torch); negative integer exponents (torch raises) and integer tensor exponents go to
torch's kernel.
"""
import math

import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from . import _math
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["pow"]


@triton.jit
def _square(a, b):
    return a * a


@triton.jit
def _cube(a, b):
    return a * a * a


@triton.jit
def _identity(a, b):
    return a


@triton.jit
def _one(a, b):
    return tl.zeros_like(a) + 1  # also for NaN and inf


@triton.jit
def _sqrt(a, b):
    return _math.sqrt(a)


@triton.jit
def _rsqrt(a, b):
    return tl.rsqrt(a)


@triton.jit
def _recip(a, b):
    return 1.0 / a


@triton.jit
def _recip_square(a, b):
    return 1.0 / (a * a)


@triton.jit
def _int_pow(a, e):
    r = a * 0 + 1
    base = a
    while e > 0:
        if e % 2 == 1:
            r = r * base
        base = base * base
        e = e // 2
    return r


_BOOL_TO_LONG = Promotion.BOOL_TO_LONG
_general = Pointwise("pow", _math.pow_float, _BOOL_TO_LONG)
_int_general = Pointwise("pow", _int_pow, _BOOL_TO_LONG)  # e >= 4 is a scalar, never a constexpr
_SPECIAL = {
    0: Pointwise("pow", _one, _BOOL_TO_LONG), 1: Pointwise("pow", _identity, _BOOL_TO_LONG),
    2: Pointwise("pow", _square, _BOOL_TO_LONG), 3: Pointwise("pow", _cube, _BOOL_TO_LONG),
}
_FLOAT_SPECIAL = {
    0.5: Pointwise("pow", _sqrt, _BOOL_TO_LONG), -0.5: Pointwise("pow", _rsqrt, _BOOL_TO_LONG),
    -1: Pointwise("pow", _recip, _BOOL_TO_LONG), -2: Pointwise("pow", _recip_square, _BOOL_TO_LONG),
}


def _run(self, exponent, *, out=None):
    compute = _general.dtypes((self, exponent))[0]
    floating = compute.is_floating_point
    if isinstance(exponent, torch.Tensor):
        if not floating:
            raise Unsupported
        return _general(self, exponent, out=out)
    if not isinstance(self, torch.Tensor):  # Scalar ** Tensor: handled as a tensor exponent
        if not floating:
            raise Unsupported
        return _general(self, exponent, out=out)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        raise Unsupported
    op = _SPECIAL.get(exponent) if math.isfinite(exponent) and exponent == int(exponent) else None
    if op is None and floating:
        op = _FLOAT_SPECIAL.get(exponent, _general)
    if op is None:
        if exponent < 0 or compute == torch.bool:
            raise Unsupported  # torch raises for negative integer powers of integers
        op = _int_general
    return op(self, exponent, out=out)


pow = declare_pointwise("pow", _run, [  # noqa: A001
    "pow.Tensor_Tensor", "pow.Tensor_Scalar", "pow.Scalar", "pow.Tensor_Tensor_out",
    "pow.Scalar_out", "pow.Tensor_Scalar_out", "pow_.Scalar", "pow_.Tensor",
])
