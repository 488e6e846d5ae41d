"""sub and rsub: ``self - alpha * other`` and ``other - alpha * self``."""
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["sub", "rsub"]


@triton.jit
def _sub(a, b):
    return a - b


@triton.jit
def _sub_scaled(a, b, alpha):
    return a - alpha * b


_plain = Pointwise("sub", _sub)
_scaled = Pointwise("sub", _sub_scaled, promote=(0, 1))  # alpha is cast, not promoted


def _run(a, b, alpha, out):
    if isinstance(alpha, bool) or any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (a, b)):
        raise Unsupported  # torch's own error: subtraction of bools
    if alpha == 1:
        return _plain(a, b, out=out)
    if isinstance(alpha, float) and not _plain.dtypes((a, b))[1].is_floating_point:
        raise Unsupported  # torch's own error for a float alpha on integer tensors
    return _scaled(a, b, alpha, out=out)


def _sub_run(self, other, alpha=1, *, out=None):
    return _run(self, other, alpha, out)


def _rsub_run(self, other, alpha=1, *, out=None):
    return _run(other, self, alpha, out)


sub = declare_pointwise("sub", _sub_run, ["sub.Tensor", "sub.Scalar", "sub.out", "sub.Scalar_out",
                                          "sub_.Tensor", "sub_.Scalar"])
rsub = declare_pointwise("rsub", _rsub_run, ["rsub.Tensor", "rsub.Scalar", "rsub.Tensor_out",
                                             "rsub.Scalar_out"])
