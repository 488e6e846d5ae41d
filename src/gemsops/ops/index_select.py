"""index_select: rows (or slices along any dim) picked by a 1-D int32/int64 index."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Plans, Unsupported, declare, on_device, on_vendor_device, with_fallback
from ._common import allocation_stand_in, default_strides, kernel_dtype_ok, planned_output
from ._indexing import check_bounds, flat_index, split3, take

__all__ = ["index_select"]


def _run(self, dim, index, out=None):
    sig = None
    if out is None:
        sig = (self.shape, self.stride(), self.dtype, dim, index.shape, index.stride(), index.dtype)
        planned = _SELECTS.get(sig)
        if planned is not None and on_device(self) and on_device(index):
            out_like, out_shape, size, prepared = planned
            check_bounds(index, size, allow_negative=False)  # data: checked on every call
            out = planned_output(out_like, out_shape, default_strides(out_shape), self.dtype, self)
            prepared(self, out, index, index, index, index)  # contiguous: its own flat view
            return out
    if not on_vendor_device(self, index, out) or self.dim() == 0 or index.dim() > 1:
        raise Unsupported
    if not kernel_dtype_ok(self.dtype):
        raise Unsupported
    d = dim + self.dim() if dim < 0 else dim
    if not 0 <= d < self.dim():
        raise Unsupported
    idx = flat_index(index)
    size = self.shape[d]
    check_bounds(idx, size, allow_negative=False)
    shape = list(self.shape)
    shape[d] = idx.numel()
    if out is None:
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
    elif list(out.shape) != shape or out.dtype != self.dtype or not out.is_contiguous():
        raise Unsupported  # resizing / dtype errors are torch's
    outer, s_outer, inner, s_inner = split3(self, d, d + 1)
    n = idx.numel()
    launched = take(self, outer, s_outer, inner, s_inner, [(idx, self.stride(d), size)],
                    out, (n * inner, inner, 1), mode=0, wrap=False)
    if sig is not None and launched is not None and index.dim() == 1 and index.is_contiguous():
        bound, grid, ints = launched  # ~20 integers: their specialization is worked out once
        _SELECTS.keep(sig, (allocation_stand_in(out), out.shape, size, bound.prepare(grid, ints).planned))
    return out


# index_select call signature (no out=) -> (output's allocation stand-in, shape, indexed dim
# size, prepared launch)
_SELECTS = Plans()


@with_fallback("index_select")
def index_select(self, dim, index):
    """torch.index_select(self, dim, index)."""
    return _run(self, dim, index)


@with_fallback("index_select.out")
def index_select_out(self, dim, index, *, out):
    return _run(self, dim, index, out)


declare("index_select", {"index_select": index_select, "index_select.out": index_select_out})
