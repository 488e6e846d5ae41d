"""KV-cache writers: vLLM's ``reshape_and_cache`` (original layout) and ``reshape_and_cache_flash``.

Token ``t`` goes to ``block = slot // block_size``, ``offset = slot % block_size`` of
``slot = slot_mapping[t]``; a negative slot is padding and writes nothing. Both layouts use
one kernel: element (block, offset, head, d) of a cache at
``block*s_blk + offset*s_off + head*s_head + (d // X)*s_dhi + (d % X)*s_dlo``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import launcher, on_vendor_device
from ._common import cdiv, kernel_dtype_ok, next_pow2

__all__ = ["reshape_and_cache", "reshape_and_cache_flash"]


@triton.jit
def _cache_write_kernel(
    KEY, VAL, KC, VC, SLOT,
    num_heads,
    sk_t, sk_h, sk_d, sv_t, sv_h, sv_d,
    kc_blk, kc_off, kc_h, kc_dhi, kc_dlo,
    vc_blk, vc_off, vc_h, vc_dhi, vc_dlo,
    PAGE: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(SLOT + t).to(tl.int64)
    if slot < 0:
        return
    blk = slot // PAGE
    off = slot % PAGE
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h < num_heads)[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(KEY + t * sk_t + offs_h[:, None] * sk_h + (offs_d * sk_d)[None, :], mask=mask)
    v = tl.load(VAL + t * sv_t + offs_h[:, None] * sv_h + (offs_d * sv_d)[None, :], mask=mask)
    k_d = (offs_d // KX) * kc_dhi + (offs_d % KX) * kc_dlo
    v_d = (offs_d // VX) * vc_dhi + (offs_d % VX) * vc_dlo
    k_dst = blk * kc_blk + off * kc_off + offs_h[:, None] * kc_h + k_d[None, :]
    v_dst = blk * vc_blk + off * vc_off + offs_h[:, None] * vc_h + v_d[None, :]
    tl.store(KC + k_dst, k, mask=mask)
    tl.store(VC + v_dst, v, mask=mask)


def _check_dtype(kv_cache_dtype):
    if kv_cache_dtype != "auto":
        raise NotImplementedError(
            f"gemsops reshape_and_cache: kv_cache_dtype={kv_cache_dtype!r} (quantized fp8 caches) is not "
            "implemented; only 'auto' (cache dtype equal to the key/value dtype) is supported")


def _launch(key, value, key_cache, value_cache, slot_mapping, page, kc, vc, kx, vx):
    # vLLM pads key/value for CUDA graphs: the slot mapping's length is the token count
    t = min(key.shape[0], slot_mapping.shape[0])
    h, d = key.shape[1], key.shape[2]
    if t == 0 or h == 0 or d == 0:
        return
    block_d = next_pow2(d)
    block_h = min(next_pow2(h), max(1, 4096 // block_d))
    launcher(_cache_write_kernel)[(t, cdiv(h, block_h))](
        key, value, key_cache, value_cache, slot_mapping, h,
        key.stride(0), key.stride(1), key.stride(2), value.stride(0), value.stride(1), value.stride(2),
        *kc, *vc,
        PAGE=page, KX=kx, VX=vx, HEAD_DIM=d, BLOCK_H=block_h, BLOCK_D=block_d,
        num_warps=4 if block_h * block_d >= 1024 else 1,
    )


def _kernel_ok(key, value, key_cache, value_cache, slot_mapping) -> bool:
    if not on_vendor_device(key, value, key_cache, value_cache, slot_mapping):
        return False
    dt = key.dtype
    return (kernel_dtype_ok(dt) and dt.is_floating_point and value.dtype == dt and key_cache.dtype == dt
            and value_cache.dtype == dt and slot_mapping.dtype in (torch.int32, torch.int64)
            and slot_mapping.dim() == 1 and slot_mapping.stride(0) == 1)


def _as_3d(key, value, num_heads, head_dim):
    # vLLM sometimes hands [T, H*D] views; they share the cache's head layout
    if key.dim() == 2:
        key = key.unflatten(1, (num_heads, head_dim))
    if value.dim() == 2:
        value = value.unflatten(1, (num_heads, head_dim))
    return key, value


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype="auto",
                      k_scale=None, v_scale=None):
    """Write key/value ``[T, H, D]`` into vLLM's original paged layout (x-packed K)."""
    _check_dtype(kv_cache_dtype)
    nb, h, dx, page, x = key_cache.shape
    d = dx * x
    key, value = _as_3d(key, value, h, d)
    if tuple(value_cache.shape) != (nb, h, d, page) or key.shape[1:] != (h, d) or value.shape != key.shape:
        raise ValueError(f"reshape_and_cache: key {tuple(key.shape)} / caches {tuple(key_cache.shape)}, "
                         f"{tuple(value_cache.shape)} do not match the vLLM layout")
    if not _kernel_ok(key, value, key_cache, value_cache, slot_mapping):
        n = min(key.shape[0], slot_mapping.shape[0])
        key, value, slot_mapping = key[:n], value[:n], slot_mapping[:n]
        valid = slot_mapping >= 0
        slots = slot_mapping[valid].long()
        blk, off = slots // page, slots % page
        key_cache[blk, :, :, off, :] = key[valid].reshape(-1, h, dx, x).to(key_cache.dtype)
        value_cache[blk, :, :, off] = value[valid].to(value_cache.dtype)
        return
    ks, vs = key_cache.stride(), value_cache.stride()
    _launch(key, value, key_cache, value_cache, slot_mapping, page,
            (ks[0], ks[3], ks[1], ks[2], ks[4]), (vs[0], vs[3], vs[1], vs[2], 0), x, 1)


def reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype="auto",
                            k_scale=None, v_scale=None):
    """Write key/value ``[T, H, D]`` into flash-layout caches ``[num_blocks, block_size, H, D]`` (any strides)."""
    _check_dtype(kv_cache_dtype)
    nb, page, h, d = key_cache.shape
    key, value = _as_3d(key, value, h, d)
    if value_cache.shape != key_cache.shape or key.shape[1:] != (h, d) or value.shape != key.shape:
        raise ValueError(f"reshape_and_cache_flash: key {tuple(key.shape)} / caches {tuple(key_cache.shape)}, "
                         f"{tuple(value_cache.shape)} do not match the flash layout")
    if not _kernel_ok(key, value, key_cache, value_cache, slot_mapping):
        n = min(key.shape[0], slot_mapping.shape[0])
        key, value, slot_mapping = key[:n], value[:n], slot_mapping[:n]
        valid = slot_mapping >= 0
        slots = slot_mapping[valid].long()
        blk, off = slots // page, slots % page
        key_cache[blk, off] = key[valid].to(key_cache.dtype)
        value_cache[blk, off] = value[valid].to(value_cache.dtype)
        return
    ks, vs = key_cache.stride(), value_cache.stride()
    _launch(key, value, key_cache, value_cache, slot_mapping, page,
            (ks[0], ks[1], ks[2], ks[3], 0), (vs[0], vs[1], vs[2], vs[3], 0), 1, 1)
