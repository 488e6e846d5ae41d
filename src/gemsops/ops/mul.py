"""mul: ``self * other`` with broadcasting and PyTorch's type promotion."""
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ._pointwise import Pointwise, declare_pointwise

__all__ = ["mul"]


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _and(a, b):
    return a & b


_mul_op = Pointwise("mul", _mul, variants={torch.bool: _and})  # bool * bool is logical and in torch


def _run(self, other, *, out=None):
    return _mul_op(self, other, out=out)


mul = declare_pointwise("mul", _run, ["mul.Tensor", "mul.Scalar", "mul.out", "mul.Scalar_out",
                                      "mul_.Tensor", "mul_.Scalar"], plain=_mul_op)
