"""scatter (tensor or scalar source) and scatter_add, out-of-place and in-place.

Plain scatter moves bits, so it runs on integer views of the data (a scalar source is
converted on the host like torch does). scatter_add uses atomics: bf16 accumulates in an
fp32 copy (no bf16 atomics in the interpreter, and fewer roundings), other float and
int32/int64 dtypes add in place. ``scatter.reduce`` is left to torch.
Duplicate indices in plain scatter write one of the candidates, as in torch.
"""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, on_vendor_device, with_fallback
from ._common import kernel_dtype_ok
from ._indexing import check_bounds, gather_scatter
from .full import scalar_bits
from .gather import check_shapes

__all__ = ["scatter", "scatter_add"]

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_ADD_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64)


def _target(self, inplace):
    if not inplace:
        return self.clone()
    if any(st == 0 and sz > 1 for sz, st in zip(self.shape, self.stride())):
        raise Unsupported  # overlapping writes: torch's error
    return self


def _scatter(self, dim, index, src, inplace):
    tensors = (self, index, src) if isinstance(src, torch.Tensor) else (self, index)
    if not on_vendor_device(*tensors) or not kernel_dtype_ok(self.dtype):
        raise Unsupported
    if isinstance(src, torch.Tensor):
        if src.dtype != self.dtype:
            raise Unsupported
        dim = check_shapes(self, dim, index, src)
    else:
        dim = check_shapes(self, dim, index)
        bits = scalar_bits(self.dtype, src)
        if bits is None:
            raise Unsupported
    check_bounds(index, self.shape[dim], allow_negative=False)
    out = _target(self, inplace)
    iview = _INT_VIEW[out.element_size()]
    source = src.view(iview) if isinstance(src, torch.Tensor) else bits
    gather_scatter(out.view(iview), dim, index, source, mode=1)
    return out


def _scatter_add(self, dim, index, src, inplace):
    if torch.are_deterministic_algorithms_enabled():
        raise Unsupported  # atomics: the summation order varies
    if not on_vendor_device(self, index, src) or self.dtype not in _ADD_DTYPES or src.dtype != self.dtype:
        raise Unsupported
    if not kernel_dtype_ok(self.dtype):
        raise Unsupported
    dim = check_shapes(self, dim, index, src)
    check_bounds(index, self.shape[dim], allow_negative=False)
    if self.dtype == torch.bfloat16:
        if inplace:
            _target(self, True)
        acc = self.to(torch.float32)
        gather_scatter(acc, dim, index, src, mode=2)
        if inplace:
            return self.copy_(acc)
        return acc.to(torch.bfloat16)
    out = _target(self, inplace)
    gather_scatter(out, dim, index, src, mode=2)
    return out


@with_fallback("scatter.src")
def scatter(self, dim, index, src):
    """torch.scatter(self, dim, index, src)."""
    return _scatter(self, dim, index, src, False)


@with_fallback("scatter.value")
def scatter_value(self, dim, index, value):
    return _scatter(self, dim, index, value, False)


@with_fallback("scatter_.src")
def scatter_inplace(self, dim, index, src):
    return _scatter(self, dim, index, src, True)


@with_fallback("scatter_.value")
def scatter_value_inplace(self, dim, index, value):
    return _scatter(self, dim, index, value, True)


@with_fallback("scatter_add")
def scatter_add(self, dim, index, src):
    """torch.scatter_add(self, dim, index, src)."""
    return _scatter_add(self, dim, index, src, False)


@with_fallback("scatter_add_")
def scatter_add_inplace(self, dim, index, src):
    return _scatter_add(self, dim, index, src, True)


declare("scatter", {
    "scatter.src": scatter, "scatter.value": scatter_value,
    "scatter_.src": scatter_inplace, "scatter_.value": scatter_value_inplace,
})
declare("scatter_add", {"scatter_add": scatter_add, "scatter_add_": scatter_add_inplace})
