"""mv and addmv: a matrix-vector product run as the 1-row GEMM ``vec^T @ self^T``.

Written that way the matrix is the GEMM's B operand and M = 1, so the small-M configs
(thin tiles, split K: bandwidth on the matrix read) apply with no copy of the matrix.
"""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._gemm import GEMM_DTYPES, bias_strides, check_out, gemm
from .addmm import _scalar

__all__ = ["mv", "addmv"]


def _addmv(bias, mat, vec, beta, alpha, out, inplace=False):
    if not on_vendor_device(bias, mat, vec, out):
        raise Unsupported
    beta, alpha = _scalar(beta), _scalar(alpha)
    dtype = mat.dtype
    if (dtype not in GEMM_DTYPES or vec.dtype != dtype or mat.dim() != 2 or vec.dim() != 1
            or alpha == 0 or (bias is not None and bias.dtype != dtype)):
        raise Unsupported
    N, K = mat.shape
    if vec.shape[0] != K:
        raise Unsupported
    st = bias_strides(bias, (N,)) if bias is not None else (0,)
    if inplace:
        out = bias
        if bias.shape != (N,):
            raise Unsupported
        check_out(out, (N,), dtype, mat, vec, bias=bias)
    elif out is None:
        out = torch.empty((N,), dtype=dtype, device=mat.device)
    else:
        check_out(out, (N,), dtype, mat, vec, bias=bias)
    if N == 0:
        return out
    sm, sv, so = mat.stride(), vec.stride(0), out.stride(0)
    x = bias if bias is not None and beta != 0 else None
    return gemm(vec, (0, 0, sv), mat, (0, sm[1], sm[0]), out, (0, 0, so),
                x, (0, 0, st[0]), 1, 1, N, K, alpha, beta)


@with_fallback("mv")
def mv(self, vec):
    """torch.mv(self, vec)."""
    return _addmv(None, self, vec, 0, 1, None)


@with_fallback("mv.out")
def mv_out(self, vec, *, out):
    """torch.mv(self, vec, out=out)."""
    return _addmv(None, self, vec, 0, 1, out)


@with_fallback("addmv")
def addmv(self, mat, vec, *, beta=1, alpha=1):
    """torch.addmv(self, mat, vec, beta=beta, alpha=alpha)."""
    return _addmv(self, mat, vec, beta, alpha, None)


@with_fallback("addmv.out")
def addmv_out(self, mat, vec, *, beta=1, alpha=1, out):
    """torch.addmv(..., out=out)."""
    return _addmv(self, mat, vec, beta, alpha, out)


@with_fallback("addmv_")
def addmv_inplace(self, mat, vec, *, beta=1, alpha=1):
    """self.addmv_(mat, vec, beta=beta, alpha=alpha)."""
    return _addmv(self, mat, vec, beta, alpha, None, inplace=True)


declare("mv", {"mv": mv, "mv.out": mv_out})
declare("addmv", {"addmv": addmv, "addmv.out": addmv_out, "addmv_": addmv_inplace})
