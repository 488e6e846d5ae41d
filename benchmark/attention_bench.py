"""Attention speed on the GPU: paged decode (TB/s of KV bytes) and prefill (TFLOP/s), gems vs torch SDPA.

    python benchmark/attention_bench.py            # the issue's target cases
    python benchmark/attention_bench.py --sweep    # every SDPA forward config, forced one by one
    from benchmark.attention_bench import bench_decode, bench_prefill
    bench_decode(batch=1, context=32768)

Times are medians of ``triton.testing.do_bench`` (warmup 25 ms, rep 200 ms), the same harness
as shared/reference-numbers.md. The first gems call of a shape tunes (not timed).
"""
from __future__ import annotations

import sys

import gemsops  # first: under GEMS_VENDOR=interpreter it must set TRITON_INTERPRET before Triton loads
import torch
import torch.nn.functional as F
import triton
from gemsops.ops import flash_attn_varlen_func, paged_attention, sdpa_flash_forward


DEVICE = "cuda"


def _ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def _graph_ms(call, inputs, calls=20, reps=10):
    """Device time per call: ``calls`` calls captured in one CUDA graph, cycling over ``inputs``
    (copies of the data, so that one call's reads do not hit in L2 what the previous left),
    replayed ``reps`` times; the host's launch cost is excluded. Median of the replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(3):
            call(inputs[i % len(inputs)])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            call(inputs[i % len(inputs)])
    graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def _paged_cache(batch, context, hkv, d, block_size, dtype, layout):
    blocks_per_seq = triton.cdiv(context, block_size)
    nb = batch * blocks_per_seq
    if layout == "vllm":
        x = 16 // torch.empty((), dtype=dtype).element_size()
        kc = torch.randn(nb, hkv, d // x, block_size, x, dtype=dtype, device=DEVICE)
        vc = torch.randn(nb, hkv, d, block_size, dtype=dtype, device=DEVICE)
    elif layout == "hnd":
        kc = torch.randn(nb, hkv, block_size, d, dtype=dtype, device=DEVICE).permute(0, 2, 1, 3)
        vc = torch.randn(nb, hkv, block_size, d, dtype=dtype, device=DEVICE).permute(0, 2, 1, 3)
    else:
        kc = torch.randn(nb, block_size, hkv, d, dtype=dtype, device=DEVICE)
        vc = torch.randn(nb, block_size, hkv, d, dtype=dtype, device=DEVICE)
    bt = torch.randperm(nb, device=DEVICE).view(batch, blocks_per_seq).to(torch.int32)
    return kc, vc, bt


def bench_decode(batch=64, context=4096, hq=32, hkv=8, d=128, block_size=16, dtype=torch.bfloat16,
                 layout="flash", verbose=True):
    """Paged decode: gems paged_attention vs torch SDPA (enable_gqa) on the same KV, contiguous."""
    kc, vc, bt = _paged_cache(batch, context, hkv, d, block_size, dtype, layout)
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEVICE)
    seq_lens = torch.full((batch,), context, dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    kv_layout = "vllm" if layout == "vllm" else "flash"
    paged_attention(q, kc, vc, bt, seq_lens, kv_layout=kv_layout, out=out)  # tune + compile
    gems_ms = _ms(lambda: paged_attention(q, kc, vc, bt, seq_lens, kv_layout=kv_layout, out=out))
    kv_bytes = 2 * batch * context * hkv * d * torch.empty((), dtype=dtype).element_size()
    # torch reference: the same KV gathered into contiguous [B, Hkv, L, D]
    if layout == "flash":
        k = kc[bt.long()].flatten(1, 2)[:, :context].transpose(1, 2).contiguous()
        v = vc[bt.long()].flatten(1, 2)[:, :context].transpose(1, 2).contiguous()
    else:
        k = torch.randn(batch, hkv, context, d, dtype=dtype, device=DEVICE)
        v = torch.randn_like(k)
    q4 = q.unsqueeze(2)
    torch_ms = _ms(lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True))
    if layout == "flash":
        ref = F.scaled_dot_product_attention(q4, k, v, enable_gqa=True).squeeze(2)
        err = (out.float() - ref.float()).abs().max().item()
    else:
        err = float("nan")
    graph_ms = _graph_ms(lambda c: paged_attention(q, c[0], c[1], bt, seq_lens, kv_layout=kv_layout, out=out),
                         [(kc, vc), (kc.clone(), vc.clone())])
    res = dict(case=f"decode B{batch} L{context} H{hq}/{hkv} D{d} bs{block_size} {layout} {dtype}",
               gems_us=gems_ms * 1e3, gems_TBps=kv_bytes / gems_ms / 1e9,
               gems_graph_us=graph_ms * 1e3, gems_graph_TBps=kv_bytes / graph_ms / 1e9,
               torch_us=torch_ms * 1e3, torch_TBps=kv_bytes / torch_ms / 1e9, max_err=err)
    if verbose:
        _print(res)
    return res


def bench_prefill(batch=1, heads=32, seqlen=4096, d=128, causal=True, dtype=torch.bfloat16, kv_heads=None,
                  verbose=True):
    """SDPA-shaped prefill: gems flash forward vs torch SDPA (its flash backend) on [B, H, S, D]."""
    kv_heads = kv_heads or heads
    q = torch.randn(batch, heads, seqlen, d, dtype=dtype, device=DEVICE)
    k = torch.randn(batch, kv_heads, seqlen, d, dtype=dtype, device=DEVICE)
    v = torch.randn_like(k)
    gqa = kv_heads != heads
    sdpa_flash_forward(q, k, v, causal)
    gems_ms = _ms(lambda: sdpa_flash_forward(q, k, v, causal))
    torch_ms = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa))
    with gemsops.use_gems(include=["sdpa"]):
        F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        dispatch_ms = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa))
    flops = 4 * batch * heads * seqlen * seqlen * d * (0.5 if causal else 1.0)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    err = (sdpa_flash_forward(q, k, v, causal)[0].float() - ref.float()).abs().max().item()
    res = dict(case=f"prefill B{batch} H{heads}/{kv_heads} S{seqlen} D{d} causal={causal} {dtype}",
               gems_us=gems_ms * 1e3, gems_TFLOPs=flops / gems_ms / 1e9,
               via_sdpa_us=dispatch_ms * 1e3,
               torch_us=torch_ms * 1e3, torch_TFLOPs=flops / torch_ms / 1e9,
               ratio=torch_ms / gems_ms, max_err=err)
    if verbose:
        _print(res)
    return res


def bench_varlen(batch=8, seqlen=2048, heads=32, kv_heads=8, d=128, causal=True, dtype=torch.bfloat16,
                 verbose=True):
    """flash_attn_varlen_func on packed equal-length sequences vs torch SDPA on the same data."""
    q = torch.randn(batch * seqlen, heads, d, dtype=dtype, device=DEVICE)
    k = torch.randn(batch * seqlen, kv_heads, d, dtype=dtype, device=DEVICE)
    v = torch.randn_like(k)
    cu = torch.arange(0, batch + 1, dtype=torch.int32, device=DEVICE) * seqlen
    run = lambda: flash_attn_varlen_func(q, k, v, cu, seqlen, cu, seqlen, causal=causal)  # noqa: E731
    run()
    gems_ms = _ms(run)
    q4 = q.view(batch, seqlen, heads, d).transpose(1, 2)
    k4 = k.view(batch, seqlen, kv_heads, d).transpose(1, 2)
    v4 = v.view(batch, seqlen, kv_heads, d).transpose(1, 2)
    torch_ms = _ms(lambda: F.scaled_dot_product_attention(q4, k4, v4, is_causal=causal,
                                                          enable_gqa=kv_heads != heads))
    flops = 4 * batch * heads * seqlen * seqlen * d * (0.5 if causal else 1.0)
    res = dict(case=f"varlen B{batch} S{seqlen} H{heads}/{kv_heads} D{d} causal={causal}",
               gems_us=gems_ms * 1e3, gems_TFLOPs=flops / gems_ms / 1e9,
               torch_us=torch_ms * 1e3, torch_TFLOPs=flops / torch_ms / 1e9, ratio=torch_ms / gems_ms)
    if verbose:
        _print(res)
    return res


def bench_host_overhead(verbose=True):
    """Per-call time of tiny calls (host work dominates): gems vs torch on the same tiny data."""
    dt = torch.bfloat16
    kc, vc, bt = _paged_cache(1, 16, 1, 64, 16, dt, "flash")
    q = torch.randn(1, 1, 64, dtype=dt, device=DEVICE)
    sl = torch.full((1,), 16, dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    paged_attention(q, kc, vc, bt, sl, out=out)
    key = torch.randn(1, 1, 64, dtype=dt, device=DEVICE)
    slots = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    from gemsops.ops import reshape_and_cache_flash
    reshape_and_cache_flash(key, key, kc, vc, slots)
    q4, k4 = q.unsqueeze(2), kc[:1].permute(0, 2, 1, 3)
    res = dict(case="host overhead (tiny inputs)",
               paged_decode_us=_ms(lambda: paged_attention(q, kc, vc, bt, sl, out=out)) * 1e3,
               cache_write_us=_ms(lambda: reshape_and_cache_flash(key, key, kc, vc, slots)) * 1e3,
               torch_sdpa_us=_ms(lambda: F.scaled_dot_product_attention(q4, k4, k4)) * 1e3,
               torch_index_put_us=_ms(lambda: kc.view(-1, 1, 64).index_copy_(0, slots, key)) * 1e3)
    if verbose:
        _print(res)
    return res


def sweep_prefill(batch=1, heads=32, kv_heads=None, seqlen=4096, d=128, causal=True, dtype=torch.bfloat16,
                  chunks=(1, 4, 8)):
    """Every candidate config of the SDPA forward, each with ``chunks`` as HEAD_CHUNK, forced
    one at a time (the tuner bypassed): TFLOP/s per config, best last. For retuning the YAML."""
    from gemsops.ops import _attention
    kv_heads = kv_heads or heads
    q = torch.randn(batch, heads, seqlen, d, dtype=dtype, device=DEVICE)
    k = torch.randn(batch, kv_heads, seqlen, d, dtype=dtype, device=DEVICE)
    v = torch.randn_like(k)
    flops = 4 * batch * heads * seqlen * seqlen * d * (0.5 if causal else 1.0)
    torch_ms = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads))
    print(f"sweep B{batch} H{heads}/{kv_heads} S{seqlen} D{d} causal={causal}: torch {flops / torch_ms / 1e9:.1f} TFLOP/s")
    tuner = _attention._fwd_tuner
    results = []
    try:
        for base in tuner.candidates:
            for chunk in chunks:
                cfg = dict(base, HEAD_CHUNK=chunk)
                tuner.choose = lambda key, run, cfg=cfg: cfg  # an instance attribute shadows the method
                try:
                    sdpa_flash_forward(q, k, v, causal)
                    ms = _ms(lambda: sdpa_flash_forward(q, k, v, causal))
                except Exception as e:  # a config the compiler rejects
                    print(f"  failed {cfg}: {type(e).__name__}")
                    continue
                results.append((flops / ms / 1e9, cfg))
    finally:
        del tuner.choose
    for tflops, cfg in sorted(results, key=lambda r: r[0]):
        print(f"  {tflops:6.1f} TFLOP/s  {cfg}")
    return results


def _print(res):
    print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    if "--sweep" in sys.argv:
        sweep_prefill(chunks=(1, 2, 4, 8, 16, 32))
        sweep_prefill(batch=4, seqlen=2048, causal=True)
        sweep_prefill(kv_heads=8, seqlen=8192, causal=True)
        return
    bench_decode(batch=64, context=4096)          # target >= 2.55 TB/s on H100
    bench_decode(batch=1, context=32768)          # target >= 2.55 TB/s (split-KV)
    bench_decode(batch=8, context=16384)
    bench_decode(batch=64, context=4096, layout="vllm")
    bench_decode(batch=64, context=4096, block_size=32)
    bench_prefill(batch=1, heads=32, seqlen=4096, causal=True)   # target >= 0.9x torch (527 TFLOP/s)
    bench_prefill(batch=4, heads=32, seqlen=2048, causal=True)
    bench_prefill(batch=1, heads=32, seqlen=4096, causal=False)
    bench_varlen()
    bench_host_overhead()


if __name__ == "__main__":
    main()
