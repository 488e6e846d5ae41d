"""flash_attn_varlen_func against float64 softmax(QK^T)V per sequence (FlashAttention-2 semantics)."""
import importlib

import pytest
import torch

from gemsops.ops import flash_attn_varlen_func
from tests.ops.attention_ref import gather_flash, ref_attention
from tests.util import DEVICE, ON_GPU, assert_close, randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cu(lens, dtype=torch.int32):
    c = [0]
    for n in lens:
        c.append(c[-1] + n)
    return torch.tensor(c, dtype=dtype, device=DEVICE)


def _check(out, ref, dtype):
    assert not torch.isnan(out).any()
    assert_close(out, ref.to(dtype), dtype=dtype, scale=2.0 if dtype == torch.bfloat16 else 4.0)


def _packed_ref(q, k, v, q_lens, k_lens, causal, scale=None):
    ref = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    qo = ko = 0
    for lq, lk in zip(q_lens, k_lens):
        ref[qo:qo + lq] = ref_attention(q[qo:qo + lq], k[ko:ko + lk], v[ko:ko + lk], causal=causal, scale=scale)
        qo, ko = qo + lq, ko + lk
    return ref


# (hq, hkv, d, q_lens, k_lens): q_len == k_len, chunked prefill (q shorter than k), q longer
# than k (the first rows of a causal sequence see nothing: zeros), a decode row (q_len 1)
PACKED = [
    (2, 2, 16, [5, 19], [5, 19]),
    (4, 1, 24, [3, 1, 6], [20, 9, 6]),
    (8, 2, 32, [7, 2], [4, 17]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", PACKED)
def test_packed(dtype, causal, case):
    hq, hkv, d, q_lens, k_lens = case
    torch.manual_seed(0)
    q = randn(sum(q_lens), hq, d, dtype=dtype)
    k, v = randn(sum(k_lens), hkv, d, dtype=dtype), randn(sum(k_lens), hkv, d, dtype=dtype)
    out = flash_attn_varlen_func(q, k, v, _cu(q_lens), max(q_lens), _cu(k_lens), max(k_lens), causal=causal)
    _check(out, _packed_ref(q, k, v, q_lens, k_lens, causal), dtype)


def test_strided_inputs_scale_and_out():
    # q/k/v as views of one fused qkv tensor; explicit scale; out= written in place
    lens = [6, 11]
    qkv = randn(sum(lens), 3, 2, 16)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    out = torch.full((sum(lens), 2, 16), float("nan"), device=DEVICE)
    res = flash_attn_varlen_func(q, k, v, _cu(lens), 11, _cu(lens), 11, softmax_scale=0.2, causal=True, out=out)
    assert res.data_ptr() == out.data_ptr()
    _check(out, _packed_ref(q, k, v, lens, lens, True, scale=0.2), torch.float32)


def _force_config(monkeypatch, **cfg):
    """Every attention tuner answers ``cfg``; plans kept by earlier calls are set aside."""
    from gemsops.ops import _attention
    varlen_ops = importlib.import_module("gemsops.ops.flash_attn_varlen")
    from gemsops.runtime import Plans
    cfg = dict(dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2), **cfg)
    for tuner in (_attention._fwd_tuner, _attention._fwd_tuner_fp32):
        monkeypatch.setattr(tuner, "choose", lambda key, run: cfg)
    monkeypatch.setattr(varlen_ops, "_PLANS", Plans())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 2])
def test_descriptor_config(monkeypatch, dtype, causal, chunk):
    # configs with DESC read packed q/k/v through [total, H, D] tensor descriptors: a tile
    # that runs past its sequence reads the next one's rows, which must change nothing; the
    # values past the last sequence are inf, so a probability-0 key that still reached the
    # sums would turn its row into NaN (0 * inf)
    _force_config(monkeypatch, DESC=True, HEAD_CHUNK=chunk)
    hq, hkv, d = 4, 2, 16
    q_lens, k_lens = [5, 19, 1, 33], [20, 19, 9, 33]
    torch.manual_seed(0)
    q = randn(sum(q_lens), hq, d, dtype=dtype)
    k = randn(sum(k_lens) + 16, hkv, d, dtype=dtype)
    v = randn(sum(k_lens) + 16, hkv, d, dtype=dtype)
    v[sum(k_lens):] = float("inf")
    out = flash_attn_varlen_func(q, k, v, _cu(q_lens), max(q_lens), _cu(k_lens), max(k_lens), causal=causal)
    _check(out, _packed_ref(q, k, v, q_lens, k_lens, causal), dtype)


def test_descriptor_config_with_strided_views_and_odd_heads(monkeypatch):
    # q/k/v as slices of one fused qkv tensor (16-byte aligned strides: descriptors), then a
    # head size of 24 (not a power of 2: the pointer kernel with the same tiles)
    _force_config(monkeypatch, DESC=True)
    lens = [7, 12]
    for d in (16, 24):
        qkv = randn(sum(lens), 3, 2, d)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        out = flash_attn_varlen_func(q, k, v, _cu(lens), 12, _cu(lens), 12, causal=True)
        _check(out, _packed_ref(q, k, v, lens, lens, True), torch.float32)


@pytest.mark.parametrize("desc", [False, True])
def test_plan_serves_other_lengths_of_one_signature(monkeypatch, desc):
    # one plan per call signature (shapes, strides, max lengths): the next batch with the
    # same totals but other sequence lengths, in new tensors, is read from its own
    # cu_seqlens; the tuner is asked once
    from gemsops.ops import _attention
    _force_config(monkeypatch, DESC=desc)
    cfg = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, DESC=desc)
    asked = []
    monkeypatch.setattr(_attention._fwd_tuner_fp32, "choose", lambda key, run: asked.append(key) or cfg)
    torch.manual_seed(0)
    for q_lens, k_lens in (([5, 19, 8], [9, 19, 12]), ([19, 5, 8], [19, 10, 11]), ([8, 19, 5], [8, 19, 13])):
        q = randn(sum(q_lens), 4, 16)
        k, v = randn(sum(k_lens), 2, 16), randn(sum(k_lens), 2, 16)
        out = flash_attn_varlen_func(q, k, v, _cu(q_lens), 19, _cu(k_lens), 19, causal=True)
        _check(out, _packed_ref(q, k, v, q_lens, k_lens, True), torch.float32)
    assert len(asked) == 1


def _paged(lens, hkv, d, bs, dtype, hnd=False):
    torch.manual_seed(1)
    max_blocks = max((n + bs - 1) // bs for n in lens)
    nb = len(lens) * max_blocks + 2
    if hnd:
        kc = randn(nb, hkv, bs, d, dtype=dtype).permute(0, 2, 1, 3)
        vc = randn(nb, hkv, bs, d, dtype=dtype).permute(0, 2, 1, 3)
    else:
        kc, vc = randn(nb, bs, hkv, d, dtype=dtype), randn(nb, bs, hkv, d, dtype=dtype)
    bt = torch.randperm(nb)[: len(lens) * max_blocks].view(len(lens), max_blocks).to(torch.int32).to(DEVICE)
    return kc, vc, bt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hnd", [False, True])
def test_paged_mixed_prefill_decode(dtype, hnd):
    # a decode row, a chunked-prefill row and a fresh prefill in one batch, paged K/V
    hq, hkv, d, bs = 4, 2, 16, 8
    q_lens, k_lens = [1, 4, 9], [21, 12, 9]
    kc, vc, bt = _paged(k_lens, hkv, d, bs, dtype, hnd)
    q = randn(sum(q_lens), hq, d, dtype=dtype)
    seqused = torch.tensor(k_lens, dtype=torch.int32, device=DEVICE)
    out = flash_attn_varlen_func(q, kc, vc, _cu(q_lens), max(q_lens), None, max(k_lens), seqused_k=seqused,
                                 causal=True, block_table=bt)
    ref = torch.zeros(q.shape, dtype=torch.float64, device=DEVICE)
    qo = 0
    for b, (lq, lk) in enumerate(zip(q_lens, k_lens)):
        ref[qo:qo + lq] = ref_attention(q[qo:qo + lq], gather_flash(kc, bt[b], lk), gather_flash(vc, bt[b], lk),
                                        causal=True)
        qo += lq
    _check(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_seqused", [False, True])
def test_paged_decode_only_batch(dtype, use_seqused):
    # max_seqlen_q == 1 takes the split-KV decode kernel; a sequence without a query
    # (q_len 0) must neither shift the rows nor be written
    hq, hkv, d, bs = 8, 2, 16, 8
    q_lens, k_lens = [1, 0, 1, 1], [37, 5, 1, 16]
    kc, vc, bt = _paged(k_lens, hkv, d, bs, dtype)
    q = randn(sum(q_lens) + 1, hq, d, dtype=dtype)  # one padding row past cu_seqlens_q[-1]
    out = torch.full(q.shape, 7.0, dtype=dtype, device=DEVICE)
    kw = dict(seqused_k=torch.tensor(k_lens, dtype=torch.int32, device=DEVICE)) if use_seqused else {}
    flash_attn_varlen_func(q, kc, vc, _cu(q_lens), 1, None if use_seqused else _cu(k_lens), max(k_lens),
                           causal=True, block_table=bt, out=out, **kw)
    ref = torch.full(q.shape, 7.0, dtype=torch.float64, device=DEVICE)
    rows = {0: 0, 2: 1, 3: 2}
    for b, r in rows.items():
        ref[r:r + 1] = ref_attention(q[r:r + 1], gather_flash(kc, bt[b], k_lens[b]), gather_flash(vc, bt[b], k_lens[b]))
    _check(out, ref, dtype)


def test_paged_lengths_from_cu_seqlens_k():
    hq, hkv, d, bs = 2, 1, 16, 4
    q_lens, k_lens = [2, 3], [6, 3]
    kc, vc, bt = _paged(k_lens, hkv, d, bs, torch.float32)
    q = randn(sum(q_lens), hq, d)
    i64 = torch.int64  # int64 offsets and tables are accepted as well
    out = flash_attn_varlen_func(q, kc, vc, _cu(q_lens, i64), 3, _cu(k_lens, i64), 6, causal=False,
                                 block_table=bt.long())
    ref = torch.cat([ref_attention(q[:2], gather_flash(kc, bt[0], 6), gather_flash(vc, bt[0], 6)),
                     ref_attention(q[2:], gather_flash(kc, bt[1], 3), gather_flash(vc, bt[1], 3))])
    _check(out, ref, torch.float32)


def test_strided_block_table_and_lengths():
    # a column-strided block table and strided seqused_k are read correctly (torch path)
    hq, hkv, d, bs = 2, 1, 16, 4
    q_lens, k_lens = [2, 3], [6, 3]
    kc, vc, bt = _paged(k_lens, hkv, d, bs, torch.float32)
    bt_strided = torch.stack([bt, bt], -1)[..., 0]
    used = torch.tensor([[6, 0], [3, 0]], dtype=torch.int32, device=DEVICE)[:, 0]
    assert bt_strided.stride(1) != 1 and used.stride(0) != 1
    q = randn(sum(q_lens), hq, d)
    out = flash_attn_varlen_func(q, kc, vc, _cu(q_lens), 3, None, 6, seqused_k=used, block_table=bt_strided)
    ref = torch.cat([ref_attention(q[:2], gather_flash(kc, bt[0], 6), gather_flash(vc, bt[0], 6)),
                     ref_attention(q[2:], gather_flash(kc, bt[1], 3), gather_flash(vc, bt[1], 3))])
    _check(out, ref, torch.float32)


def test_empty_key_sequence_gives_zeros():
    q = randn(3, 2, 16)
    k = randn(4, 2, 16)
    out = flash_attn_varlen_func(q, k, k, _cu([2, 1]), 2, _cu([4, 0]), 4)
    assert torch.equal(out[2:], torch.zeros_like(out[2:]))
    _check(out[:2], ref_attention(q[:2], k, k), torch.float32)


def test_float64_goes_to_torch_path():
    lens = [3, 5]
    f64 = torch.float64
    q, k, v = randn(8, 2, 16, dtype=f64), randn(8, 1, 16, dtype=f64), randn(8, 1, 16, dtype=f64)
    out = flash_attn_varlen_func(q, k, v, _cu(lens), 5, _cu(lens), 5, causal=True)
    torch.testing.assert_close(out, _packed_ref(q, k, v, lens, lens, True))


if ON_GPU:
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("causal", [False, True])
    @pytest.mark.parametrize("d", [64, 80, 128, 256])
    @pytest.mark.parametrize("group", [1, 4, 8])
    def test_packed_gpu(dtype, causal, d, group):
        q_lens, k_lens = [1, 300, 1024, 77], [513, 300, 1500, 77]
        hq = 8
        q = randn(sum(q_lens), hq, d, dtype=dtype)
        k = randn(sum(k_lens), hq // group, d, dtype=dtype)
        v = randn(sum(k_lens), hq // group, d, dtype=dtype)
        out = flash_attn_varlen_func(q, k, v, _cu(q_lens), max(q_lens), _cu(k_lens), max(k_lens), causal=causal)
        _check(out, _packed_ref(q, k, v, q_lens, k_lens, causal), dtype)

    @pytest.mark.parametrize("bs", [16, 32])
    def test_paged_gpu(bs):
        q_lens, k_lens = [1, 1, 200, 17], [4000, 33, 700, 17]
        kc, vc, bt = _paged(k_lens, 8, 128, bs, torch.bfloat16)
        q = randn(sum(q_lens), 32, 128, dtype=torch.bfloat16)
        seqused = torch.tensor(k_lens, dtype=torch.int32, device=DEVICE)
        out = flash_attn_varlen_func(q, kc, vc, _cu(q_lens), max(q_lens), None, max(k_lens), seqused_k=seqused,
                                     causal=True, block_table=bt)
        ref = torch.zeros(q.shape, dtype=torch.float64, device=DEVICE)
        qo = 0
        for b, (lq, lk) in enumerate(zip(q_lens, k_lens)):
            ref[qo:qo + lq] = ref_attention(q[qo:qo + lq], gather_flash(kc, bt[b], lk), gather_flash(vc, bt[b], lk),
                                            causal=True)
            qo += lq
        _check(out, ref, torch.bfloat16)
