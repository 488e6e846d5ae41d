"""Small pieces shared by op files: dtype maps and launch-size helpers."""
from __future__ import annotations

import functools

import torch
import triton.language as tl

from ..runtime import VENDOR

TL_DTYPE = {
    torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64, torch.int64: tl.int64, torch.int32: tl.int32,
    torch.int16: tl.int16, torch.int8: tl.int8, torch.uint8: tl.uint8, torch.bool: tl.int1,
}

FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

INT32_MAX = 2**31 - 1
# Element indices up to here stay in int32 even when a kernel rounds them up to whole
# blocks (``pid * BLOCK + arange`` past the end, masked): a tensor of up to 2**31 - 1
# elements whose last block's padding wrapped around int32 would pass its mask with
# negative offsets. Larger tensors take the int64 paths.
INDEX_LIMIT = INT32_MAX - 2**20


def cdiv(a: int, b: int) -> int:
    """Ceiling division on the host (``triton.cdiv`` is a jit function: slow to call from Python)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for n <= 1), on the host."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@functools.lru_cache(maxsize=4096)
def broadcast_shapes(*shapes) -> torch.Size:
    """``torch.broadcast_shapes``, cached: torch's runs Python reference code (tens of us a call)."""
    return torch.broadcast_shapes(*shapes)


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _cuda_l2_bytes(index: int) -> int:
    return torch.cuda.get_device_properties(index).L2_cache_size


def l2_bytes(device: torch.device, elsewhere: int) -> int:
    """L2 cache size of a CUDA ``device`` in bytes; ``elsewhere`` as in ``sm_count``."""
    if device.type != "cuda":
        return elsewhere
    return _cuda_l2_bytes(device.index if device.index is not None else torch.cuda.current_device())


def sm_count(device: torch.device, elsewhere: int) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (the current one when it has no index).
    ``elsewhere``, for other devices, is a small nominal count chosen by the caller, so that
    CPU tests under the interpreter take the branches a GPU takes (splits, partial programs)."""
    if device.type != "cuda":
        return elsewhere
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


if VENDOR is not None and VENDOR.device_type == "cuda":
    current_device = torch._C._cuda_getDevice  # the index Triton launches on
else:  # CPU tensors (the interpreter) have device index -1
    def current_device() -> int:
        """The index Triton launches on (-1 where tensors live on the CPU)."""
        return -1


def on_current_device(t: torch.Tensor) -> bool:
    """True when ``t`` lives on the current device: Triton launches there and nowhere else
    (a tensor on cuda:1 while cuda:0 is current goes to torch)."""
    dev = t.get_device()
    return dev < 0 or dev == current_device()


def kernel_dtype_ok(dtype: torch.dtype) -> bool:
    """Floating dtypes the vendor supports, plus the integer and bool dtypes Triton has."""
    if dtype in FLOATING:
        return dtype in VENDOR.dtypes if VENDOR else False
    return dtype in TL_DTYPE


def needs_int64(*tensors) -> bool:
    """True when some element offset of these tensors may not fit in int32."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel() > 0:
            if t.is_contiguous():  # the common case, without walking the dims
                if t.numel() > INDEX_LIMIT:
                    return True
                continue
            span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
            if max(span, t.numel()) > INDEX_LIMIT:
                return True
    return False


def dot_upcast() -> bool:
    """The interpreter multiplies bf16 dot operands as raw integers; upcast there."""
    return VENDOR is not None and VENDOR.has_quirk("upcast_bf16_dot")


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: some permutation of the dims is contiguous."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def default_strides(shape) -> tuple:
    """The strides ``torch.empty(shape)`` gives (size-0 and size-1 dims included)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def allocation_stand_in(t: torch.Tensor):
    """A one-element, zero-stride tensor shaped, typed and placed like ``t``, or None when
    ``t`` is empty or lacks torch's default strides.

    ``torch.empty_like(stand_in)`` then allocates a tensor like ``t`` (default contiguous
    strides) without parsing shape, dtype and device arguments: on an H100 host 1.9 us,
    where ``torch.empty(shape, dtype=..., device=...)`` takes 4.3 us (0.3 us apart on a
    CPU). Launch plans keep one per output. The stand-in is tied to ``t``'s device: check
    it against the call's device before use, as :func:`planned_output` does.
    """
    if t.numel() == 0 or t.stride() != default_strides(t.shape):
        return None
    return t.new_empty(()) if t.dim() == 0 else t.new_empty(1).expand(t.shape)


def planned_output(stand_in, shape, strides, dtype, near: torch.Tensor) -> torch.Tensor:
    """A new output of a planned call, on ``near``'s device: ``torch.empty_like`` of the
    plan's ``allocation_stand_in`` where it is on that device, else ``torch.empty_strided``."""
    if stand_in is not None and stand_in.get_device() == near.get_device():
        return torch.empty_like(stand_in)
    return torch.empty_strided(shape, strides, dtype=dtype, device=near.device)


_UNUSED: dict = {}


def unused_pointer(device, dtype) -> torch.Tensor:
    """A small tensor to pass for a pointer argument the kernel does not read (a GEMM's bias
    without one, cat's empty input slots), one per device and dtype, so that the kernel
    specializes as for a real operand of that dtype.

    Plans put it in a prepared launch's fixed tail instead of repeating a per-call tensor:
    every tensor among the per-call arguments costs its specialization at each launch
    (under a microsecond of host time each on an H100 machine).
    """
    key = (device, dtype)
    t = _UNUSED.get(key)
    if t is None:
        t = _UNUSED[key] = torch.empty(8, dtype=dtype, device=device)
    return t
