"""paged_attention (decode) against float64 softmax(QK^T)V over the gathered cache."""
import importlib

import pytest
import torch

from gemsops.ops import paged_attention
from gemsops.runtime import Plans
from tests.ops.attention_ref import gather_flash, gather_vllm_key, gather_vllm_value, ref_attention
from tests.util import DEVICE, ON_GPU, assert_close, randn

pa = importlib.import_module("gemsops.ops.paged_attention")  # the module, not the function

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _make(num_seqs, hq, hkv, d, bs, seq_lens, dtype, layout, extra_blocks=1, seed=0):
    torch.manual_seed(seed)
    max_blocks = max(1, max((n + bs - 1) // bs for n in seq_lens))
    nb = num_seqs * max_blocks + extra_blocks
    q = randn(num_seqs, hq, d, dtype=dtype)
    if layout == "vllm":
        x = 16 // torch.empty((), dtype=dtype).element_size()
        kc = randn(nb, hkv, d // x, bs, x, dtype=dtype)
        vc = randn(nb, hkv, d, bs, dtype=dtype)
    elif layout == "hnd":  # HND storage, passed as an NHD ("flash") view
        kc = randn(nb, hkv, bs, d, dtype=dtype).permute(0, 2, 1, 3)
        vc = randn(nb, hkv, bs, d, dtype=dtype).permute(0, 2, 1, 3)
    else:
        kc, vc = randn(nb, bs, hkv, d, dtype=dtype), randn(nb, bs, hkv, d, dtype=dtype)
    # pages shuffled so that a sequence's blocks are not adjacent in the cache
    perm = torch.randperm(nb)[: num_seqs * max_blocks]
    bt = perm.view(num_seqs, max_blocks).to(torch.int32).to(DEVICE)
    sl = torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE)
    return q, kc, vc, bt, sl


def _reference(q, kc, vc, bt, seq_lens, layout, scale=None, alibi=None):
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for b, n in enumerate(seq_lens):
        if layout == "vllm":
            k, v = gather_vllm_key(kc, bt[b], n), gather_vllm_value(vc, bt[b], n)
        else:
            k, v = gather_flash(kc, bt[b], n), gather_flash(vc, bt[b], n)
        if n:
            out[b] = ref_attention(q[b:b + 1], k, v, scale=scale, alibi=alibi)[0]
    return out


def _check(out, ref, dtype):
    assert not torch.isnan(out).any()
    assert_close(out, ref.to(dtype), dtype=dtype, scale=2.0 if dtype == torch.bfloat16 else 4.0)


# seq_lens: a zero, partial last blocks, one long enough that the interpreter's split-KV
# choice (nominal 4 SMs) splits it and merges the partials
CASES = [
    # (num_seqs, hq, hkv, d, bs, seq_lens)
    (3, 2, 2, 16, 8, [0, 5, 37]),
    (2, 8, 2, 24, 16, [17, 33]),
    (2, 8, 1, 32, 8, [1, 20]),
]


def _fits(layout, d, dtype):
    # the vLLM layout packs K in groups of x = 16 bytes: the head size must be a multiple of x
    return layout != "vllm" or d % (16 // torch.empty((), dtype=dtype).element_size()) == 0


@pytest.mark.parametrize("dtype,layout,case", [(dt, lay, c) for dt in DTYPES for lay in ("flash", "hnd", "vllm")
                                               for c in CASES if _fits(lay, c[3], dt)])
def test_paged_decode(dtype, layout, case):
    num_seqs, hq, hkv, d, bs, seq_lens = case
    q, kc, vc, bt, sl = _make(num_seqs, hq, hkv, d, bs, seq_lens, dtype, layout)
    out = paged_attention(q, kc, vc, bt, sl, kv_layout="vllm" if layout == "vllm" else "flash")
    _check(out, _reference(q, kc, vc, bt, seq_lens, layout), dtype)


def test_page_larger_than_tile():
    # 32-token pages with 16-token K/V tiles (the interpreter's BLOCK_N): tiles inside one page
    seq_lens = [45, 32]
    q, kc, vc, bt, sl = _make(2, 4, 2, 16, 32, seq_lens, torch.float32, "flash")
    out = paged_attention(q, kc, vc, bt, sl)
    _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.float32)


@pytest.mark.parametrize("layout", ["flash", "vllm"])
def test_stale_slots_past_the_end_are_ignored(layout):
    # a cache whose every slot outside the sequences holds NaN (freed pages, the unused tail
    # of a last page): whole tiles are read without masks, so the partial tile must not let
    # the slots past a sequence's end into the sums
    seq_lens = [37, 5, 64]
    q, kc, vc, bt, sl = _make(3, 4, 2, 16, 8, seq_lens, torch.float32, layout)
    kc_nan, vc_nan = torch.full_like(kc, float("nan")), torch.full_like(vc, float("nan"))
    for b, n in enumerate(seq_lens):
        for t in range(n):
            page, slot = bt[b, t // 8].item(), t % 8
            if layout == "vllm":
                kc_nan[page, :, :, slot], vc_nan[page, :, :, slot] = kc[page, :, :, slot], vc[page, :, :, slot]
            else:
                kc_nan[page, slot], vc_nan[page, slot] = kc[page, slot], vc[page, slot]
    out = paged_attention(q, kc_nan, vc_nan, bt, sl, kv_layout=layout)
    _check(out, _reference(q, kc, vc, bt, seq_lens, layout), torch.float32)


def test_many_pairs_single_pass_and_out_arg():
    # enough (sequence, kv head) pairs that no split happens; out= is written in place;
    # int64 tables, and the query a strided slice of a fused qkv tensor
    seq_lens = [3, 16, 9, 0, 11, 7, 1, 12]
    q, kc, vc, bt, sl = _make(8, 4, 2, 16, 8, seq_lens, torch.float32, "flash")
    qkv = randn(8, 3, 4, 16)
    qkv[:, 0] = q
    q = qkv[:, 0]
    bt, sl = bt.long(), sl.long()
    out = torch.full((8, 4, 16), float("nan"), device=DEVICE)
    res = paged_attention(q, kc, vc, bt, sl, scale=0.3, out=out)
    assert res.data_ptr() == out.data_ptr()
    _check(out, _reference(q, kc, vc, bt, seq_lens, "flash", scale=0.3), torch.float32)


@pytest.mark.parametrize("layout", ["flash", "vllm"])
def test_alibi(layout):
    seq_lens = [9, 30]
    q, kc, vc, bt, sl = _make(2, 4, 2, 16, 8, seq_lens, torch.float32, layout)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625], device=DEVICE)
    out = paged_attention(q, kc, vc, bt, sl, kv_layout=layout, alibi_slopes=slopes)
    _check(out, _reference(q, kc, vc, bt, seq_lens, layout, alibi=slopes), torch.float32)


def test_no_tuning_during_graph_capture(monkeypatch):
    # under CUDA graph capture nothing may be timed: an untuned key runs the default config,
    # and neither the choice nor the launch plan is kept (they are made again after capture)
    from gemsops.runtime import tuner
    monkeypatch.setattr(tuner, "capturing", lambda: True)
    monkeypatch.setattr(tuner, "can_benchmark", lambda: True)
    monkeypatch.setattr(pa._tuner, "_tune", None)  # must not be asked
    monkeypatch.setattr(pa._tuner, "candidates", [dict(pa._tuner.default), dict(pa._tuner.default, num_warps=2)])
    monkeypatch.setattr(pa._tuner, "memory", {})
    monkeypatch.setattr(pa._tuner, "_entry_key", lambda key: f"never-cached {key!r}")
    monkeypatch.setattr(pa, "_PLANS", Plans())
    seq_lens = [5, 21]
    q, kc, vc, bt, sl = _make(2, 4, 2, 16, 8, seq_lens, torch.float32, "flash")
    out = paged_attention(q, kc, vc, bt, sl)
    _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.float32)
    assert not pa._tuner.memory and not pa._PLANS


def test_tuning_trials_leave_a_strided_out_alone(monkeypatch):
    # the tuner's trial launches (made to run here through a fake timer) write scratch
    # tensors laid out like ``out``; the real output is written once, by the final launch
    from gemsops.runtime import tuner
    trials = []
    monkeypatch.setattr(tuner, "can_benchmark", lambda: True)
    # distinct times (1.0, 2.0): one timing per candidate, no second pass for close ones
    monkeypatch.setattr(tuner, "benchmark", lambda fn: trials.append(fn()) or float(len(trials)))
    monkeypatch.setattr(pa._tuner, "candidates", [dict(pa._tuner.default), dict(pa._tuner.default, num_warps=2)])
    monkeypatch.setattr(pa._tuner, "memory", {})
    monkeypatch.setattr(pa._tuner, "_entry_key", lambda key: f"test-only {key!r}")
    monkeypatch.setattr(pa._tuner, "_disk", lambda: type("NoDisk", (), {"get": lambda s, k: None,
                                                                          "put": lambda s, k, v: None})())
    monkeypatch.setattr(pa, "_PLANS", Plans())
    seq_lens = [40, 9]
    q, kc, vc, bt, sl = _make(2, 4, 2, 16, 8, seq_lens, torch.float32, "flash")
    wide = torch.full((2, 4, 40), float("nan"), device=DEVICE)
    out = wide[:, :, 8:24]  # a strided view inside a wider buffer
    paged_attention(q, kc, vc, bt, sl, out=out)
    assert len(trials) == 2
    _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.float32)
    assert torch.isnan(wide[:, :, :8]).all() and torch.isnan(wide[:, :, 24:]).all()


def test_repeated_split_calls_agree():
    # split-KV calls, planned once per signature: each later call (other data, other
    # batch sizes, a signature seen before) must read its own inputs
    for seed, seq_lens in enumerate(([40, 37], [33, 0, 48], [40, 37])):
        q, kc, vc, bt, sl = _make(len(seq_lens), 4, 2, 16, 8, seq_lens, torch.float32, "flash", seed=seed)
        out = paged_attention(q, kc, vc, bt, sl)
        _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.float32)


@pytest.mark.parametrize("fused", [True, False], ids=["merge-in-kernel", "merge-kernel"])
def test_split_merge_paths(monkeypatch, fused):
    # many segments per sequence (69 of 16 tokens: more than one merge step, in the decode
    # kernel's last program or in the separate merge kernel); then again, so the arrival
    # counters must be back at zero; a sequence shorter than most segments leaves them empty
    cfg = dict(pa._tuner.default, BLOCK_N=16, min_tokens=16, max_splits=80, waves=128, FUSED_MERGE=fused)
    monkeypatch.setattr(pa._tuner, "default", cfg)
    monkeypatch.setattr(pa._tuner, "candidates", [cfg])
    monkeypatch.setattr(pa._tuner, "memory", {})
    monkeypatch.setattr(pa, "_PLANS", Plans())
    for seed, seq_lens in enumerate(([1100, 9], [1057, 1100])):
        q, kc, vc, bt, sl = _make(2, 4, 2, 16, 8, seq_lens, torch.float32, "flash", seed=seed)
        out = paged_attention(q, kc, vc, bt, sl)
        _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.float32)
    (plan,) = pa._PLANS.values()
    assert (plan[1] is None) == fused  # no separate merge launch when the kernel merges
    if fused:
        assert not plan[3].any()


def test_all_empty_is_zero():
    q, kc, vc, bt, sl = _make(2, 2, 2, 16, 8, [0, 0], torch.float16, "flash")
    out = paged_attention(q, kc, vc, bt, sl)
    assert torch.equal(out, torch.zeros_like(out))


def test_float64_goes_to_torch_path():
    seq_lens = [4, 10]
    q, kc, vc, bt, sl = _make(2, 2, 1, 16, 8, seq_lens, torch.float64, "flash")
    out = paged_attention(q, kc, vc, bt, sl)
    torch.testing.assert_close(out, _reference(q, kc, vc, bt, seq_lens, "flash"))


def test_bad_layout_raises():
    q, kc, vc, bt, sl = _make(1, 2, 2, 16, 8, [3], torch.float32, "flash")
    with pytest.raises(ValueError):
        paged_attention(q, kc, vc, bt, sl, kv_layout="nope")
    with pytest.raises(ValueError):
        paged_attention(q, kc, vc, bt, sl, kv_layout="vllm")


if ON_GPU:
    GPU_CASES = [
        # (num_seqs, hq, hkv, d, bs, seq_lens): model sizes, GQA 1/4/8, head sizes 64..256
        (4, 32, 8, 128, 16, [1, 100, 1000, 4097]),
        (2, 32, 32, 64, 16, [513, 0]),
        (3, 16, 2, 80, 32, [77, 1500, 33]),
        (2, 12, 12, 96, 16, [300, 2049]),
        (1, 8, 1, 256, 16, [8192]),
        (64, 32, 8, 128, 16, [(i * 97) % 700 for i in range(64)]),
    ]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("layout", ["flash", "hnd", "vllm"])
    @pytest.mark.parametrize("case", GPU_CASES)
    def test_paged_decode_gpu(dtype, layout, case):
        num_seqs, hq, hkv, d, bs, seq_lens = case
        q, kc, vc, bt, sl = _make(num_seqs, hq, hkv, d, bs, seq_lens, dtype, layout)
        out = paged_attention(q, kc, vc, bt, sl, kv_layout="vllm" if layout == "vllm" else "flash")
        _check(out, _reference(q, kc, vc, bt, seq_lens, layout), dtype)

    def test_cuda_graph_capture_gpu():
        # warm up (tunes), then capture and replay with new cache contents: the split path
        # allocates its partials inside the capture, from the graph's pool
        seq_lens = [3000, 17]
        q, kc, vc, bt, sl = _make(2, 32, 8, 128, 16, seq_lens, torch.bfloat16, "flash")
        out = torch.empty_like(q)
        paged_attention(q, kc, vc, bt, sl, out=out)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            paged_attention(q, kc, vc, bt, sl, out=out)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            paged_attention(q, kc, vc, bt, sl, out=out)
        kc.copy_(torch.randn_like(kc))
        q.copy_(torch.randn_like(q))
        graph.replay()
        torch.cuda.synchronize()
        _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.bfloat16)

    @pytest.mark.big_memory
    def test_long_single_sequence_split_gpu():
        seq_lens = [32768]
        q, kc, vc, bt, sl = _make(1, 32, 8, 128, 16, seq_lens, torch.bfloat16, "flash")
        for _ in range(3):  # repeated (planned) launches
            out = paged_attention(q, kc, vc, bt, sl)
            _check(out, _reference(q, kc, vc, bt, seq_lens, "flash"), torch.bfloat16)
