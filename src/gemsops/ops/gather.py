"""gather along one dim (index of the input's rank, up to 4 dims, int64)."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._common import kernel_dtype_ok
from ._indexing import GS_RANK, check_bounds, gather_scatter

__all__ = ["gather"]


def check_shapes(self, dim, index, src=None):
    """Normalized dim when torch's shape rules hold (else Unsupported: torch raises)."""
    nd = self.dim()
    # int32 indices: accepted by some torch versions only, leave the decision to torch
    if nd == 0 or nd > GS_RANK or index.dim() != nd or index.dtype != torch.int64:
        raise Unsupported
    dim = dim + nd if dim < 0 else dim
    if not 0 <= dim < nd:
        raise Unsupported
    for d in range(nd):
        if (d != dim and index.shape[d] > self.shape[d]) or (src is not None and index.shape[d] > src.shape[d]):
            raise Unsupported
    if src is not None and src.dim() != nd:
        raise Unsupported
    return dim


def _run(self, dim, index, out=None):
    if not on_vendor_device(self, index, out) or not kernel_dtype_ok(self.dtype):
        raise Unsupported
    dim = check_shapes(self, dim, index)
    check_bounds(index, self.shape[dim], allow_negative=False)
    if out is None:
        out = torch.empty(index.shape, dtype=self.dtype, device=self.device)
    elif out.shape != index.shape or out.dtype != self.dtype or \
            out.untyped_storage().data_ptr() == self.untyped_storage().data_ptr():
        raise Unsupported
    gather_scatter(self, dim, index, out, mode=0)
    return out


@with_fallback("gather")
def gather(self, dim, index, *, sparse_grad=False):
    """torch.gather(self, dim, index)."""
    return _run(self, dim, index)


@with_fallback("gather.out")
def gather_out(self, dim, index, *, sparse_grad=False, out):
    return _run(self, dim, index, out)


declare("gather", {"gather": gather, "gather.out": gather_out})
