"""The fused forwards behind ``torch.nn.functional.scaled_dot_product_attention``.

SDPA's dispatcher calls one of several aten entry points, chosen per call by torch's
backend priority: on Hopper with torch 2.11, cuDNN's ahead of flash for fp16/bf16 (also
with a mask), memory-efficient for fp32, flash only when cuDNN is off or refuses. Gems serves
the forward of each with one kernel, and leaves every backward to torch:

- ``_scaled_dot_product_flash_attention``: fp16/bf16, GQA (fewer K/V heads). Its
  log-sum-exp (natural log, ``[B, H, Sq]`` fp32) is what torch's flash backward reads.
- ``_scaled_dot_product_cudnn_attention``: fp16/bf16, GQA. Log-sum-exp ``[B, H, Sq, 1]``
  fp32 when ``compute_log_sumexp`` (torch asks for it when a backward will follow), else
  undefined, as torch's kernel returns it.
- ``_scaled_dot_product_efficient_attention``: fp16/bf16/fp32, equal head counts (torch's
  kernel has no GQA). Log-sum-exp ``[B, H, Sq rounded up to 32]`` fp32, the padding +inf,
  when ``compute_log_sumexp``, else ``[B, H, 0]``.

Where no gradient is recorded (inference), ``aten::scaled_dot_product_attention`` itself is
served in one call (``scaled_dot_product_attention`` below): torch's own backend choice is
asked first, so ``sdpa_kernel()`` and the backend switches still decide, and a boolean mask
goes to the kernel as it is instead of through the three ops that convert it. Calls that
record a gradient go through torch's composite to the entry points, whose backward torch
derives from gems' outputs.

Masks: torch turns a boolean ``attn_mask`` into an additive float one (-inf where False)
before it calls these entry points; cuDNN's and efficient's ``attn_bias`` and the CPU twin's
``attn_mask`` are read as they come, broadcast to [B, H, Sq, Sk] through zero strides (a
padding mask [B, 1, 1, Sk] is read once per row, never expanded in memory). A row that a
-inf bias masks out entirely gives zeros, as torch's fused kernels do, and a log-sum-exp of
+inf (torch's backward reads exp(score - lse) there: zeros, where -inf would give NaN).

Common limits: no dropout, no debug mask, equal Q/K/V head dims <= 256, causal only for
square attention (torch's fused kernels align a non-square causal mask top-left, the kernel
bottom-right), masks of fp16/bf16/fp32 with at most 4 dims, and no decode steps (up to 16
query rows over 512 keys or more) but masked ones of 4 rows or more (``_check_decode_like``).
Everything else runs torch's kernel.

Outputs that only matter with dropout or for nested inputs are placeholders with torch's
own shapes, dtypes and devices, never read by the backward when ``dropout_p == 0``:
flash's ``rng_state`` (uint64 [2]), ``unused`` (uint64 0-d) and ``debug_attn_mask`` (empty);
cuDNN's ``philox_seed``/``philox_offset`` (int64 0-d); efficient's ``philox_seed``/
``philox_offset`` (int64 0-d on the CPU, where torch's kernel puts them too).
``cum_seq_q``/``cum_seq_k`` are undefined (None), as from torch's dense kernels. The output
has the memory layout torch's kernel gives it, so views taken downstream keep working.

Under the interpreter vendor the CPU twin ``_scaled_dot_product_flash_attention_for_cpu``
is served by the same kernel, so the dispatch path is exercised in CPU CI. An overload is
declared only where torch has a native kernel for the vendor's dispatch key (the CUDA ops
do not exist on CPU builds, and enabling them there would fail).
"""
from __future__ import annotations

import torch

from ..runtime import VENDOR, Plans, Unsupported, declare, on_vendor_device, plain_tensors, records_grad, with_fallback
from ._attention import attention_plan, default_scale
from ._common import kernel_dtype_ok, on_current_device

__all__ = ["sdpa_flash_forward"]

_HALF = (torch.float16, torch.bfloat16)
# torch's memory-efficient kernel pads its log-sum-exp rows to this multiple
_EFFICIENT_LSE_ALIGN = 32


def _check(query, key, value, dropout_p, dtypes, *, gqa=True):
    if not on_vendor_device(query, key, value):
        raise Unsupported
    dt = query.dtype
    if dt not in dtypes or not kernel_dtype_ok(dt) or key.dtype != dt or value.dtype != dt:
        raise Unsupported
    if dropout_p != 0.0 or query.is_nested or key.is_nested or value.is_nested:
        raise Unsupported
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise Unsupported
    b, h, sq, d = query.shape
    bk, hk, sk, dk = key.shape
    if (bk != b or tuple(value.shape[:3]) != (bk, hk, sk) or dk != d or value.shape[3] != d
            or d > 256 or d == 0 or hk == 0 or h % hk != 0 or (not gqa and hk != h)):
        raise Unsupported


def _check_causal(query, key, is_causal):
    if is_causal and query.shape[2] != key.shape[2]:
        raise Unsupported


# decode-like calls: at most this many query rows over at least this many keys
_FEW_QUERIES, _MANY_KEYS = 16, 512
# ... which gems serves only with a mask and at least this many rows (see _check_decode_like)
_MASKED_ROWS = 4


def _check_decode_like(query, key, bias):
    """Decode steps go to torch's kernel, except masked ones of several query rows.

    The kernel gives each program one query block of one head and walks every key in it,
    so a step with one query row has B x H programs, each as long as the context; torch's
    decode kernels split the keys. H100, bf16, D128, H32/8, one row per head, device time
    us torch / gems: no mask, B1 with 4096 keys 10.1 / 35.0, B8 4096 51.4 / 73.9, B1 32768
    51.4 / 261.9; a [B, 1, 1, L] padding mask, B1 4096 16.5 / 49.3, B8 16384 188.4 / 338.4,
    B32 2048 100.1 / 194.7. With a mask and 4 query rows per head (a GQA group's heads as
    rows, or a few speculative tokens), torch's cuDNN path is the slow one: 8 heads, 4096
    keys 87.0 / 50.2, 32768 keys 629.3 / 331.9.
    """
    sq = query.shape[2]
    if sq <= _FEW_QUERIES and key.shape[2] >= _MANY_KEYS and (bias is None or sq < _MASKED_ROWS):
        raise Unsupported


_BIAS_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _broadcast_bias(bias, query, key, dtypes=_BIAS_DTYPES):
    """``bias`` as a [B, H, Sq, Sk] view (zero strides where it broadcasts), or Unsupported
    for what the kernel does not read (torch then reports its own errors)."""
    if bias is None:
        return None
    if (bias.dtype not in dtypes or not kernel_dtype_ok(bias.dtype) or bias.dim() > 4 or bias.is_nested
            or not on_vendor_device(bias) or bias.get_device() != query.get_device()):
        raise Unsupported
    b, h, sq, _ = query.shape
    try:
        return bias.expand(b, h, sq, key.shape[2])
    except RuntimeError:
        raise Unsupported from None


def _like_query(query):
    """An output for ``query``'s shape in its dimension order ([B,H,S,D] or [B,S,H,D] storage),
    the way torch's flash and cuDNN kernels allocate theirs."""
    shape, stride = query.shape, query.stride()
    strides = _OUT_STRIDES.get((shape, stride))
    if strides is None:
        order = sorted(range(3), key=lambda i: -stride[i]) + [3]
        strides = [0] * 4
        step = 1
        for i in reversed(order):
            strides[i] = step
            step *= shape[i]
        if len(_OUT_STRIDES) >= 1024:
            _OUT_STRIDES.clear()
        # True: query itself is dense in that order, so empty_like keeps exactly these strides
        # and skips parsing shape, strides, dtype and device (a few us per call on H100 hosts)
        strides = _OUT_STRIDES[(shape, stride)] = True if tuple(strides) == stride else tuple(strides)
    if strides is True:
        return torch.empty_like(query)
    return torch.empty_strided(shape, strides, dtype=query.dtype, device=query.device)


_OUT_STRIDES: dict = {}  # (query shape, strides) -> the output's strides, or True: query's own


def _placeholder(dtype, query, shape=()):
    """A new tensor on ``query``'s device for the RNG state and debug slots torch's kernels
    return (never read without dropout). ``empty_like`` of a kept tensor costs about half of
    ``torch.empty(shape, dtype=..., device=...)`` on an H100 host."""
    key = (query.get_device(), dtype, shape)
    proto = _PLACEHOLDERS.get(key)
    if proto is None:
        proto = _PLACEHOLDERS[key] = torch.empty(shape, dtype=dtype, device=query.device)
    return torch.empty_like(proto)


_PLACEHOLDERS: dict = {}  # (device index, dtype, shape) -> a tensor to allocate like


def sdpa_flash_forward(query, key, value, is_causal=False, scale=None, out=None, lse=None, bias=None):
    """Attention of ``[B, H, S, D]`` tensors (GQA when K/V have fewer heads); returns (out, lse).

    ``out`` and ``lse`` (``[B, H, Sq]`` fp32, any strides) may be given to write into.
    ``bias``: an additive float bias broadcastable to ``[B, H, Sq, Sk]`` (SDPA's float ``attn_mask``).
    """
    b, h, sq, d = query.shape
    if out is None:
        out = torch.empty((b, sq, h, d), dtype=query.dtype, device=query.device).transpose(1, 2)
    if lse is None:
        lse = torch.empty((b, h, sq), dtype=torch.float32, device=query.device)
    _forward(query, key, value, is_causal, scale, out, lse, _broadcast_bias(bias, query, key))
    return out, lse


def _forward(query, key, value, is_causal, scale, out, lse, bias=None):
    """``sdpa_flash_forward`` into ``out``; ``lse`` None: no log-sum-exp is stored; ``bias``
    None or a [B, H, Sq, Sk] view (``_broadcast_bias``)."""
    b, h, sq, d = query.shape
    sk, hk = key.shape[2], key.shape[1]
    if is_causal and sq != sk:
        raise Unsupported
    if not on_current_device(query):
        raise Unsupported
    if b == 0 or h == 0 or sq == 0:
        return
    if sk == 0:
        out.zero_()
        if lse is not None:
            lse.fill_(float("-inf"))
        return
    bias_layout = None if bias is None else (bias.stride(), bias.dtype)
    # a model sends a few signatures per layer shape: everything but the addresses is planned
    signature = (query.shape, query.stride(), key.shape, key.stride(), value.stride(), out.stride(),
                 None if lse is None else lse.stride(), bool(is_causal), scale, query.dtype, query.get_device(),
                 bias_layout)
    plan = _PLANS.get(signature)
    if plan is None:
        qs, ks, vs, os_ = query.stride(), key.stride(), value.stride(), out.stride()
        plan = _PLANS.keep(signature, attention_plan(
            query, key, value, out,
            q_strides=(qs[0], qs[2], qs[1], qs[3]), k_strides=(ks[0], ks[2], ks[1], ks[3]),
            v_strides=(vs[0], vs[2], vs[1], vs[3]), o_strides=(os_[0], os_[2], os_[1], os_[3]),
            batch=b, num_heads=h, num_kv_heads=hk, head_dim=d, max_q=sq, causal=is_causal,
            scale=default_scale(d, scale), seqlen_q=sq, seqlen_k=sk,
            lse=lse, lse_strides=(0, 0, 0) if lse is None else lse.stride(), dense=(query, key, value, out),
            bias=bias, bias_strides=(0, 0, 0, 0) if bias is None else bias.stride(),
        ))
    plan(query, key, value, out, lse, None, None, None, None, bias)


_PLANS = Plans()  # call signature -> attention_plan's launch


@with_fallback("_scaled_dot_product_flash_attention")
def scaled_dot_product_flash_attention(query, key, value, dropout_p=0.0, is_causal=False,
                                       return_debug_mask=False, *, scale=None):
    """``aten::_scaled_dot_product_flash_attention`` forward (no dropout, no debug mask)."""
    _check(query, key, value, dropout_p, _HALF)
    _check_causal(query, key, is_causal)
    _check_decode_like(query, key, None)
    if return_debug_mask:
        raise Unsupported
    out, lse = sdpa_flash_forward(query, key, value, is_causal, scale, out=_like_query(query))
    return out, lse, None, None, query.shape[2], key.shape[2], _placeholder(torch.uint64, query, (2,)), \
        _placeholder(torch.uint64, query), _placeholder(query.dtype, query, (0,))


@with_fallback("_scaled_dot_product_cudnn_attention")
def scaled_dot_product_cudnn_attention(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0,
                                       is_causal=False, return_debug_mask=False, *, scale=None):
    """``aten::_scaled_dot_product_cudnn_attention`` forward (no dropout or debug mask)."""
    _check(query, key, value, dropout_p, _HALF)
    _check_causal(query, key, is_causal)
    if return_debug_mask:
        raise Unsupported
    bias = _broadcast_bias(attn_bias, query, key)
    _check_decode_like(query, key, bias)
    b, h, sq, _ = query.shape
    lse = torch.empty((b, h, sq, 1), dtype=torch.float32, device=query.device) if compute_log_sumexp else None
    out = _like_query(query)
    _forward(query, key, value, is_causal, scale, out, lse[..., 0] if lse is not None else None, bias)
    return out, lse, None, None, sq, key.shape[2], _placeholder(torch.int64, query), \
        _placeholder(torch.int64, query), None


@with_fallback("_scaled_dot_product_efficient_attention")
def scaled_dot_product_efficient_attention(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0,
                                           is_causal=False, *, scale=None):
    """``aten::_scaled_dot_product_efficient_attention`` forward (no dropout)."""
    _check(query, key, value, dropout_p, (torch.float32, *_HALF), gqa=False)
    _check_causal(query, key, is_causal)
    bias = _broadcast_bias(attn_bias, query, key)
    _check_decode_like(query, key, bias)
    b, h, sq, d = query.shape
    dev = query.device
    out = torch.empty((b, sq, h, d), dtype=query.dtype, device=dev).transpose(1, 2)
    if compute_log_sumexp:
        rows = -(-sq // _EFFICIENT_LSE_ALIGN) * _EFFICIENT_LSE_ALIGN
        lse = torch.full((b, h, rows), float("inf"), dtype=torch.float32, device=dev)
    else:
        lse = torch.empty((b, h, 0), dtype=torch.float32, device=dev)
    _forward(query, key, value, is_causal, scale, out, lse[:, :, :sq] if compute_log_sumexp else None, bias)
    seed = torch.empty((), dtype=torch.int64)
    offset = torch.empty((), dtype=torch.int64)
    return out, lse, seed, offset


@with_fallback("_scaled_dot_product_flash_attention_for_cpu")
def scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p=0.0, is_causal=False, *,
                                               attn_mask=None, scale=None):
    """The CPU twin (interpreter vendor only): same kernel, torch's CPU output layout."""
    _check(query, key, value, dropout_p, (torch.float32, *_HALF))
    _check_causal(query, key, is_causal)
    bias = _broadcast_bias(attn_mask, query, key)
    _check_decode_like(query, key, bias)
    b, h, sq, d = query.shape
    out = torch.empty((b, h, sq, d), dtype=query.dtype, device=query.device)
    lse = torch.empty((b, sq, h), dtype=torch.float32, device=query.device).transpose(1, 2)
    _forward(query, key, value, is_causal, scale, out, lse, bias)
    return out, lse


# torch's SDPBackend numbers, as ``torch._fused_sdp_choice`` returns them
_FLASH, _EFFICIENT, _CUDNN = 1, 2, 3


@with_fallback("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 *, enable_gqa=False):
    """``F.scaled_dot_product_attention`` in one host call where no gradient is recorded.

    Torch's composite turns a boolean mask into a float one (three more ops, each a gems
    call when enabled) and then calls the fused entry point its backend choice names;
    on an H100 host one masked decode-step SDPA cost 80 us native and 237 us through gems
    that way. Here the choice is asked the same way (``torch._fused_sdp_choice``, so
    ``sdpa_kernel()`` and the backend switches still decide), the boolean mask goes to the
    kernel as it is, and the output has that entry point's layout. Calls that record a
    gradient, take dropout or pick the math backend go through the composite (whose
    fused forwards gems still serves).
    """
    if attn_mask is not None and is_causal:
        raise Unsupported  # torch's error
    if records_grad(query, key, value, attn_mask):
        raise Unsupported  # the composite records the backward of the entry point it calls
    if not plain_tensors(query, key, value, attn_mask):
        raise Unsupported
    _check(query, key, value, dropout_p, (torch.float32, *_HALF))
    if key.shape[1] != query.shape[1] and not enable_gqa:
        raise Unsupported  # torch's error
    try:
        choice = torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                         enable_gqa=enable_gqa)
    except (RuntimeError, TypeError, ValueError):
        # torch's own error for bad inputs comes from the composite; a torch whose choice
        # function takes other arguments gets the composite too, never a failed call
        raise Unsupported from None
    if choice == _EFFICIENT:
        if key.shape[1] != query.shape[1]:
            raise Unsupported
    elif choice not in (_FLASH, _CUDNN):
        raise Unsupported  # math: torch's composite (sdpa_kernel() and the backend switches decide)
    elif query.dtype not in _HALF and not VENDOR.interpreter:
        raise Unsupported  # (the CPU flash kernel takes fp32; CUDA's flash and cuDNN do not)
    _check_causal(query, key, is_causal)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype not in (torch.bool, query.dtype):
            raise Unsupported
        bias = _broadcast_bias(attn_mask, query, key, (torch.bool, *_BIAS_DTYPES))
    _check_decode_like(query, key, bias)
    # the output in the layout of the entry point torch would have called
    b, h, sq, d = query.shape
    if VENDOR.interpreter:
        out = torch.empty((b, h, sq, d), dtype=query.dtype, device=query.device)
    elif choice == _EFFICIENT:
        out = torch.empty((b, sq, h, d), dtype=query.dtype, device=query.device).transpose(1, 2)
    else:
        out = _like_query(query)
    _forward(query, key, value, is_causal, scale, out, None, bias)
    return out


def _declarable(impls):
    """Only overloads torch itself implements for the vendor's dispatch key."""
    if VENDOR is None:
        return impls
    return {name: fn for name, fn in impls.items()
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", VENDOR.dispatch_key)}


_IMPLS = {
    "_scaled_dot_product_flash_attention": scaled_dot_product_flash_attention,
    "_scaled_dot_product_cudnn_attention": scaled_dot_product_cudnn_attention,
    "_scaled_dot_product_efficient_attention": scaled_dot_product_efficient_attention,
}
if VENDOR is not None and VENDOR.interpreter:
    _IMPLS["_scaled_dot_product_flash_attention_for_cpu"] = scaled_dot_product_flash_attention_for_cpu
declare("sdpa", _declarable(_IMPLS))
# the composite op itself, above autograd (and at the backend key that inference tensors reach)
declare("sdpa", {"scaled_dot_product_attention": scaled_dot_product_attention}, autograd=True)
