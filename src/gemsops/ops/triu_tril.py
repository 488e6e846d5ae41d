"""triu / tril over the last two dims (batched), out-of-place, in-place and out=."""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, declare, launcher, on_vendor_device, with_fallback
from ._common import cdiv, kernel_dtype_ok, next_pow2
from ._indexing import collapse

__all__ = ["triu", "tril"]

TILE = 4096


@triton.jit
def _tri_kernel(
    x, out, M, N, diag, m_blocks, n_blocks,
    xb, xm, xn, ob, om, on,
    UPPER: tl.constexpr, INPLACE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    per_b = m_blocks * n_blocks
    b = (pid // per_b).to(tl.int64)
    rest = pid % per_b
    rows = (rest // n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (rest % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = (rows < M)[:, None] & (cols < N)[None, :]
    d = cols[None, :] - rows[:, None]
    if UPPER:
        keep = d >= diag
    else:
        keep = d <= diag
    o = out + b * ob + rows[:, None].to(tl.int64) * om + cols[None, :] * on
    if INPLACE:
        # the kept part is already in place: only clear the other one
        tl.store(o, tl.zeros((BLOCK_M, BLOCK_N), dtype=out.dtype.element_ty), mask=inside & ~keep)
    else:
        p = x + b * xb + rows[:, None].to(tl.int64) * xm + cols[None, :] * xn
        v = tl.load(p, mask=inside & keep, other=0)
        tl.store(o, v, mask=inside)


def _run(self, diagonal, upper, out=None, inplace=False):
    if not on_vendor_device(self, out) or self.dim() < 2 or not kernel_dtype_ok(self.dtype):
        raise Unsupported
    if inplace:
        out = self
    elif out is None:
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
    elif out.shape != self.shape or out.dtype != self.dtype or out.untyped_storage().data_ptr() == \
            self.untyped_storage().data_ptr():
        raise Unsupported  # resize, casting and aliasing rules are torch's
    if out.numel() == 0:
        return out
    M, N = self.shape[-2:]
    xbatch = collapse(self.shape[:-2], self.stride()[:-2])
    obatch = collapse(out.shape[:-2], out.stride()[:-2])
    if xbatch is None or obatch is None:
        raise Unsupported
    if inplace and any(st == 0 and sz > 1 for sz, st in zip(self.shape, self.stride())):
        raise Unsupported  # overlapping writes: torch's error
    batch = out.numel() // (M * N)
    block_n = min(next_pow2(N), 256)
    block_m = min(max(1, TILE // block_n), next_pow2(M))
    m_blocks, n_blocks = cdiv(M, block_m), cdiv(N, block_n)
    # diagonals past the matrix are clamped so that they fit the kernel's int32 argument
    diag = max(-M, min(N, diagonal))
    launcher(_tri_kernel)[(batch * m_blocks * n_blocks,)](
        self, out, M, N, diag, m_blocks, n_blocks,
        xbatch[1], self.stride(-2), self.stride(-1), obatch[1], out.stride(-2), out.stride(-1),
        UPPER=upper, INPLACE=inplace, BLOCK_M=block_m, BLOCK_N=block_n,
    )
    return out


@with_fallback("triu")
def triu(self, diagonal=0):
    """torch.triu(self, diagonal)."""
    return _run(self, diagonal, True)


@with_fallback("tril")
def tril(self, diagonal=0):
    """torch.tril(self, diagonal)."""
    return _run(self, diagonal, False)


@with_fallback("triu_")
def triu_(self, diagonal=0):
    return _run(self, diagonal, True, inplace=True)


@with_fallback("tril_")
def tril_(self, diagonal=0):
    return _run(self, diagonal, False, inplace=True)


@with_fallback("triu.out")
def triu_out(self, diagonal=0, *, out):
    return _run(self, diagonal, True, out)


@with_fallback("tril.out")
def tril_out(self, diagonal=0, *, out):
    return _run(self, diagonal, False, out)


declare("triu", {"triu": triu, "triu_": triu_, "triu.out": triu_out})
declare("tril", {"tril": tril, "tril_": tril_, "tril.out": tril_out})
