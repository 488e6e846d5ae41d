"""mm: ``self @ mat2`` for 2-D fp32/fp16/bf16 matrices through the shared tiled GEMM."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._gemm import GEMM_DTYPES, CallPlans, check_out, gemm

__all__ = ["mm"]


def _mm(a, b, out):
    if not on_vendor_device(a, b, out):
        raise Unsupported
    dtype = a.dtype
    if dtype not in GEMM_DTYPES or b.dtype != dtype or a.dim() != 2 or b.dim() != 2:
        raise Unsupported  # fp64, integers, complex, mixed dtypes: torch's kernel (or error)
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise Unsupported
    if out is None:
        out = torch.empty_strided((M, N), (max(N, 1), 1), dtype=dtype, device=a.device)  # cheaper than empty
    else:
        check_out(out, (M, N), dtype, a, b)
    if M == 0 or N == 0:
        return out
    sa, sb, sc = a.stride(), b.stride(), out.stride()
    return gemm(a, (0, sa[0], sa[1]), b, (0, sb[0], sb[1]), out, (0, sc[0], sc[1]),
                None, (0, 0, 0), 1, M, N, K)


_CALLS = CallPlans()


@with_fallback("mm")
def mm(self, mat2):
    """torch.mm(self, mat2)."""
    key = (self.shape, self.stride(), self.dtype, mat2.shape, mat2.stride(), mat2.dtype)
    out = _CALLS.launch(key, self, mat2, None)
    if out is None:
        out = _mm(self, mat2, None)
        if key not in _CALLS:
            (M, K), sa, sb = self.shape, self.stride(), mat2.stride()
            _CALLS.remember(key, self, (0, sa[0], sa[1]), mat2, (0, sb[0], sb[1]), out, None, (0, 0, 0),
                            M, out.shape[1], K)
    return out


@with_fallback("mm.out")
def mm_out(self, mat2, *, out):
    """torch.mm(self, mat2, out=out)."""
    return _mm(self, mat2, out)


declare("mm", {"mm": mm, "mm.out": mm_out})
