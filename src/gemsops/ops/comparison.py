"""Comparisons eq, ne, lt, le, gt, ge: compared in the promoted dtype, result bool."""
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["eq", "ne", "lt", "le", "gt", "ge"]


@triton.jit
def _eq(a, b):
    return a == b


@triton.jit
def _ne(a, b):
    return a != b


@triton.jit
def _lt(a, b):
    return a < b


@triton.jit
def _le(a, b):
    return a <= b


@triton.jit
def _gt(a, b):
    return a > b


@triton.jit
def _ge(a, b):
    return a >= b


def _comparison(name, fn):
    op = Pointwise(name, fn, Promotion.ALWAYS_BOOL)

    def run(self, other, *, out=None):
        return op(self, other, out=out)

    return declare_pointwise(name, run, [f"{name}.{o}" for o in ("Tensor", "Scalar", "Tensor_out", "Scalar_out")]
                             + [f"{name}_.Tensor", f"{name}_.Scalar"])


eq = _comparison("eq", _eq)
ne = _comparison("ne", _ne)
lt = _comparison("lt", _lt)
le = _comparison("le", _le)
gt = _comparison("gt", _gt)
ge = _comparison("ge", _ge)
