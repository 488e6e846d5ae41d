"""copy_ (dtype conversion, any strides, broadcast src) and _to_copy (same device).

Conversions follow C casts, as torch's do: float to int truncates, anything to bool is
``!= 0`` (NaN is true), narrowing float casts round to nearest even. Copies between
devices, into other layouts or memory formats, and overlapping copies go to torch.
"""
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._common import is_dense
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["copy_", "to_copy"]


@triton.jit
def _identity(x):
    return x


_store = Pointwise("copy", _identity, promote=())  # a casting store into out


def _copy_run(self, src, non_blocking=False, *, out=None):
    if not isinstance(src, torch.Tensor) or src.is_neg() or src.is_conj() or self.is_neg() or self.is_conj():
        raise Unsupported
    if src.get_device() != self.get_device() and src.dim() != 0:  # get_device: no device objects built
        raise Unsupported  # host-device or cross-GPU transfers
    if src is self or (src.data_ptr() == self.data_ptr() and src.dtype == self.dtype
                       and src.shape == self.shape and src.stride() == self.stride()):
        # a copy onto itself: nothing to do (Triton's interpreter copies storages back onto
        # themselves after every launch, which would otherwise re-enter this op)
        return self
    return _store(src, out=self)


def _same_device(want, have):
    return want.type == have.type and (want.index is None or want.index == have.index)


_to_dtype: dict = {}  # dtype -> Pointwise whose result is a new tensor of that dtype


def _to_copy_run(self, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
                 memory_format=None):
    if (dtype is not None and layout is None and device is None and pin_memory is None and memory_format is None
            and self.is_contiguous() and not self.is_neg()):
        # ``x.to(dtype)`` / ``x.float()`` on a contiguous tensor: a new contiguous tensor that
        # nothing else can overlap, so the casting store's in-place checks are not needed
        cast = _to_dtype.get(dtype)
        if cast is None:
            cast = _to_dtype[dtype] = Pointwise("to_dtype", _identity, promote=(), out_dtype=dtype)
        return cast(self)
    if (layout not in (None, torch.strided) or pin_memory or self.layout != torch.strided
            or (device is not None and not _same_device(torch.device(device), self.device))):
        raise Unsupported
    dtype = self.dtype if dtype is None else dtype
    if memory_format in (None, torch.preserve_format) and is_dense(self):
        out = torch.empty_strided(self.shape, self.stride(), dtype=dtype, device=self.device)
    elif memory_format is torch.contiguous_format or (memory_format in (None, torch.preserve_format)
                                                      and self.dim() < 4):
        out = torch.empty(self.shape, dtype=dtype, device=self.device)
    else:
        raise Unsupported  # channels-last and friends: torch's layout rules
    return _copy_run(out, self)


copy_ = declare_pointwise("copy_", _copy_run, ["copy_.default"], public=torch.Tensor.copy_)
to_copy = declare_pointwise("_to_copy", _to_copy_run, ["_to_copy.default"], public=torch.ops.aten._to_copy.default)
