"""index.Tensor: advanced indexing by up to four int32/int64 index tensors.

Index tensors broadcast together to a shape B. When the indexed dims are adjacent, B takes
their place in the result; otherwise (torch's rule) B comes first, which is the adjacent
case on a permuted view. Bool/byte masks need nonzero (a host sync) and go to torch.
"""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._common import broadcast_shapes, kernel_dtype_ok
from ._indexing import MAX_INDICES, check_bounds, split3, take

__all__ = ["index"]


def plan(self, indices):
    """(source view, lo, hi, [(flat index, stride, size)], broadcast shape) for ``self[indices]``."""
    if len(indices) > self.dim():
        raise Unsupported
    pos = [d for d, t in enumerate(indices) if t is not None]
    if not pos or len(pos) > MAX_INDICES:
        raise Unsupported
    idx = [indices[d] for d in pos]
    for t in idx:
        if t.dtype not in (torch.int64, torch.int32):
            raise Unsupported
    if not on_vendor_device(*idx):
        raise Unsupported
    src = self
    if pos[-1] - pos[0] + 1 != len(pos):
        src = self.permute(pos + [d for d in range(self.dim()) if d not in pos])
        pos = list(range(len(pos)))
    bshape = broadcast_shapes(*(t.shape for t in idx))
    flats = []
    for d, t in zip(pos, idx):
        size = src.shape[d]
        check_bounds(t, size, allow_negative=True)
        flats.append((t.expand(bshape).reshape(-1).contiguous(), src.stride(d), size))
    return src, pos[0], pos[-1] + 1, flats, bshape


@with_fallback("index.Tensor")
def index(self, indices):
    """self[indices] for integer index tensors (None entries select whole dims)."""
    if not on_vendor_device(self) or not kernel_dtype_ok(self.dtype) or self.dim() == 0:
        raise Unsupported
    src, lo, hi, flats, bshape = plan(self, indices)
    shape = (*src.shape[:lo], *bshape, *src.shape[hi:])
    out = torch.empty(shape, dtype=self.dtype, device=self.device)
    if out.numel() == 0:
        return out
    outer, s_outer, inner, s_inner = split3(src, lo, hi)
    n = flats[0][0].numel()
    take(src, outer, s_outer, inner, s_inner, flats, out, (n * inner, inner, 1), mode=0, wrap=True)
    return out


declare("index", {"index.Tensor": index})
