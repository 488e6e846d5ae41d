"""embedding and its dense backward (atomic accumulation in fp32)."""
import torch
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Plans, Unsupported, declare, on_device, on_vendor_device, with_fallback
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


@with_fallback("embedding_dense_backward")
def embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq):
    """Sum of grad_output rows per index; the padding row gets no gradient.

    Rows are added with atomics in fp32, so the summation order (and the last bits of
    fp32 results) vary between runs; torch's CUDA kernel sorts instead and is deterministic.
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
    grad = grad_output.reshape(idx.numel(), dim)
    acc = torch.zeros((num_weights, dim), dtype=torch.float32, device=grad_output.device)
    take(acc, 1, 0, dim, 1, [(idx, dim, num_weights)],
         grad, (0, grad.stride(0), grad.stride(1)), mode=2, wrap=False)
    if 0 <= padding_idx < num_weights:
        acc[padding_idx] = 0  # every contribution to it came from padding positions
    return acc if dtype == torch.float32 else acc.to(dtype)


declare("embedding", {"embedding": embedding})
declare("embedding_dense_backward", {"embedding_dense_backward": embedding_dense_backward})
