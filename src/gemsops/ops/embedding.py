"""embedding and its dense backward (tokens grouped by row, each row summed in fp32 and stored once)."""
import torch
import triton
import triton.language as tl

from ..runtime import Plans, Unsupported, declare, launcher, on_device, on_vendor_device, with_fallback
from ._common import allocation_stand_in, kernel_dtype_ok, planned_output
from ._indexing import check_bounds, flat_index, take

__all__ = ["embedding", "embedding_dense_backward"]


@with_fallback("embedding")
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """torch.nn.functional.embedding's aten kernel (padding_idx only matters for backward)."""
    sig = (weight.shape, weight.stride(), weight.dtype, indices.shape, indices.stride(), indices.dtype)
    planned = _LOOKUPS.get(sig)
    if planned is not None and on_device(weight) and on_device(indices):
        out_like, out_shape, out_strides, prepared = planned
        check_bounds(indices, weight.shape[0], allow_negative=False)  # data: checked on every call
        out = planned_output(out_like, out_shape, out_strides, weight.dtype, weight)
        prepared(weight, out, indices, indices, indices, indices)  # contiguous: its own flat view
        return out
    if not on_vendor_device(weight, indices) or weight.dim() != 2 or not kernel_dtype_ok(weight.dtype):
        raise Unsupported
    idx = flat_index(indices)
    num, dim = weight.shape
    check_bounds(idx, num, allow_negative=False)
    out = torch.empty((*indices.shape, dim), dtype=weight.dtype, device=weight.device)
    launched = take(weight, 1, 0, dim, weight.stride(1), [(idx, weight.stride(0), num)],
                    out, (0, dim, 1), mode=0, wrap=False)
    if launched is not None and indices.is_contiguous():
        bound, grid, ints = launched  # 16 integers: their specialization is worked out once
        _LOOKUPS.keep(sig, (allocation_stand_in(out), out.shape, out.stride(), bound.prepare(grid, ints).planned))
    return out


# embedding call signature -> (output's allocation stand-in, shape, strides, prepared launch)
_LOOKUPS = Plans()


# The backward groups the tokens by table row (a counting sort whose groups take their
# places in any order), then sums each group. All its integer arrays and the fp32 spill
# buffer live in one zero-filled allocation: the spill (``slots x D`` floats) first, then,
# from element ``I0`` on, read as int32: counts[V] | start[V] | cursor[1] | rank[T] |
# rows[T] | order[T]. One allocation and one memset instead of six (the backward's host
# time is most of a small training step's).


@triton.jit
def _workspace(wi, I0, V, T):
    counts = wi + I0
    start = counts + V
    cursor = start + V
    rank = cursor + 1
    rows = rank + T
    order = rows + T
    return counts, start, cursor, rank, rows, order


@triton.jit
def _count_rows_kernel(wi, idx, I0, V, T, BLOCK: tl.constexpr):
    # rank[t]: how many tokens of t's row counted before it (atomics: any order)
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = t < T
    row = tl.load(idx + t, mask=mask, other=0).to(tl.int64)
    tl.store(rank + t, tl.atomic_add(counts + row, 1, mask=mask, sem="relaxed"), mask=mask)


@triton.jit
def _claim_ranges_kernel(wi, idx, I0, V, T, BLOCK: tl.constexpr):
    # each row's rank-0 token claims counts[row] consecutive places for the row's group
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = t < T
    row = tl.load(idx + t, mask=mask, other=0).to(tl.int64)
    claims = mask & (tl.load(rank + t, mask=mask, other=1) == 0)
    n = tl.load(counts + row, mask=claims, other=0)
    tl.store(start + row, tl.atomic_add(cursor + t * 0, n, mask=claims, sem="relaxed"), mask=claims)


@triton.jit
def _place_rows_kernel(wi, idx, I0, V, T, BLOCK: tl.constexpr):
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = t < T
    row = tl.load(idx + t, mask=mask, other=0).to(tl.int64)
    pos = tl.load(start + row, mask=mask, other=0) + tl.load(rank + t, mask=mask, other=0)
    tl.store(rows + pos, row.to(tl.int32), mask=mask)
    tl.store(order + pos, t, mask=mask)


@triton.jit
def _segmented_add(v1, starts1, v2, starts2):
    # running sum that restarts where a run of equal table rows starts
    return tl.where(starts2, v2, v1 + v2), starts1 | starts2


@triton.jit
def _sum_runs_kernel(out, spill, wi, grad, I0, V, T, D, sg_t, sg_d, padding_idx,
                     SLOT_BY_ROW: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
    # Program p sums the runs of equal rows among grouped positions [p * CHUNK, (p + 1) *
    # CHUNK) in fp32. A run that is its row's whole group is rounded once and stored. A
    # run cut by a chunk edge is added into the group's fp32 spill slot instead, and
    # _write_spilled_kernel stores that slot once every chunk has added its part.
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    base = tl.program_id(0) * CHUNK
    k = tl.arange(0, CHUNK)
    pos = base + k
    valid = pos < T
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    row = tl.load(rows + pos, mask=valid, other=-1).to(tl.int64)
    prev = tl.load(rows + pos - 1, mask=valid & (k > 0), other=-1).to(tl.int64)
    nxt = tl.load(rows + pos + 1, mask=(k < CHUNK - 1) & (pos + 1 < T), other=-1).to(tl.int64)
    starts = (k == 0) | (row != prev)
    ends = valid & ((k == CHUNK - 1) | (row != nxt))
    tok = tl.load(order + pos, mask=valid, other=0).to(tl.int64)
    g = tl.load(grad + tok[:, None] * sg_t + d[None, :] * sg_d, mask=valid[:, None] & dmask[None, :],
                other=0.0).to(tl.float32)
    sums, _ = tl.associative_scan((g, tl.broadcast_to(starts[:, None], (CHUNK, BLOCK_D))), 0, _segmented_add)
    group_start = tl.load(start + row, mask=ends, other=0)
    group_end = group_start + tl.load(counts + row, mask=ends, other=0)
    keep = ends & (row != padding_idx)
    cut = (group_start < base) | (group_end > base + CHUNK)
    tl.store(out + row[:, None] * D + d[None, :], sums.to(out.dtype.element_ty),
             mask=(keep & (cut == 0))[:, None] & dmask[None, :])
    # a cut group's slot: its first chunk edge (or its row, where the table has fewer rows)
    slot = row if SLOT_BY_ROW else (group_start // CHUNK + 1).to(tl.int64)
    tl.atomic_add(spill + slot[:, None] * D + d[None, :], sums, mask=(keep & cut)[:, None] & dmask[None, :],
                  sem="relaxed")


@triton.jit
def _write_spilled_kernel(out, spill, wi, I0, V, T, D, padding_idx, SLOT_BY_ROW: tl.constexpr,
                          CHUNK: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    # chunk edge e stores the group that lies across it, if e is that group's first edge
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    e = tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E) + 1
    edge = e * CHUNK
    valid = edge < T
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row = tl.load(rows + edge - 1, mask=valid, other=0).to(tl.int64)
    group_start = tl.load(start + row, mask=valid, other=0)
    group_end = group_start + tl.load(counts + row, mask=valid, other=0)
    first_cut = valid & (group_end > edge) & (group_start // CHUNK + 1 == e) & (row != padding_idx)
    slot = row if SLOT_BY_ROW else e.to(tl.int64)
    mask = first_cut[:, None] & (d < D)[None, :]
    v = tl.load(spill + slot[:, None] * D + d[None, :], mask=mask, other=0.0)
    tl.store(out + row[:, None] * D + d[None, :], v.to(out.dtype.element_ty), mask=mask)


_L_count_rows = launcher(_count_rows_kernel)
_L_claim_ranges = launcher(_claim_ranges_kernel)
_L_place_rows = launcher(_place_rows_kernel)
_L_sum_runs = launcher(_sum_runs_kernel)
_L_write_spilled = launcher(_write_spilled_kernel)
# grouped positions and gradient columns per program. H100, bf16, 16384 / 4096 tokens of a
# 128256x4096 table, uniform or Zipf indices: 8 x 1024 took 472 / 385 us, the best of 8
# shapes (2-16 positions, 512-4096 columns, 4 or 8 warps; 16 x 256: 540 / 412 us)
_RUN_CHUNK = 8
_RUN_BLOCK_D = 1024
_GROUP_BLOCK = 1024


@with_fallback("embedding_dense_backward")
def embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq):
    """Sum of grad_output rows per index; the padding row gets no gradient.

    The tokens are grouped by row first, so a row's gradient rows are adjacent: they are
    summed in fp32 registers and stored once, in the output dtype. A group that crosses a
    chunk edge adds its parts into an fp32 spill buffer with atomics. The summation order
    within a row varies between runs (the grouping uses atomics too), and so may the last
    bits of the result; torch's CUDA kernel is deterministic, and deterministic mode runs
    it. H100, bf16, a 128256x4096 table: 472 us for 16384 tokens (torch 1354), 385 for 4096
    (664); most of it is writing the table's 1 GiB of zeros (321 us). Grouping with
    torch.sort instead took 540 / 407 us. The suite's training step (lookup and backward)
    took 953 / 507 us when every token had its own fp32 row filled by atomics, 573 / 415 now.
    """
    if scale_grad_by_freq or not on_vendor_device(grad_output, indices):
        raise Unsupported
    if torch.are_deterministic_algorithms_enabled():
        raise Unsupported  # atomics: the summation order varies
    dtype = grad_output.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16) or grad_output.dim() == 0:
        raise Unsupported
    idx = flat_index(indices)
    check_bounds(idx, num_weights, allow_negative=False)
    tokens = idx.numel()
    if tokens >= 2**31 - _RUN_CHUNK or num_weights >= 2**31:
        raise Unsupported  # positions and rows are kept in int32
    dim = grad_output.shape[-1]
    grad = grad_output.reshape(tokens, dim)
    dev = grad_output.device
    out = torch.zeros((num_weights, dim), dtype=dtype, device=dev)
    if tokens == 0 or dim == 0:
        return out
    chunks = triton.cdiv(tokens, _RUN_CHUNK)
    # cut groups number at most one per chunk edge, and at most one per table row
    by_row = num_weights <= chunks
    spill_size = (num_weights if by_row else chunks) * dim
    ws = torch.zeros(spill_size + 2 * num_weights + 1 + 3 * tokens, dtype=torch.float32, device=dev)
    wi = ws.view(torch.int32)
    grid = (triton.cdiv(tokens, _GROUP_BLOCK),)
    _L_count_rows[grid](wi, idx, spill_size, num_weights, tokens, BLOCK=_GROUP_BLOCK)
    _L_claim_ranges[grid](wi, idx, spill_size, num_weights, tokens, BLOCK=_GROUP_BLOCK)
    _L_place_rows[grid](wi, idx, spill_size, num_weights, tokens, BLOCK=_GROUP_BLOCK)
    block_d = min(triton.next_power_of_2(dim), _RUN_BLOCK_D)
    pad = padding_idx if 0 <= padding_idx < num_weights else -1
    _L_sum_runs[(chunks, triton.cdiv(dim, block_d))](
        out, ws, wi, grad, spill_size, num_weights, tokens, dim, grad.stride(0), grad.stride(1), pad,
        SLOT_BY_ROW=by_row, CHUNK=_RUN_CHUNK, BLOCK_D=block_d)
    if chunks > 1:
        block_e = min(triton.next_power_of_2(chunks - 1), 16)
        _L_write_spilled[(triton.cdiv(chunks - 1, block_e), triton.cdiv(dim, block_d))](
            out, ws, wi, spill_size, num_weights, tokens, dim, pad, SLOT_BY_ROW=by_row, CHUNK=_RUN_CHUNK,
            BLOCK_E=block_e, BLOCK_D=block_d)
    return out


declare("embedding", {"embedding": embedding})
declare("embedding_dense_backward", {"embedding_dense_backward": embedding_dense_backward})
