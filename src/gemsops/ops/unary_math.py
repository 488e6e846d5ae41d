"""Unary math: neg, abs, reciprocal, sqrt, rsqrt, exp/log families, sin/cos/tan, erf.

Each op is one scalar function over the pointwise generator. Integer inputs of the
floating functions are promoted to the default float dtype (INT_TO_FLOAT), as torch does.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from . import _math
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["neg", "abs", "reciprocal", "sqrt", "rsqrt", "exp", "exp2", "expm1", "log", "log2",
           "log10", "log1p", "sin", "cos", "tan", "erf"]

_FLOAT = Promotion.INT_TO_FLOAT
_LOG10_2 = tl.constexpr(0.30102999566398119521)


@triton.jit
def _neg(x):
    return -x


@triton.jit
def _abs(x):
    return tl.abs(x)


@triton.jit
def _reciprocal(x):
    return 1.0 / x


@triton.jit
def _rsqrt(x):
    return tl.rsqrt(x)


@triton.jit
def _exp(x):
    return tl.exp(x)


@triton.jit
def _exp2(x):
    return tl.exp2(x)


@triton.jit
def _log(x):
    return tl.log(x)


@triton.jit
def _log2(x):
    return tl.log2(x)


@triton.jit
def _log10(x):
    return tl.log2(x) * _LOG10_2


@triton.jit
def _sin(x):
    return tl.sin(x)


@triton.jit
def _cos(x):
    return tl.cos(x)


@triton.jit
def _tan(x):
    return tl.sin(x) / tl.cos(x)


def _unary(name, fn, promotion=_FLOAT, bool_ok=True, unroll=1):
    op = Pointwise(name, fn, promotion, unroll=unroll)

    def run(self, *, out=None):
        if not bool_ok and self.dtype == torch.bool:
            raise Unsupported  # torch's own error for bool
        return op(self, out=out)

    return declare_pointwise(name, run, [f"{name}.default", f"{name}.out", f"{name}_.default"])


neg = _unary("neg", _neg, Promotion.DEFAULT, bool_ok=False)
abs = _unary("abs", _abs, Promotion.DEFAULT, bool_ok=False)  # noqa: A001
reciprocal = _unary("reciprocal", _reciprocal)
sqrt = _unary("sqrt", _math.sqrt)
rsqrt = _unary("rsqrt", _rsqrt)
exp = _unary("exp", _exp)
exp2 = _unary("exp2", _exp2)
expm1 = _unary("expm1", _math.expm1)
log = _unary("log", _log)
log2 = _unary("log2", _log2)
log10 = _unary("log10", _log10)
log1p = _unary("log1p", _math.log1p)
sin = _unary("sin", _sin)
cos = _unary("cos", _cos)
tan = _unary("tan", _tan)
erf = _unary("erf", _math.erf, unroll=4)  # as gelu (activations.py)
