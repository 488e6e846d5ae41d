"""flash_attn_varlen_func: FlashAttention-2's varlen forward (packed or paged K/V), as vLLM calls it."""
from __future__ import annotations

import torch

from ..runtime import Plans, on_vendor_device
from ._attention import attention_plan, default_scale, torch_attention
from ._common import kernel_dtype_ok, on_current_device
from .paged_attention import _layout_strides, decode

__all__ = ["flash_attn_varlen_func"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INDEX = (torch.int32, torch.int64)
_PLANS = Plans()  # call signature -> attention_plan's launch


def _kernel_ok(q, k, v, cu_q, cu_k, seqused_k, block_table, out) -> bool:
    if not on_vendor_device(q, k, v, cu_q, cu_k, seqused_k, block_table, out) or not on_current_device(q):
        return False
    if q.dtype not in _DTYPES or not kernel_dtype_ok(q.dtype) or k.dtype != q.dtype or v.dtype != q.dtype:
        return False
    if q.dim() != 3 or q.shape[-1] > 256 or k.shape[-1] != q.shape[-1] or v.shape[-1] != q.shape[-1]:
        return False
    if k.shape[-2] == 0 or q.shape[1] % k.shape[-2] != 0 or v.shape[-2] != k.shape[-2]:
        return False
    # the kernels index these with unit strides
    if any(t is not None and (t.dtype not in _INDEX or t.dim() != 1 or t.stride(0) != 1)
           for t in (cu_q, cu_k, seqused_k)):
        return False
    if block_table is not None:
        if block_table.dtype not in _INDEX or block_table.dim() != 2 or block_table.stride(1) != 1:
            return False
        return k.dim() == 4 and v.shape == k.shape and (seqused_k is not None or cu_k is not None)
    return k.dim() == 3 and v.shape[0] == k.shape[0] and cu_k is not None


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k=None, max_seqlen_k=None,
                           seqused_k=None, softmax_scale=None, causal=False, block_table=None, out=None):
    """FlashAttention-2 varlen forward; causal masks are aligned to the end of each key sequence."""
    head_dim = q.shape[-1]
    scale = default_scale(head_dim, softmax_scale)
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if not _kernel_ok(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, out):
        out.copy_(_torch_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, scale, causal, block_table))
        return out
    paged = block_table is not None
    if paged and int(max_seqlen_q) == 1:
        # decode-only batch: the split-KV decode kernel reads each K/V tile once per GQA
        # group and spreads long contexts over the GPU; causal changes nothing for one query
        lens = seqused_k if seqused_k is not None else cu_seqlens_k[1:] - cu_seqlens_k[:-1]
        decode(q, k, v, block_table, lens, scale, _layout_strides(k, v, "flash"), "flash", None, out,
               cu_q=cu_seqlens_q)
        return out
    # a plan per call signature: what a layer sends again at the next step with the same
    # batch shape skips the layout work (the lengths themselves are read by the kernel)
    signature = (q.shape, q.stride(), k.shape, k.stride(), v.stride(), out.shape, out.stride(),
                 cu_seqlens_q.shape[0], None if cu_seqlens_k is None else cu_seqlens_k.shape[0],
                 seqused_k is not None, None if block_table is None else (block_table.shape, block_table.stride()),
                 int(max_seqlen_q), bool(causal), scale, q.dtype, q.get_device())
    plan = _PLANS.get(signature)
    if plan is None:
        if paged:
            k_strides = (k.stride(0), k.stride(1), k.stride(2), k.stride(3))
            v_strides = (v.stride(0), v.stride(1), v.stride(2), v.stride(3))
        else:
            k_strides = (0, k.stride(0), k.stride(1), k.stride(2))
            v_strides = (0, v.stride(0), v.stride(1), v.stride(2))
        plan = _PLANS.keep(signature, attention_plan(
            q, k, v, out,
            q_strides=(0, q.stride(0), q.stride(1), q.stride(2)),
            k_strides=k_strides, v_strides=v_strides,
            o_strides=(0, out.stride(0), out.stride(1), out.stride(2)),
            batch=cu_seqlens_q.numel() - 1, num_heads=q.shape[1], num_kv_heads=k.shape[-2],
            head_dim=head_dim, max_q=int(max_seqlen_q), causal=causal, scale=scale,
            cu_q=cu_seqlens_q, cu_k=cu_seqlens_k, seqused_k=seqused_k,
            block_table=block_table, page_size=k.shape[1] if paged else 1,
        ))
    plan(q, k, v, out, None, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table)
    return out


def _torch_varlen(q, k, v, cu_q, cu_k, seqused_k, scale, causal, block_table):
    """Plain PyTorch path for inputs the kernel does not take (other devices, dtypes)."""
    cq = cu_q.tolist()
    used = seqused_k.tolist() if seqused_k is not None else None
    ck = cu_k.tolist() if cu_k is not None else None
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b in range(len(cq) - 1):
        if block_table is not None:
            n = used[b] if used is not None else ck[b + 1] - ck[b]
            page = k.shape[1]
            pages = block_table[b, : (n + page - 1) // page].long()
            kb = k[pages].flatten(0, 1)[:n]
            vb = v[pages].flatten(0, 1)[:n]
        else:
            n = used[b] if used is not None else ck[b + 1] - ck[b]
            kb, vb = k[ck[b]: ck[b] + n], v[ck[b]: ck[b] + n]
        out[cq[b]: cq[b + 1]] = torch_attention(q[cq[b]: cq[b + 1]], kb, vb, causal, scale)
    return out
