"""bitwise_and/or/xor/not on integer and bool tensors (floats go to torch, which raises)."""
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not"]


@triton.jit
def _and(a, b):
    return a & b


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def _not(a):
    return ~a


def _bitwise(name, fn, unary=False):
    op = Pointwise(name, fn)

    def run(*args, out=None):
        if op.dtypes(args)[1].is_floating_point:
            raise Unsupported
        return op(*args, out=out)

    if unary:
        overloads = [f"{name}.default", f"{name}.out", f"{name}_.default"]
    else:
        overloads = [f"{name}.{o}" for o in ("Tensor", "Scalar", "Scalar_Tensor", "Tensor_out", "Scalar_out",
                                             "Scalar_Tensor_out")] + [f"{name}_.Tensor", f"{name}_.Scalar"]
    return declare_pointwise(name, run, overloads)


bitwise_and = _bitwise("bitwise_and", _and)
bitwise_or = _bitwise("bitwise_or", _or)
bitwise_xor = _bitwise("bitwise_xor", _xor)
bitwise_not = _bitwise("bitwise_not", _not, unary=True)
