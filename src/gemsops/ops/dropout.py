"""native_dropout and its backward.

Random numbers come from Triton's Philox (``tl.rand``) keyed by a seed and offset taken
from torch's default generator of the device (its Philox offset is advanced on CUDA; on a
CPU vendor two numbers are drawn from the CPU generator), so ``torch.manual_seed`` makes
results reproducible. The bit pattern differs from torch's own dropout.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, declare, launcher, on_vendor_device, with_fallback
from ._common import cdiv, kernel_dtype_ok
from ._pointwise import Pointwise

__all__ = ["native_dropout", "native_dropout_backward"]

BLOCK = 1024
_FLOAT = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _dropout_kernel(x, out, mask, n, p, scale, seed, offset, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    keep = tl.rand(seed, offs + offset) >= p
    v = tl.load(x + offs, mask=inside).to(tl.float32)
    # x * mask * scale as torch computes it: NaN inputs stay NaN where dropped
    r = v * keep.to(tl.float32) * scale
    tl.store(out + offs, r.to(out.dtype.element_ty), mask=inside)
    tl.store(mask + offs, keep, mask=inside)


def _seed_offset(device, increment):
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        gen = torch.cuda.default_generators[idx]
        try:
            offset = gen.get_offset()
            gen.set_offset(offset + increment)
            return gen.initial_seed(), offset
        except (AttributeError, RuntimeError):  # a generator without offsets: draw from the CPU one
            pass
    seed, offset = torch.randint(0, 2**62, (2,)).tolist()
    return seed, offset


@with_fallback("native_dropout")
def native_dropout(input, p, train):
    """(input * mask / (1 - p), mask) with mask ~ Bernoulli(1 - p); p = 1 and eval go to torch."""
    if train is False or not 0 <= p < 1 or not on_vendor_device(input):
        raise Unsupported
    if input.dtype not in _FLOAT or not kernel_dtype_ok(input.dtype) or input.dtype == torch.float64:
        raise Unsupported  # fp64 would be computed in fp32 here
    n = input.numel()
    if n == 0:
        raise Unsupported
    x = input.contiguous()
    out = torch.empty_like(x)
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    seed, offset = _seed_offset(x.device, (n + 3) // 4 * 4)
    launcher(_dropout_kernel)[(cdiv(n, BLOCK),)](x, out, mask, n, p, 1.0 / (1.0 - p), seed, offset, BLOCK=BLOCK)
    return out, mask


@triton.jit
def _masked_scale(g, m, s):
    return g * m.to(g.dtype) * s


_backward = Pointwise("native_dropout_backward", _masked_scale, promote=(0,))


@with_fallback("native_dropout_backward")
def native_dropout_backward(grad_output, mask, scale):
    """grad_output * mask * scale."""
    if mask.dtype != torch.bool or not grad_output.is_floating_point():
        raise Unsupported
    return _backward(grad_output, mask, scale)


declare("native_dropout", {"native_dropout": native_dropout})
declare("native_dropout_backward", {"native_dropout_backward": native_dropout_backward})
