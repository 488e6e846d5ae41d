"""sort (always stable) along any dim, one row per program, rows up to MAX_SORT elements.

Each element becomes one int64 key: an order-preserving int32 image of its value in the
high half (floats through fp32 bits with NaN above +inf and -0.0 equal to +0.0, as torch
orders them) and its position in the low half, which makes ``tl.sort`` stable and yields the
indices. Values are then read back from the input at those indices, so they are exact.
Longer rows, int64 and 0-d inputs go to torch. topk.py reuses the key functions.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, VENDOR, declare, launcher, on_vendor_device, with_fallback
from ._common import kernel_dtype_ok, next_pow2

__all__ = ["sort"]

# longest row sorted in one program (vendor YAML ``sort: {default: {max_sort: N}}``); the
# interpreter's tl.sort costs about a second per 64 elements, so its limit is tiny
MAX_SORT = int((VENDOR.config("sort").get("default", {}) if VENDOR else {}).get("max_sort", 4096))
LOW_MAX = 2**31 - 1  # positions stored as LOW_MAX - j for descending (keeps ties in order)
LOW_MAX_C = tl.constexpr(LOW_MAX)
KEY_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int16, torch.int8,
              torch.uint8, torch.bool)
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


@triton.jit
def value_key(v, IS_FLOAT: tl.constexpr):
    if IS_FLOAT:
        f = v.to(tl.float32)
        f = tl.where(f == 0.0, 0.0, f)
        b = f.to(tl.int32, bitcast=True)
        k = tl.where(b < 0, b ^ 0x7FFFFFFF, b)
        k = tl.where(f != f, 0x7FFFFFFF, k)
    else:
        k = v.to(tl.int32)
    return k


@triton.jit
def pack(k, pos, valid, DESC: tl.constexpr):
    if DESC:
        low = LOW_MAX_C - pos
        pad = -9223372036854775807 - 1
    else:
        low = pos
        pad = 9223372036854775807
    p = (k.to(tl.int64) << 32) | low.to(tl.int64)
    return tl.where(valid, p, pad)


@triton.jit
def unpack_pos(p, DESC: tl.constexpr):
    low = p & 0xFFFFFFFF
    if DESC:
        low = LOW_MAX_C - low
    return low


@triton.jit
def _sort_rows_kernel(
    x, vals, idxs, N, K, inner,
    IS_FLOAT: tl.constexpr, DESC: tl.constexpr, BLOCK: tl.constexpr,
):
    # rows of a contiguous (outer, N, inner) input; writes the first K of each into (outer, K, inner)
    row = tl.program_id(0).to(tl.int64)
    o = row // inner
    i = row % inner
    j = tl.arange(0, BLOCK)
    valid = j < N
    base = x + o * N * inner + i
    v = tl.load(base + j * inner, mask=valid)
    s = tl.sort(pack(value_key(v, IS_FLOAT), j, valid, DESC), descending=DESC)
    pos = unpack_pos(s, DESC)
    keep = j < K
    out = o * K * inner + i + j * inner
    tl.store(vals + out, tl.load(base + pos * inner, mask=keep), mask=keep)
    tl.store(idxs + out, pos, mask=keep)


def rows_layout(self, dim):
    """(contiguous input, normalized dim, outer, N, inner), or Unsupported."""
    if not on_vendor_device(self) or self.dim() == 0 or self.dtype not in KEY_DTYPES:
        raise Unsupported
    if not kernel_dtype_ok(self.dtype):
        raise Unsupported
    nd = self.dim()
    dim = dim + nd if dim < 0 else dim
    if not 0 <= dim < nd:
        raise Unsupported
    x = self.contiguous()
    n = x.shape[dim]
    inner = 1
    for s in x.shape[dim + 1:]:
        inner *= s
    outer = x.numel() // (n * inner) if n * inner else 0
    return x, dim, outer, n, inner


def warps(block):
    return 4 if block <= 1024 else 8


def sort_rows(x, outer, n, inner, k, descending, out_shape):
    vals = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    idxs = torch.empty(out_shape, dtype=torch.int64, device=x.device)
    rows = outer * inner
    block = next_pow2(n)
    if rows and k:
        launcher(_sort_rows_kernel)[(rows,)](
            x, vals, idxs, n, k, inner,
            IS_FLOAT=x.is_floating_point(), DESC=bool(descending), BLOCK=block, num_warps=warps(block),
        )
    return vals, idxs


@with_fallback("sort.stable")
def sort(self, *, stable=None, dim=-1, descending=False):
    """torch.sort(self, dim, descending, stable): stable whatever ``stable`` says."""
    x, dim, outer, n, inner = rows_layout(self, dim)
    if n > MAX_SORT:
        raise Unsupported
    return sort_rows(x, outer, n, inner, n, descending, x.shape)


declare("sort", {"sort.stable": sort})
