"""Plain float64 PyTorch references for the attention tests (gather, then softmax(QK^T)V)."""
from __future__ import annotations

import math

import torch


def ref_attention(q, k, v, *, causal=False, scale=None, alibi=None):
    """q [Sq, H, D], k/v [Sk, Hkv, D] -> [Sq, H, D] float64; causal aligned bottom-right.

    Rows that see no key are zeros; ``alibi`` [H] adds ``slope * (j - (Sk - 1))``.
    """
    sq, h, d = q.shape
    sk, hkv = k.shape[0], k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    out = torch.zeros(sq, h, d, dtype=torch.float64, device=q.device)
    for head in range(h):
        kh = head // (h // hkv)
        s = (q[:, head] @ k[:, kh].T) * scale  # [Sq, Sk]
        if alibi is not None:
            s = s + alibi[head].double() * (torch.arange(sk, device=q.device) - (sk - 1)).double()[None, :]
        for i in range(sq):
            n_visible = min(sk, i + (sk - sq) + 1) if causal else sk
            if n_visible <= 0:
                continue
            p = torch.softmax(s[i, :n_visible], 0)
            out[i, head] = p @ v[:n_visible, kh]
    return out


def ref_lse(q, k, *, causal=False, scale=None):
    """Natural-log log-sum-exp of the scaled scores, [H, Sq] float64."""
    sq, h, d = q.shape
    sk, hkv = k.shape[0], k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.full((h, sq), float("-inf"), dtype=torch.float64, device=q.device)
    for head in range(h):
        kh = head // (h // hkv)
        s = (q[:, head].double() @ k[:, kh].double().T) * scale
        for i in range(sq):
            n = min(sk, i + (sk - sq) + 1) if causal else sk
            if n > 0:
                out[head, i] = torch.logsumexp(s[i, :n], 0)
    return out


def gather_flash(cache, block_row, n):
    """Token j of a flash-layout cache [nb, bs, H, D] (any strides) for j < n, token by token."""
    bs = cache.shape[1]
    rows = [cache[int(block_row[j // bs]), j % bs] for j in range(n)]
    return torch.stack(rows) if rows else cache.new_zeros((0,) + tuple(cache.shape[2:]))


def gather_vllm_key(cache, block_row, n):
    """vLLM original key cache [nb, H, D//x, bs, x] -> [n, H, D]."""
    nb, h, dx, bs, x = cache.shape
    rows = [cache[int(block_row[j // bs]), :, :, j % bs, :].reshape(h, dx * x) for j in range(n)]
    return torch.stack(rows) if rows else cache.new_zeros((0, h, dx * x))


def gather_vllm_value(cache, block_row, n):
    """vLLM original value cache [nb, H, D, bs] -> [n, H, D]."""
    bs = cache.shape[3]
    rows = [cache[int(block_row[j // bs]), :, :, j % bs] for j in range(n)]
    return torch.stack(rows) if rows else cache.new_zeros((0, cache.shape[1], cache.shape[2]))
