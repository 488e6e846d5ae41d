"""The flash forward behind ``torch.nn.functional.scaled_dot_product_attention``.

``aten::_scaled_dot_product_flash_attention`` (CUDA) is what SDPA's dispatcher calls for
its flash backend. Handled here: fp16/bf16, causal or not (causal only for square
attention, where torch's flash backend and its math reference agree), GQA (fewer K/V heads),
no dropout, no debug mask, head_dim <= 256. Everything else runs torch's kernel. The
returned log-sum-exp is natural-log ``[B, H, Sq]`` fp32, so torch's own flash backward can
use it unchanged.

Under the interpreter vendor the CPU twin ``_scaled_dot_product_flash_attention_for_cpu``
is served by the same kernel, so the dispatch path is exercised in CPU CI. An overload is
declared only where torch has a native kernel for the vendor's dispatch key (the CUDA op
does not exist on CPU builds, and enabling it there would fail).
"""
from __future__ import annotations

import torch

from ..runtime import VENDOR, Unsupported, declare, on_vendor_device, with_fallback
from ._attention import attention_forward, default_scale
from ._common import kernel_dtype_ok

__all__ = ["sdpa_flash_forward"]


def _check(query, key, value, dropout_p, dtypes):
    if not on_vendor_device(query, key, value):
        raise Unsupported
    dt = query.dtype
    if dt not in dtypes or not kernel_dtype_ok(dt) or key.dtype != dt or value.dtype != dt:
        raise Unsupported
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4 or dropout_p != 0.0:
        raise Unsupported
    b, h, sq, d = query.shape
    bk, hk, sk, dk = key.shape
    if (bk != b or tuple(value.shape[:3]) != (bk, hk, sk) or dk != d or value.shape[3] != d
            or d > 256 or d == 0 or hk == 0 or h % hk != 0):
        raise Unsupported


def sdpa_flash_forward(query, key, value, is_causal=False, scale=None, out=None, lse=None):
    """Attention of ``[B, H, S, D]`` tensors (GQA when K/V have fewer heads); returns (out, lse)."""
    b, h, sq, d = query.shape
    sk, hk = key.shape[2], key.shape[1]
    if out is None:
        out = torch.empty((b, sq, h, d), dtype=query.dtype, device=query.device).transpose(1, 2)
    if lse is None:
        lse = torch.empty((b, h, sq), dtype=torch.float32, device=query.device)
    if is_causal and sq != sk:
        raise Unsupported
    if b == 0 or h == 0 or sq == 0:
        return out, lse
    if sk == 0:
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    qs, ks, vs, os_ = query.stride(), key.stride(), value.stride(), out.stride()
    attention_forward(
        query, key, value, out,
        q_strides=(qs[0], qs[2], qs[1], qs[3]), k_strides=(ks[0], ks[2], ks[1], ks[3]),
        v_strides=(vs[0], vs[2], vs[1], vs[3]), o_strides=(os_[0], os_[2], os_[1], os_[3]),
        batch=b, num_heads=h, num_kv_heads=hk, head_dim=d, max_q=sq, causal=is_causal,
        scale=default_scale(d, scale), seqlen_q=sq, seqlen_k=sk,
        lse=lse, lse_strides=lse.stride(), dense=(query, key, value, out),
    )
    return out, lse


@with_fallback("_scaled_dot_product_flash_attention")
def scaled_dot_product_flash_attention(query, key, value, dropout_p=0.0, is_causal=False,
                                       return_debug_mask=False, *, scale=None):
    """``aten::_scaled_dot_product_flash_attention`` forward (no dropout, no debug mask)."""
    _check(query, key, value, dropout_p, (torch.float16, torch.bfloat16))
    if return_debug_mask or (is_causal and query.shape[2] != key.shape[2]):
        raise Unsupported
    out, lse = sdpa_flash_forward(query, key, value, is_causal, scale)
    dev = query.device
    # no dropout: the RNG state is never read; shapes and dtypes follow torch's own kernel
    rng_state = torch.empty(2, dtype=torch.uint64, device=dev)
    unused = torch.empty((), dtype=torch.uint64, device=dev)
    debug = torch.empty(0, dtype=query.dtype, device=dev)
    return out, lse, None, None, query.shape[2], key.shape[2], rng_state, unused, debug


@with_fallback("_scaled_dot_product_flash_attention_for_cpu")
def scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p=0.0, is_causal=False, *,
                                               attn_mask=None, scale=None):
    """The CPU twin (interpreter vendor only): same kernel, torch's CPU output layout."""
    _check(query, key, value, dropout_p, (torch.float32, torch.float16, torch.bfloat16))
    if attn_mask is not None or (is_causal and query.shape[2] != key.shape[2]):
        raise Unsupported
    b, h, sq, d = query.shape
    out = torch.empty((b, h, sq, d), dtype=query.dtype, device=query.device)
    lse = torch.empty((b, sq, h), dtype=torch.float32, device=query.device).transpose(1, 2)
    return sdpa_flash_forward(query, key, value, is_causal, scale, out=out, lse=lse)


def _declarable(impls):
    """Only overloads torch itself implements for the vendor's dispatch key."""
    if VENDOR is None:
        return impls
    return {name: fn for name, fn in impls.items()
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", VENDOR.dispatch_key)}


_IMPLS = {"_scaled_dot_product_flash_attention": scaled_dot_product_flash_attention}
if VENDOR is not None and VENDOR.interpreter:
    _IMPLS["_scaled_dot_product_flash_attention_for_cpu"] = scaled_dot_product_flash_attention_for_cpu
declare("sdpa", _declarable(_IMPLS))
