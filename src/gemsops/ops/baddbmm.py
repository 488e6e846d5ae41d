"""baddbmm: ``beta * self + alpha * (batch1 @ batch2)``, self broadcast to (B, M, N)."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._gemm import GEMM_DTYPES, bias_strides, check_out, gemm
from .addmm import _scalar

__all__ = ["baddbmm"]


def _baddbmm(bias, a, b, beta, alpha, out, inplace=False):
    if not on_vendor_device(bias, a, b, out):
        raise Unsupported
    beta, alpha = _scalar(beta), _scalar(alpha)
    dtype = a.dtype
    if (dtype not in GEMM_DTYPES or b.dtype != dtype or bias.dtype != dtype
            or a.dim() != 3 or b.dim() != 3 or alpha == 0):
        raise Unsupported
    B, M, K = a.shape
    B2, K2, N = b.shape
    if K != K2 or B != B2:
        raise Unsupported
    shape = (B, M, N)
    st = bias_strides(bias, shape)
    if inplace:
        out = bias
        if bias.shape != shape:
            raise Unsupported
        check_out(out, shape, dtype, a, b, bias=bias)
    elif out is None:
        out = torch.empty(shape, dtype=dtype, device=a.device)
    else:
        check_out(out, shape, dtype, a, b, bias=bias)
    if B == 0 or M == 0 or N == 0:
        return out
    x = bias if beta != 0 else None
    return gemm(a, a.stride(), b, b.stride(), out, out.stride(), x, tuple(st), B, M, N, K, alpha, beta)


@with_fallback("baddbmm")
def baddbmm(self, batch1, batch2, *, beta=1, alpha=1):
    """torch.baddbmm(self, batch1, batch2, beta=beta, alpha=alpha)."""
    return _baddbmm(self, batch1, batch2, beta, alpha, None)


@with_fallback("baddbmm.out")
def baddbmm_out(self, batch1, batch2, *, beta=1, alpha=1, out):
    """torch.baddbmm(..., out=out)."""
    return _baddbmm(self, batch1, batch2, beta, alpha, out)


@with_fallback("baddbmm_")
def baddbmm_inplace(self, batch1, batch2, *, beta=1, alpha=1):
    """self.baddbmm_(batch1, batch2, beta=beta, alpha=alpha)."""
    return _baddbmm(self, batch1, batch2, beta, alpha, None, inplace=True)


declare("baddbmm", {"baddbmm": baddbmm, "baddbmm.out": baddbmm_out, "baddbmm_": baddbmm_inplace})
