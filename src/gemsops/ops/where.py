"""where(condition, self, other): the condition is read as loaded, the values promoted.

Only ``where.self`` (and its out=) has a backend kernel; the Scalar overloads are
composite in torch and reach it with the scalars wrapped as 0-d tensors.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["where"]


@triton.jit
def _where(c, a, b):
    return tl.where(c, a, b)


_op = Pointwise("where", _where, Promotion.NO_OPMATH, promote=(1, 2))


def _run(condition, self, other, *, out=None):
    if not isinstance(condition, torch.Tensor) or condition.dtype != torch.bool:
        raise Unsupported  # torch's own error (or its uint8 deprecation path)
    return _op(condition, self, other, out=out)


where = declare_pointwise("where", _run, ["where.self", "where.self_out"])
