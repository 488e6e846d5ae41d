"""index_put / index_put_: writes (or atomic adds, accumulate=True) through integer index tensors.

Addressing is index.Tensor's (see index.py). With accumulate=False and repeated indices one
of the values lands, as in torch. fp16/bf16 accumulation goes through an fp32 copy (one
rounding per element, as torch's sorted accumulation). Bool masks go to torch.
"""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._common import broadcast_shapes, kernel_dtype_ok
from ._indexing import split3, take
from .index import plan

__all__ = ["index_put", "index_put_"]

_ADD_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64)


def _put(target, indices, values, accumulate):
    src, lo, hi, flats, bshape = plan(target, indices)
    shape = (*src.shape[:lo], *bshape, *src.shape[hi:])
    try:
        if broadcast_shapes(values.shape, shape) != torch.Size(shape):
            raise Unsupported
    except RuntimeError:
        raise Unsupported from None  # torch's shape-mismatch error
    n = flats[0][0].numel()
    outer, s_outer, inner, s_inner = split3(src, lo, hi)
    if outer * n * inner == 0:
        return
    v = values.expand(shape).reshape(outer, n, inner)
    take(src, outer, s_outer, inner, s_inner, flats, v, v.stride(), mode=2 if accumulate else 1, wrap=True)


def _run(self, indices, values, accumulate):
    if not on_vendor_device(self, values) or not kernel_dtype_ok(self.dtype) or self.dim() == 0:
        raise Unsupported
    if values.dtype != self.dtype or (accumulate and self.dtype not in _ADD_DTYPES):
        raise Unsupported
    if accumulate and torch.are_deterministic_algorithms_enabled():
        raise Unsupported  # atomics: the summation order varies
    if any(st == 0 and sz > 1 for sz, st in zip(self.shape, self.stride())):
        raise Unsupported  # overlapping writes: torch's error
    if values.untyped_storage().data_ptr() == self.untyped_storage().data_ptr():
        raise Unsupported
    if accumulate and self.dtype in (torch.bfloat16, torch.float16):
        # half-precision atomics would round after every add; torch sums repeated indices
        # in fp32 and rounds once, and so does this fp32 copy
        acc = self.to(torch.float32, memory_format=torch.contiguous_format)
        _put(acc, indices, values.to(torch.float32), True)
        return self.copy_(acc)
    _put(self, indices, values, accumulate)
    return self


@with_fallback("index_put_")
def index_put_(self, indices, values, accumulate=False):
    """self[indices] = values (or += with accumulate=True), in place."""
    return _run(self, indices, values, accumulate)


@with_fallback("_index_put_impl_")
def index_put_impl_(self, indices, values, accumulate=False, unsafe=False):
    return _run(self, indices, values, accumulate)


@with_fallback("index_put")
def index_put(self, indices, values, accumulate=False):
    """torch.index_put(self, indices, values, accumulate): a copy of self with the writes."""
    if not on_vendor_device(self, values):
        raise Unsupported
    return _run(self.clone(), indices, values, accumulate)


declare("index_put", {"index_put": index_put, "index_put_": index_put_, "_index_put_impl_": index_put_impl_})
