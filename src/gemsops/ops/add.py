"""add: ``self + alpha * other`` with broadcasting and PyTorch's type promotion."""
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, with_fallback
from ._pointwise import Pointwise

__all__ = ["add"]


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _add_scaled(a, b, alpha):
    return a + alpha * b


_plain = Pointwise("add", _add)
# alpha is cast to the computation dtype but does not take part in promotion
_scaled = Pointwise("add", _add_scaled, promote=(0, 1))


def _run(self, other, alpha, out=None):
    if isinstance(alpha, bool) or (alpha != 1 and isinstance(alpha, float) and not _is_float_result(self, other)):
        raise Unsupported  # torch's own error for a float alpha on integer tensors
    if alpha == 1:
        return _plain(self, other, out=out)
    return _scaled(self, other, alpha, out=out)


def _is_float_result(self, other):
    return _plain.dtypes((self, other))[1].is_floating_point


@with_fallback("add.Tensor")
def add(self, other, *, alpha=1):
    """``torch.add(self, other, alpha=alpha)``."""
    return _run(self, other, alpha)


@with_fallback("add.Scalar")
def add_scalar(self, other, alpha=1):
    return _run(self, other, alpha)


@with_fallback("add.out")
def add_out(self, other, *, alpha=1, out):
    return _run(self, other, alpha, out=out)


@with_fallback("add_.Tensor")
def add_inplace(self, other, *, alpha=1):
    return _run(self, other, alpha, out=self)


@with_fallback("add_.Scalar")
def add_scalar_inplace(self, other, alpha=1):
    return _run(self, other, alpha, out=self)


declare("add", {
    "add.Tensor": add,
    "add.Scalar": add_scalar,
    "add.out": add_out,
    "add_.Tensor": add_inplace,
    "add_.Scalar": add_scalar_inplace,
})
