"""Constant factories: full, ones, zeros and their ``_like`` forms.

These ops have no tensor input; torch dispatches them by the requested device, so the
host functions run only when that device is the vendor's. The fill value is converted to
the result dtype on the host exactly as torch converts a scalar (double -> float -> half
or bfloat16, round to nearest even) and stored as raw bits, so the kernel never casts.
"""
import functools
import math
import struct

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Unsupported, declare, launcher, with_fallback
from ._common import cdiv, is_dense
from ._pointwise import with_vendor_fallback

__all__ = ["full", "ones", "zeros", "full_like", "ones_like", "zeros_like"]

BLOCK = 2048
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _fill_kernel(out, value, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    v = (tl.zeros((BLOCK,), dtype=out.dtype.element_ty) + value).to(out.dtype.element_ty)
    tl.store(out + offs, v, mask=offs < n)


def _f32_bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


@functools.lru_cache(maxsize=1024)
def _bits(dtype, kind, value, negative_zero):
    """Raw bits of ``value`` in ``dtype`` (as a signed integer), or None if torch would raise."""
    if dtype == torch.bool:
        return 1 if value else 0
    if dtype in _INT_DTYPES:
        if kind is float:
            return None  # float -> integer fills: truncation and NaN rules are torch's
        info = torch.iinfo(dtype)
        return int(value) if info.min <= value <= info.max else None
    v = float(value)
    if negative_zero:
        v = -0.0
    if math.isfinite(v) and abs(v) > torch.finfo(dtype).max:
        return None  # torch: "value cannot be converted ... without overflow"
    if dtype == torch.float64:
        return struct.unpack("<q", struct.pack("<d", v))[0]
    u = _f32_bits(v)
    if dtype == torch.float32:
        bits, width = u, 32
    elif dtype == torch.float16:
        bits, width = struct.unpack("<H", struct.pack("<e", struct.unpack("<f", struct.pack("<I", u))[0]))[0], 16
    else:  # bfloat16: round the fp32 bits to nearest even, NaN stays a quiet NaN
        bits = 0x7FC0 if math.isnan(v) else (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        width = 16
    return bits - (1 << width) if bits >= 1 << (width - 1) else bits


def scalar_bits(dtype, value):
    """``value`` converted to ``dtype`` as torch converts a Scalar, as raw signed integer bits.

    None where torch would raise or the conversion is not handled here (complex values).
    """
    if isinstance(value, complex) or not isinstance(value, (int, float)):
        return None
    kind = type(value)
    return _bits(dtype, kind, value, kind is float and value == 0 and math.copysign(1.0, value) < 0)


def _fill(out, value):
    """Store ``value`` in every element of the dense tensor ``out``."""
    if not is_dense(out):
        raise Unsupported
    bits = scalar_bits(out.dtype, value)
    if bits is None:
        raise Unsupported
    n = out.numel()
    if n == 0:
        return out
    # a dense tensor covers exactly n consecutive elements of its storage
    flat = out.as_strided((n,), (1,)).view(_INT_VIEW[out.element_size()])
    launcher(_fill_kernel)[(cdiv(n, BLOCK),)](flat, bits, n, BLOCK=BLOCK)
    return out


def _device(device):
    dev = torch.device("cpu") if device is None else torch.device(device)
    if VENDOR is None or dev.type != VENDOR.device_type:
        raise Unsupported
    return dev


def _dtype_for(value, dtype):
    if dtype is not None:
        return dtype
    if isinstance(value, bool):
        return torch.bool
    if isinstance(value, int):
        return torch.int64
    if isinstance(value, float):
        return torch.get_default_dtype()
    raise Unsupported


def _ok_dtype(dtype):
    if dtype not in _FLOAT_DTYPES and dtype not in _INT_DTYPES and dtype != torch.bool:
        raise Unsupported
    if dtype in _FLOAT_DTYPES and dtype not in VENDOR.dtypes:
        raise Unsupported
    return dtype


def _factory(size, value, dtype, layout, device, pin_memory):
    dev = _device(device)
    if layout not in (None, torch.strided) or pin_memory or any(s < 0 for s in size):
        raise Unsupported
    dtype = _ok_dtype(_dtype_for(value, dtype))
    return _fill(torch.empty(size, dtype=dtype, device=dev), value)


@with_fallback("full")
def full(size, fill_value, *, dtype=None, layout=None, device=None, pin_memory=None):
    """torch.full(size, fill_value) on the vendor's device."""
    return _factory(size, fill_value, dtype, layout, device, pin_memory)


@with_fallback("ones")
def ones(size, *, dtype=None, layout=None, device=None, pin_memory=None):
    """torch.ones(size) on the vendor's device."""
    return _factory(size, 1, dtype or torch.get_default_dtype(), layout, device, pin_memory)


@with_fallback("zeros")
def zeros(size, *, dtype=None, layout=None, device=None, pin_memory=None):
    """torch.zeros(size) on the vendor's device."""
    return _factory(size, 0, dtype or torch.get_default_dtype(), layout, device, pin_memory)


def _like(self, value, dtype, layout, device, pin_memory, memory_format):
    dev = self.device if device is None else torch.device(device)
    if VENDOR is None or dev.type != VENDOR.device_type or layout not in (None, torch.strided) or pin_memory:
        raise Unsupported
    if self.layout != torch.strided:
        raise Unsupported
    _ok_dtype(dtype or self.dtype)
    out = torch.empty_like(self, dtype=dtype, device=device, memory_format=memory_format or torch.preserve_format)
    return _fill(out, value)


# self may live elsewhere than device= (zeros_like(cpu_t, device="cuda")): vendor_fallback
@with_vendor_fallback("full_like")
def full_like(self, fill_value, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    """torch.full_like(self, fill_value)."""
    return _like(self, fill_value, dtype, layout, device, pin_memory, memory_format)


@with_vendor_fallback("ones_like")
def ones_like(self, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    """torch.ones_like(self)."""
    return _like(self, 1, dtype, layout, device, pin_memory, memory_format)


@with_vendor_fallback("zeros_like")
def zeros_like(self, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    """torch.zeros_like(self)."""
    return _like(self, 0, dtype, layout, device, pin_memory, memory_format)


declare("full", {"full": full, "full_like": full_like})
declare("ones", {"ones": ones, "ones_like": ones_like})
declare("zeros", {"zeros": zeros, "zeros_like": zeros_like})
