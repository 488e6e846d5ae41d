"""bmm: batched ``self[b] @ mat2[b]``; the batch is a grid axis of the shared GEMM."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._gemm import GEMM_DTYPES, check_out, gemm

__all__ = ["bmm"]


def _bmm(a, b, out):
    if not on_vendor_device(a, b, out):
        raise Unsupported
    dtype = a.dtype
    if dtype not in GEMM_DTYPES or b.dtype != dtype or a.dim() != 3 or b.dim() != 3:
        raise Unsupported
    B, M, K = a.shape
    B2, K2, N = b.shape
    if K != K2 or B != B2:
        raise Unsupported
    if out is None:
        out = torch.empty_strided((B, M, N), (max(M, 1) * max(N, 1), max(N, 1), 1), dtype=dtype, device=a.device)
    else:
        check_out(out, (B, M, N), dtype, a, b)
    if B == 0 or M == 0 or N == 0:
        return out
    return gemm(a, a.stride(), b, b.stride(), out, out.stride(), None, (0, 0, 0), B, M, N, K)


@with_fallback("bmm")
def bmm(self, mat2):
    """torch.bmm(self, mat2)."""
    return _bmm(self, mat2, None)


@with_fallback("bmm.out")
def bmm_out(self, mat2, *, out):
    """torch.bmm(self, mat2, out=out)."""
    return _bmm(self, mat2, out)


declare("bmm", {"bmm": bmm, "bmm.out": bmm_out})
