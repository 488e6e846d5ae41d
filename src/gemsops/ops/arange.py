"""arange: a factory op (no tensor input) served only for the vendor's device.

Sizes follow torch: for int64 results an exact integer ceil((end - start) / step), for every
other dtype ceil of the double quotient. Floating values are ``start + i * step`` in fp32
(as torch's CUDA kernel computes them; torch's CPU kernel uses double, so CPU results can
differ in the last bit), integer values in int64.
"""
import math

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Unsupported, declare, launcher, with_fallback
from ._common import cdiv

__all__ = ["arange"]

BLOCK = 1024
_INT = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _arange_kernel(out, start, step, n, FLOAT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if FLOAT:
        v = start + i.to(tl.float32) * step
    else:
        v = start + i * step
    tl.store(out + i, v.to(out.dtype.element_ty), mask=i < n)


def _run(start, end, step, dtype, layout, device, pin_memory):
    dev = torch.device("cpu") if device is None else torch.device(device)
    if VENDOR is None or dev.type != VENDOR.device_type or layout not in (None, torch.strided) or pin_memory:
        raise Unsupported
    args = (start, end, step)
    if any(not isinstance(a, (int, float)) for a in args):
        raise Unsupported  # complex or tensor-valued scalars
    has_float = any(isinstance(a, float) for a in args)
    if dtype is None:
        dtype = torch.get_default_dtype() if has_float else torch.int64
    bounds_ok = all(math.isfinite(a) for a in args) and step != 0 and (end - start) * step >= 0
    if dtype == torch.int64 and bounds_ok and int(step) == 0:
        # torch sizes int64 ranges with the step converted to int64: a float step in (-1, 1)
        # becomes 0, which torch 2.11 divides by (SIGFPE, the process dies) and torch 2.13
        # rejects with this error. Raised here so that no torch version is asked.
        raise ValueError("step must be nonzero")
    if dtype in _FLOAT:
        if dtype not in VENDOR.dtypes:
            raise Unsupported
    elif dtype not in _INT or has_float:
        raise Unsupported  # float64 (fp32 math would lose bits), bool, float steps for ints
    if not bounds_ok:
        raise Unsupported  # torch raises its own errors
    if dtype == torch.int64:
        n = -((start - end) // step)
    else:
        n = math.ceil((float(end) - float(start)) / float(step))
        if n > 2**63 - 1:
            raise Unsupported  # torch's "invalid size" error
    if dtype in _INT:
        info = torch.iinfo(dtype)
        last = start + (n - 1) * step if n > 0 else start
        if not (info.min <= start <= info.max and info.min <= last <= info.max):
            raise Unsupported
    out = torch.empty(n, dtype=dtype, device=dev)
    if n:
        floating = dtype in _FLOAT
        s, st = (float(start), float(step)) if floating else (start, step)
        launcher(_arange_kernel)[(cdiv(n, BLOCK),)](out, s, st, n, FLOAT=floating, BLOCK=BLOCK)
    return out


@with_fallback("arange")
def arange(end, *, dtype=None, layout=None, device=None, pin_memory=None):
    """torch.arange(end) on the vendor's device."""
    return _run(0, end, 1, dtype, layout, device, pin_memory)


@with_fallback("arange.start")
def arange_start(start, end, *, dtype=None, layout=None, device=None, pin_memory=None):
    return _run(start, end, 1, dtype, layout, device, pin_memory)


@with_fallback("arange.start_step")
def arange_start_step(start, end, step=1, *, dtype=None, layout=None, device=None, pin_memory=None):
    return _run(start, end, step, dtype, layout, device, pin_memory)


declare("arange", {"arange": arange, "arange.start": arange_start, "arange.start_step": arange_start_step})
