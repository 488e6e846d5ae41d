"""topk along any dim: rows up to MAX_SORT sorted whole; longer rows in two passes (each
chunk of CHUNK elements keeps its best k keys, then the candidates of a row are sorted).
Keys are sort.py's (value image + position), so the k results come out sorted and ties
prefer the lower index. Rows needing more than MAX_SORT candidates, int64 and k > CHUNK
go to torch.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported, VENDOR, declare, launcher, with_fallback
from .sort import MAX_SORT, pack, rows_layout, sort_rows, unpack_pos, value_key, warps
from ._common import cdiv, next_pow2

__all__ = ["topk"]

# chunk length of the first pass (vendor YAML ``topk: {default: {chunk: N}}``)
CHUNK = int((VENDOR.config("topk").get("default", {}) if VENDOR else {}).get("chunk", 4096))


@triton.jit
def _topk_chunks_kernel(
    x, cand, N, K, inner, n_chunks,
    IS_FLOAT: tl.constexpr, DESC: tl.constexpr, CHUNK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    o = row // inner
    i = row % inner
    j = c * CHUNK + tl.arange(0, CHUNK)
    valid = j < N
    v = tl.load(x + o * N * inner + i + j.to(tl.int64) * inner, mask=valid)
    s = tl.sort(pack(value_key(v, IS_FLOAT), j, valid, DESC), descending=DESC)
    t = tl.arange(0, CHUNK)
    tl.store(cand + row * n_chunks * K + c * K + t, s, mask=t < K)


@triton.jit
def _topk_merge_kernel(
    x, cand, vals, idxs, N, K, inner, M,
    DESC: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o = row // inner
    i = row % inner
    t = tl.arange(0, BLOCK)
    if DESC:
        pad = -9223372036854775807 - 1
    else:
        pad = 9223372036854775807
    p = tl.load(cand + row * M + t, mask=t < M, other=pad)
    s = tl.sort(p, descending=DESC)
    pos = unpack_pos(s, DESC)
    keep = t < K
    out = o * K * inner + i + t * inner
    tl.store(vals + out, tl.load(x + o * N * inner + i + pos * inner, mask=keep), mask=keep)
    tl.store(idxs + out, pos, mask=keep)


@with_fallback("topk")
def topk(self, k, dim=-1, largest=True, sorted=True):
    """torch.topk(self, k, dim, largest, sorted): the results are always sorted."""
    x, dim, outer, n, inner = rows_layout(self, dim)
    if not 0 < k <= n:
        raise Unsupported  # k == 0 is cheap natively; k > n raises there
    shape = list(x.shape)
    shape[dim] = k
    if n <= MAX_SORT:
        return sort_rows(x, outer, n, inner, k, largest, shape)
    n_chunks = cdiv(n, CHUNK)
    m = n_chunks * k
    if k > CHUNK or m > MAX_SORT:
        raise Unsupported
    rows = outer * inner
    cand = torch.empty((rows, m), dtype=torch.int64, device=x.device)
    vals = torch.empty(shape, dtype=x.dtype, device=x.device)
    idxs = torch.empty(shape, dtype=torch.int64, device=x.device)
    desc = bool(largest)
    launcher(_topk_chunks_kernel)[(rows, n_chunks)](
        x, cand, n, k, inner, n_chunks, IS_FLOAT=x.is_floating_point(), DESC=desc, CHUNK=CHUNK,
        num_warps=warps(CHUNK))
    launcher(_topk_merge_kernel)[(rows,)](
        x, cand, vals, idxs, n, k, inner, m, DESC=desc, BLOCK=next_pow2(m),
        num_warps=warps(next_pow2(m)))
    return vals, idxs


declare("topk", {"topk": topk})
