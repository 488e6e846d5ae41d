"""addmm: ``beta * self + alpha * (mat1 @ mat2)``, the op behind nn.Linear's forward.

The bias ``self`` broadcasts to (M, N) through 0 strides (a 1-D bias of size N is the
nn.Linear case) and is added in the GEMM's epilogue in fp32 before the single rounding.
beta == 0 ignores ``self`` entirely (NaN/inf in it do not propagate), as torch documents.
"""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._gemm import GEMM_DTYPES, CallPlans, bias_strides, check_out, gemm

__all__ = ["addmm"]


def _scalar(v):
    if isinstance(v, bool):
        v = int(v)
    if not isinstance(v, (int, float)):
        raise Unsupported  # complex or symbolic scalars
    return v


def _addmm(bias, a, b, beta, alpha, out, inplace=False):
    if not on_vendor_device(bias, a, b, out):
        raise Unsupported
    beta, alpha = _scalar(beta), _scalar(alpha)
    dtype = a.dtype
    if (dtype not in GEMM_DTYPES or b.dtype != dtype or bias.dtype != dtype
            or a.dim() != 2 or b.dim() != 2 or alpha == 0):
        raise Unsupported  # alpha == 0: torch's NaN rules for 0 * inf products
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise Unsupported
    st = bias_strides(bias, (M, N))
    if inplace:
        out = bias
        if bias.shape != (M, N):
            raise Unsupported
        check_out(out, (M, N), dtype, a, b, bias=bias)
    elif out is None:
        out = torch.empty_strided((M, N), (max(N, 1), 1), dtype=dtype, device=a.device)  # cheaper than empty
    else:
        check_out(out, (M, N), dtype, a, b, bias=bias)
    if M == 0 or N == 0:
        return out
    sa, sb, sc = a.stride(), b.stride(), out.stride()
    x = bias if beta != 0 else None
    return gemm(a, (0, sa[0], sa[1]), b, (0, sb[0], sb[1]), out, (0, sc[0], sc[1]),
                x, (0, st[0], st[1]), 1, M, N, K, alpha, beta)


# beta's and alpha's types are part of the key: True == 1 == 1.0 as dict keys
_CALLS = CallPlans()


@with_fallback("addmm")
def addmm(self, mat1, mat2, *, beta=1, alpha=1):
    """torch.addmm(self, mat1, mat2, beta=beta, alpha=alpha)."""
    key = (self.shape, self.stride(), self.dtype, mat1.shape, mat1.stride(), mat1.dtype, mat2.shape, mat2.stride(),
           mat2.dtype, type(beta), beta, type(alpha), alpha)
    out = _CALLS.launch(key, mat1, mat2, self)
    if out is None:
        out = _addmm(self, mat1, mat2, beta, alpha, None)
        if key not in _CALLS:
            (M, K), N = mat1.shape, out.shape[1]
            st, sa, sb = bias_strides(self, (M, N)), mat1.stride(), mat2.stride()
            _CALLS.remember(key, mat1, (0, sa[0], sa[1]), mat2, (0, sb[0], sb[1]), out,
                            self if beta != 0 else None, (0, st[0], st[1]), M, N, K, alpha, beta)
    return out


@with_fallback("addmm.out")
def addmm_out(self, mat1, mat2, *, beta=1, alpha=1, out):
    """torch.addmm(..., out=out)."""
    return _addmm(self, mat1, mat2, beta, alpha, out)


@with_fallback("addmm_")
def addmm_inplace(self, mat1, mat2, *, beta=1, alpha=1):
    """self.addmm_(mat1, mat2, beta=beta, alpha=alpha)."""
    return _addmm(self, mat1, mat2, beta, alpha, None, inplace=True)


declare("addmm", {"addmm": addmm, "addmm.out": addmm_out, "addmm_": addmm_inplace})
