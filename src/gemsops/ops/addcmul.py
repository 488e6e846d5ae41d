"""addcmul and addcdiv: ``self + value * tensor1 * tensor2`` (or ``/ tensor2``), optimizer updates."""
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["addcmul", "addcdiv"]


@triton.jit
def _addcmul(s, a, b, v):
    return s + v * a * b


@triton.jit
def _addcdiv(s, a, b, v):
    return s + v * (a / b)


# value is cast to the computation dtype but does not take part in promotion
_mul_op = Pointwise("addcmul", _addcmul, promote=(0, 1, 2))
_div_op = Pointwise("addcdiv", _addcdiv, promote=(0, 1, 2))


def _check(op, args, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported
    floating = op.dtypes(args)[0].is_floating_point
    if op is _div_op and not floating:
        raise Unsupported  # torch's own error: integer addcdiv
    if isinstance(value, float) and not floating:
        raise Unsupported  # torch's own error: float value for integer tensors


def _addcmul_run(self, tensor1, tensor2, *, value=1, out=None):
    _check(_mul_op, (self, tensor1, tensor2, value), value)
    return _mul_op(self, tensor1, tensor2, value, out=out)


def _addcdiv_run(self, tensor1, tensor2, *, value=1, out=None):
    _check(_div_op, (self, tensor1, tensor2, value), value)
    return _div_op(self, tensor1, tensor2, value, out=out)


addcmul = declare_pointwise("addcmul", _addcmul_run, ["addcmul.default", "addcmul.out", "addcmul_.default"])
addcdiv = declare_pointwise("addcdiv", _addcdiv_run, ["addcdiv.default", "addcdiv.out", "addcdiv_.default"])
