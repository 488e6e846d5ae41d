"""embedding and its dense backward (atomic accumulation in fp32)."""
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


@triton.jit
def _claim_rows_kernel(owner, idx, T, BLOCK: tl.constexpr):
    # owner[row] = one token t with idx[t] == row; which one does not matter, only that
    # every token of the row then reads the same slot
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = t < T
    row = tl.load(idx + t, mask=mask, other=0).to(tl.int64)
    tl.store(owner + row, t.to(tl.int32), mask=mask)


@triton.jit
def _add_rows_kernel(acc, owner, idx, grad, T, D, sg_t, sg_d, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    # acc[owner[idx[t]]] += grad[t] in fp32: one accumulator row per distinct index
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tmask = t < T
    mask = tmask[:, None] & (d < D)[None, :]
    slot = tl.load(owner + tl.load(idx + t, mask=tmask, other=0).to(tl.int64), mask=tmask, other=0).to(tl.int64)
    g = tl.load(grad + t[:, None] * sg_t + d[None, :] * sg_d, mask=mask, other=0.0).to(tl.float32)
    tl.atomic_add(acc + slot[:, None] * D + d[None, :], g, mask=mask, sem="relaxed")


@triton.jit
def _write_rows_kernel(out, acc, owner, idx, T, D, padding_idx, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    # the owning token of each distinct index writes its row, rounded once
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tmask = t < T
    row = tl.load(idx + t, mask=tmask, other=0).to(tl.int64)
    mine = tmask & (tl.load(owner + row, mask=tmask, other=-1).to(tl.int64) == t) & (row != padding_idx)
    mask = mine[:, None] & (d < D)[None, :]
    v = tl.load(acc + t[:, None] * D + d[None, :], mask=mask, other=0.0)
    tl.store(out + row[:, None] * D + d[None, :], v.to(out.dtype.element_ty), mask=mask)


_L_claim_rows = launcher(_claim_rows_kernel)
_L_add_rows = launcher(_add_rows_kernel)
_L_write_rows = launcher(_write_rows_kernel)


@with_fallback("embedding_dense_backward")
def embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq):
    """Sum of grad_output rows per index; the padding row gets no gradient.

    Rows are added with fp32 atomics, so the summation order (and the last bits of fp32
    results) vary between runs; torch's CUDA kernel sorts instead and is deterministic.
    16-bit gradients of fewer tokens than table rows accumulate in one fp32 row per token,
    not per table row: the table's gradient is then mostly zeros, and an fp32 copy of all of
    it plus its cast back cost five times torch's time (H100, 32 tokens of a 128256x4096
    bf16 table: 1.77 ms against 0.35).
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
    dim = grad_output.shape[-1]
    tokens = idx.numel()
    grad = grad_output.reshape(tokens, dim)
    dev = grad_output.device
    if dtype == torch.float32 or tokens >= num_weights:
        # one fp32 row per table row: the gradient itself for fp32, and for 16-bit no more
        # memory than one row per token would take
        acc = torch.zeros((num_weights, dim), dtype=torch.float32, device=dev)
        take(acc, 1, 0, dim, 1, [(idx, dim, num_weights)],
             grad, (0, grad.stride(0), grad.stride(1)), mode=2, wrap=False)
        if 0 <= padding_idx < num_weights:
            acc[padding_idx] = 0  # every contribution to it came from padding positions
        return acc if dtype == torch.float32 else acc.to(dtype)
    if tokens >= 2**31:
        raise Unsupported  # token numbers are kept in int32
    out = torch.zeros((num_weights, dim), dtype=dtype, device=dev)
    if tokens == 0 or dim == 0:
        return out
    owner = torch.empty(num_weights, dtype=torch.int32, device=dev)  # only rows in idx are read
    acc = torch.zeros((tokens, dim), dtype=torch.float32, device=dev)
    block_d = min(triton.next_power_of_2(dim), 1024)
    block_t = max(1, min(4096 // block_d, triton.next_power_of_2(tokens)))
    grid = (triton.cdiv(tokens, block_t), triton.cdiv(dim, block_d))
    _L_claim_rows[(triton.cdiv(tokens, 1024),)](owner, idx, tokens, BLOCK=1024)
    _L_add_rows[grid](acc, owner, idx, grad, tokens, dim, grad.stride(0), grad.stride(1),
                      BLOCK_T=block_t, BLOCK_D=block_d)
    pad = padding_idx if 0 <= padding_idx < num_weights else -1
    _L_write_rows[grid](out, acc, owner, idx, tokens, dim, pad, BLOCK_T=block_t, BLOCK_D=block_d)
    return out


declare("embedding", {"embedding": embedding})
declare("embedding_dense_backward", {"embedding_dense_backward": embedding_dense_backward})
