"""add: ``self + alpha * other`` with broadcasting and PyTorch's type promotion."""
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["add"]


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _add_scaled(a, b, alpha):
    return a + alpha * b


_plain = Pointwise("add", _add, variants={torch.bool: _or})  # bool + bool is logical or in torch
# alpha is cast to the computation dtype but does not take part in promotion
_scaled = Pointwise("add", _add_scaled, promote=(0, 1))


def _run(self, other, alpha=1, *, out=None):
    if alpha == 1 and not isinstance(alpha, bool):
        return _plain(self, other, out=out)
    result = _plain.dtypes((self, other))[1]
    if isinstance(alpha, bool) or result == torch.bool or (isinstance(alpha, float) and not result.is_floating_point):
        raise Unsupported  # torch's own rules and errors for bool and float alphas
    return _scaled(self, other, alpha, out=out)


add = declare_pointwise("add", _run, ["add.Tensor", "add.Scalar", "add.out",
                                      "add_.Tensor", "add_.Scalar"], plain=_plain)
