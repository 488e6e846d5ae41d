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
def _group_rows_kernel(wi, idx, I0, V, T, STEP: tl.constexpr, BLOCK: tl.constexpr):
    # launched three times, STEP 0, 1, 2 (each step needs all of the previous one done)
    counts, start, cursor, rank, rows, order = _workspace(wi, I0, V, T)
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = t < T
    row = tl.load(idx + t, mask=mask, other=0).to(tl.int64)
    if STEP == 0:
        # rank[t]: how many tokens of t's row counted before it (atomics: any order)
        tl.store(rank + t, tl.atomic_add(counts + row, 1, mask=mask, sem="relaxed"), mask=mask)
    elif STEP == 1:
        # each row's rank-0 token claims counts[row] consecutive places for the row's group
        claims = mask & (tl.load(rank + t, mask=mask, other=1) == 0)
        n = tl.load(counts + row, mask=claims, other=0)
        tl.store(start + row, tl.atomic_add(cursor + t * 0, n, mask=claims, sem="relaxed"), mask=claims)
    else:
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


_L_group_rows = launcher(_group_rows_kernel)
_L_sum_runs = launcher(_sum_runs_kernel)
_L_write_spilled = launcher(_write_spilled_kernel)
# grouped positions and gradient columns per program. H100, bf16, 16384 / 4096 tokens of a
# 128256x4096 table, uniform or Zipf indices: 8 x 1024 took 472 / 385 us, the best of 8
# shapes (2-16 positions, 512-4096 columns, 4 or 8 warps; 16 x 256: 540 / 412 us)
_RUN_CHUNK = 8
_RUN_BLOCK_D = 1024
_GROUP_BLOCK = 1024


# embedding_dense_backward call signature -> its plan (see _backward_plan)
_BACKWARDS = Plans()


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
    sig = (grad_output.shape, grad_output.stride(), grad_output.dtype, indices.shape, indices.stride(),
           indices.dtype, num_weights, padding_idx, scale_grad_by_freq, grad_output.get_device())
    plan = _BACKWARDS.get(sig)
    if plan is not None and on_device(grad_output) and on_device(indices) \
            and not torch.are_deterministic_algorithms_enabled():
        check_bounds(indices, num_weights, allow_negative=False)  # data: checked on every call
        return plan(grad_output, indices)  # contiguous indices: their own flat view
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
    if tokens == 0 or dim == 0 or num_weights == 0:
        return torch.zeros((num_weights, dim), dtype=dtype, device=grad_output.device)
    grad = grad_output.reshape(tokens, dim)
    plan = _backward_plan(grad, num_weights, padding_idx)
    if idx.data_ptr() == indices.data_ptr() and grad.data_ptr() == grad_output.data_ptr():
        _BACKWARDS.keep(sig, plan)  # both read in place: the next call passes them as they are
    return plan(grad, idx)


def _backward_plan(grad, num_weights, padding_idx):
    """``plan(grad, idx)`` -> the table's gradient, for gradients and indices laid out as
    ``grad`` (tokens x dim, any strides) and a flat index; allocations and launches fixed."""
    tokens, dim = grad.shape
    chunks = triton.cdiv(tokens, _RUN_CHUNK)
    # cut groups number at most one per chunk edge, and at most one per table row
    by_row = num_weights <= chunks
    spill_size = (num_weights if by_row else chunks) * dim
    out_like = grad.new_empty(1).expand(num_weights, dim)  # allocation stand-ins (_common)
    ws_like = grad.new_empty(1, dtype=torch.float32).expand(spill_size + 2 * num_weights + 1 + 3 * tokens)
    ints = (spill_size, num_weights, tokens)
    grid = (triton.cdiv(tokens, _GROUP_BLOCK),)
    group = [_L_group_rows.bind(STEP=step, BLOCK=_GROUP_BLOCK).prepare(grid, ints).planned for step in range(3)]
    block_d = min(triton.next_power_of_2(dim), _RUN_BLOCK_D)
    pad = padding_idx if 0 <= padding_idx < num_weights else -1
    sum_runs = _L_sum_runs.bind(SLOT_BY_ROW=by_row, CHUNK=_RUN_CHUNK, BLOCK_D=block_d).prepare(
        (chunks, triton.cdiv(dim, block_d)), (*ints, dim, grad.stride(0), grad.stride(1), pad)).planned
    write_spilled = None
    if chunks > 1:
        block_e = min(triton.next_power_of_2(chunks - 1), 16)
        write_spilled = _L_write_spilled.bind(SLOT_BY_ROW=by_row, CHUNK=_RUN_CHUNK, BLOCK_E=block_e,
                                              BLOCK_D=block_d).prepare(
            (triton.cdiv(chunks - 1, block_e), triton.cdiv(dim, block_d)), (*ints, dim, pad)).planned

    def plan(grad, idx):
        out = torch.zeros_like(out_like)
        ws = torch.zeros_like(ws_like)
        wi = ws.view(torch.int32)
        for launch in group:
            launch(wi, idx)
        sum_runs(out, ws, wi, grad)
        if write_spilled is not None:
            write_spilled(out, ws, wi)
        return out

    return plan


declare("embedding", {"embedding": embedding})
declare("embedding_dense_backward", {"embedding_dense_backward": embedding_dense_backward})
