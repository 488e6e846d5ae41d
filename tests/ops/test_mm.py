"""mm and the shared GEMM kernel (ops/_gemm.py): layouts, split K, edge cases, routing."""
import importlib

import pytest
import torch

import gemsops
from gemsops import ops
from gemsops.ops import _gemm
from gemsops.runtime import Plans
from tests.ops._matmul_util import check, operand, same_as_native
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "ts"])
def test_mm_layouts(dtype, layout):
    torch.manual_seed(0)
    M, N, K = 37, 29, 45  # no dim a multiple of any block: every edge is partial
    a = operand(M, K, dtype, layout[0])
    b = operand(K, N, dtype, layout[1])
    check(ops.mm(a, b), torch.mm, a, b, k=K)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("M", [1, 16])
def test_mm_small_m(dtype, M):
    # M <= 64 takes the split-K configs (the interpreter default splits K in two)
    torch.manual_seed(1)
    K, N = 70, 33
    a = operand(M, K, dtype)
    w = operand(N, K, dtype)  # nn.Linear's weight, used transposed
    check(ops.mm(a, w.t()), torch.mm, a, w.t(), k=K)


def run_config(cfg, a, sa, b, sb, out, x, sx, batch, alpha, beta):
    """A launcher for one explicit config (what the tuner would build for it)."""
    M, N, K = out.shape[-2], out.shape[-1], a.shape[-1]
    sc = out.stride() if out.dim() == 3 else (0, *out.stride())
    run = _gemm._runner(cfg, tuple(sa), tuple(sb), sc, sx, x is not None, batch, M, N, K, alpha, beta,
                        a.dtype, True, out.device)
    return lambda: run(a, b, out, x, alpha, beta)


@pytest.mark.parametrize("cfg", [
    dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=1, SPLIT_K=3),  # uneven splits, one empty
    dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=4, SPLIT_K=1),  # K % BLOCK_K == 0 path
    dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=32, GROUP_M=3, SPLIT_K=2),
])
def test_gemm_configs(cfg):
    # every config must give the same answer: the tuner may pick any of them on a GPU
    torch.manual_seed(2)
    B, M, N, K = 2, 24, 20, 48
    a = torch.randn(B, M, K, device=DEVICE)
    b = torch.randn(B, K, N, device=DEVICE)
    bias = torch.randn(N, device=DEVICE)
    out = torch.empty(B, M, N, device=DEVICE)
    run = run_config(cfg, a, a.stride(), b, b.stride(), out, bias, (0, 0, 1), B, 0.5, 2.0)
    for _ in range(2 if cfg["SPLIT_K"] > 1 else 1):  # a second run: the split-K counters were reset
        out.fill_(float("nan"))
        run()
        check(out, lambda a, b, x: torch.baddbmm(x, a, b, beta=2.0, alpha=0.5), a, b, bias, k=K)


def test_mm_noncontiguous_and_offsets():
    torch.manual_seed(3)
    big = torch.randn(50, 60, device=DEVICE)
    a = big[3:40:2, 5:45]  # row stride 120, storage offset
    b = big[10:50, 1:60:3]
    check(ops.mm(a, b), torch.mm, a, b, k=a.shape[1])
    # 0-stride (expanded) operands
    row = torch.randn(1, 24, device=DEVICE).expand(17, 24)
    col = torch.randn(24, 1, device=DEVICE).expand(24, 19)
    check(ops.mm(row, col), torch.mm, row, col, k=24)


@pytest.mark.parametrize("shape", [(0, 5, 7), (6, 0, 7), (6, 5, 0), (0, 0, 0)])
def test_mm_empty_and_k0(shape):
    M, N, K = shape
    a = torch.randn(M, K, device=DEVICE)
    b = torch.randn(K, N, device=DEVICE)
    got = ops.mm(a, b)
    assert got.shape == (M, N)
    torch.testing.assert_close(got, torch.zeros(M, N, device=DEVICE))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_mm_special_values():
    a = torch.randn(20, 18, device=DEVICE)
    b = torch.randn(18, 21, device=DEVICE)
    a[3, 4] = float("nan")
    a[7, 2] = float("inf")
    b[5, 6] = float("-inf")
    want = torch.mm(a, b)
    got = ops.mm(a, b)
    torch.testing.assert_close(got, want, equal_nan=True, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())


def test_mm_out():
    torch.manual_seed(4)
    a, b = torch.randn(9, 12, device=DEVICE), torch.randn(12, 10, device=DEVICE)
    out = torch.empty(10, 9, device=DEVICE).t()  # strided out is written in place
    from gemsops.ops.mm import mm_out
    got = mm_out(a, b, out=out)
    assert got is out
    check(out, torch.mm, a, b, k=12)


def test_mm_routed_to_native():
    a32, b32 = torch.randn(5, 6, device=DEVICE), torch.randn(6, 7, device=DEVICE)
    from gemsops.ops.mm import mm_out
    # fp64, integers: torch's kernel
    same_as_native(ops.mm, torch.mm, a32.double(), b32.double())
    if not ON_GPU:  # integer mm has no CUDA kernel; both must raise the same way there
        same_as_native(ops.mm, torch.mm, a32.to(torch.int64), b32.to(torch.int64))
    same_as_native(ops.mm, torch.mm, a32.to(torch.complex64), b32.to(torch.complex64))
    # torch's own errors: mixed dtypes, wrong shapes, wrong ranks
    same_as_native(ops.mm, torch.mm, a32, b32.half())
    same_as_native(ops.mm, torch.mm, a32, a32)
    same_as_native(ops.mm, torch.mm, a32[0], b32)
    # out= of the wrong shape is resized by torch; of the wrong dtype is torch's error
    out = torch.empty(2, 2, device=DEVICE)
    got = mm_out(a32, b32, out=out)
    assert got.shape == (5, 7)
    torch.testing.assert_close(got, torch.mm(a32, b32), atol=1e-5, rtol=1e-5)
    same_as_native(lambda *a, **k: mm_out(*a, **k), lambda a, b, out: torch.mm(a, b, out=out),
                   a32, b32, out=torch.empty(5, 7, device=DEVICE, dtype=torch.float16))
    # out= aliasing an input: whatever torch does, gems does
    sq, b = torch.randn(6, 6, device=DEVICE), torch.randn(6, 6, device=DEVICE)
    s1, s2 = sq.clone(), sq.clone()
    torch.mm(s1, b, out=s1)
    mm_out(s2, b, out=s2)
    torch.testing.assert_close(s2, s1, atol=1e-5, rtol=1e-5)


def test_mm_under_enable(tmp_path):
    torch.manual_seed(5)
    a, b = torch.randn(18, 20, device=DEVICE), torch.randn(20, 12, device=DEVICE)
    log = tmp_path / "ops.log"
    gemsops.only_enable(include=["mm"], record=True, path=log)
    got = torch.mm(a, b)
    gemsops.disable()
    check(got, torch.mm, a, b, k=20)
    assert "aten::mm" in log.read_text()


def test_plan_cache_reused():
    a, b = torch.randn(19, 21, device=DEVICE), torch.randn(21, 23, device=DEVICE)
    ops.mm(a, b)
    n = len(_gemm._PLANS)
    ops.mm(torch.randn(19, 21, device=DEVICE), torch.randn(21, 23, device=DEVICE))
    assert len(_gemm._PLANS) == n


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_repeated_call_signature_serves_new_tensors(dtype):
    # a 16-bit signature seen before launches its kept plan without the checks: new
    # tensors, new values, and a signature that differs only in a stride or a dtype
    calls = importlib.import_module("gemsops.ops.mm")._CALLS
    for step in range(3):
        torch.manual_seed(20 + step)
        a, b = operand(13, 40, dtype), operand(40, 11, dtype, "t")
        check(ops.mm(a, b), torch.mm, a, b, k=40)
        key = (a.shape, a.stride(), a.dtype, b.shape, b.stride(), b.dtype)
        assert key in calls
        c = operand(40, 11, dtype)  # the other layout of b: a signature of its own
        check(ops.mm(a, c), torch.mm, a, c, k=40)
    same_as_native(ops.mm, torch.mm, a, b.float())  # same shapes, mixed dtypes: torch's error
    a32 = a.float()
    check(ops.mm(a32, b.float()), torch.mm, a32, b.float(), k=40)
    assert (a32.shape, a32.stride(), a32.dtype, b.shape, b.stride(), torch.float32) not in calls  # fp32: TF32 switch


@pytest.mark.skipif(not ON_GPU, reason="tf32 exists only on CUDA")
def test_fp32_precision_follows_allow_tf32():
    torch.manual_seed(6)
    a = torch.randn(256, 4096, device=DEVICE)
    b = torch.randn(4096, 256, device=DEVICE)
    ref = torch.mm(a.double(), b.double()).float()
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        # ieee: fp32 rounding only; tf32 (10-bit mantissa inputs) would be ~1e-2 off here
        assert_close(ops.mm(a, b), ref, scale=32)
        torch.backends.cuda.matmul.allow_tf32 = True
        err = (ops.mm(a, b) - ref).abs().max().item()
        assert err < 0.5
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


if ON_GPU:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("M,N,K", [(1, 4096, 4096), (16, 4096, 4096), (16, 4096, 14336), (7, 14336, 4096),
                                       (128, 14336, 4096), (4096, 4096, 4096), (333, 4097, 515)])
    def test_mm_gpu_model_shapes(dtype, M, N, K):
        torch.manual_seed(7)
        x = torch.randn(M, K, dtype=dtype, device=DEVICE)
        w = torch.randn(N, K, dtype=dtype, device=DEVICE) / K ** 0.5
        check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=K)
        check(ops.mm(x, w.t().contiguous()), torch.mm, x, w.t(), k=K)

    @pytest.mark.parametrize("M", [1, 16, 4096])
    def test_mm_gpu_fp32(M):
        torch.manual_seed(8)
        x = torch.randn(M, 4096, device=DEVICE)
        w = torch.randn(4096, 4096, device=DEVICE)
        check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=4096)

    @pytest.mark.big_memory  # 4 GiB of output and as much again for the tuner's scratch output
    def test_mm_gpu_int64_offsets():
        # an output past 2**31 elements needs 64-bit offsets
        x = torch.randn(16384, 32, dtype=torch.bfloat16, device=DEVICE)
        w = torch.randn(131104, 32, dtype=torch.bfloat16, device=DEVICE)
        out = ops.mm(x, w.t())
        assert out.numel() > 2**31
        for rows in (slice(0, 8), slice(16376, 16384)):
            check(out[rows, -300:], torch.mm, x[rows], w[-300:].t(), k=32)
        del out


TMA_CFG = dict(TMA=1, BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
@pytest.mark.parametrize("split", [1, 2, 3])
def test_gemm_tma_persistent(dtype, layout, split):
    # the persistent tensor-descriptor variant the tuner may choose for 16-bit 2-D GEMMs.
    # Split K: partial tiles summed by whichever split arrives last; 3 (or 4) K steps in 2
    # or 3 splits leave a short or an empty last split. The second launch into a zeroed
    # output shows the arrival counters were reset by the first.
    torch.manual_seed(9)
    cfg = dict(TMA_CFG, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=8) if ON_GPU else TMA_CFG
    cfg = dict(cfg, SPLIT_K=split, FLATTEN=split == 1)
    M, N, K = (304, 520, 200) if ON_GPU else (40, 56, 40)  # multiples of 8: 16-byte TMA strides
    a, b = operand(M, K, dtype, layout[0]), operand(K, N, dtype, layout[1])
    bias = torch.randn(N, dtype=dtype, device=DEVICE)
    out = torch.empty(M, N, dtype=dtype, device=DEVICE)
    launch = run_config(cfg, a, (0, *a.stride()), b, (0, *b.stride()), out, bias, (0, 0, 1), 1, 2.0, 0.5)
    for _ in range(2):
        out.zero_()
        launch()
        check(out, lambda x, a, b: torch.addmm(x, a, b, beta=0.5, alpha=2.0), bias, a, b, k=K)


@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
@pytest.mark.parametrize("split", [1, 2])
def test_gemm_tma_batched(layout, split):
    # bmm/baddbmm through the persistent kernel: 3-D descriptors keep each tile inside its
    # own matrix (M, N, K not multiples of the blocks, so tiles overhang every edge)
    torch.manual_seed(16)
    cfg = dict(TMA_CFG, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=8) if ON_GPU else TMA_CFG
    cfg = dict(cfg, SPLIT_K=split, FLATTEN=split == 1)
    # M, N, K multiples of 8 (16-byte strides in either layout), not of the blocks
    B, M, N, K = (5, 200, 136, 120) if ON_GPU else (3, 24, 40, 24)
    dt = torch.bfloat16
    a = torch.randn(B, M, K, dtype=dt, device=DEVICE) if layout[0] == "n" else \
        torch.randn(B, K, M, dtype=dt, device=DEVICE).transpose(1, 2)
    b = torch.randn(B, K, N, dtype=dt, device=DEVICE) if layout[1] == "n" else \
        torch.randn(B, N, K, dtype=dt, device=DEVICE).transpose(1, 2)
    bias = torch.randn(B, M, N, dtype=dt, device=DEVICE)
    out = torch.empty(B, M, N, dtype=dt, device=DEVICE)
    run_config(cfg, a, a.stride(), b, b.stride(), out, bias, bias.stride(), B, 2.0, 0.5)()
    check(out, lambda x, a, b: torch.baddbmm(x, a, b, beta=0.5, alpha=2.0), bias, a, b, k=K)


def test_gemm_tma_broadcast_batch_not_applicable():
    # a batch broadcast by a 0 stride cannot be a TMA dimension: the classic kernel serves it
    a = torch.randn(1, 24, 16, dtype=torch.float16, device=DEVICE).expand(3, 24, 16)
    b = torch.randn(3, 16, 40, dtype=torch.float16, device=DEVICE)
    out = torch.empty(3, 24, 40, dtype=torch.float16, device=DEVICE)
    with pytest.raises(_gemm._NotApplicable):
        run_config(TMA_CFG, a, a.stride(), b, b.stride(), out, None, (0, 0, 0), 3, 1, 1)
    check(ops.bmm(a, b), torch.bmm, a, b, k=16)


def test_gemm_tma_not_applicable():
    # misaligned strides (odd K): the TMA launcher refuses, and gemm falls back to the default
    a = operand(20, 15, torch.float16)
    b = operand(15, 24, torch.float16)
    out = torch.empty(20, 24, dtype=torch.float16, device=DEVICE)
    with pytest.raises(_gemm._NotApplicable):
        run_config(TMA_CFG, a, (0, *a.stride()), b, (0, *b.stride()), out, None, (0, 0, 0), 1, 1, 1)


def test_gemm_tma_plan_and_fallback(monkeypatch):
    # a tuner that picks the TMA kernel: aligned calls run it, misaligned ones the fallback
    # (K > SHORT_K and SMALL_M < M <= MID_M: the "mm_mid_m" tuner's bucket)
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    monkeypatch.setattr(_gemm._TUNERS["mm_mid_m"], "choose", lambda key, run: TMA_CFG)
    torch.manual_seed(10)
    for K in (264, 265):  # 265: rows of x are not 16-byte aligned
        x, w = operand(70, K, torch.float16), operand(24, K, torch.float16)
        check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=K)
    # a 16-byte aligned layout whose base pointer is not aligned: the runner's fallback
    # (same strides as the K=264 call, so its TMA launcher is reused)
    x = torch.randn(70 * 264 + 1, dtype=torch.float16, device=DEVICE)[1:].view(70, 264)
    w = operand(24, 264, torch.float16)
    check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=264)
    assert len(_gemm._PLANS) == 2


@pytest.mark.parametrize("M,K,tuner", [(16, 300, "mm_small_m"), (70, 256, "mm_short_k"), (70, 257, "mm_mid_m"),
                                       (512, 257, "mm_mid_m"), (513, 257, "mm"), (600, 256, "mm_short_k"),
                                       (64, 32, "mm_small_m")])
def test_gemm_tuner_buckets(monkeypatch, M, K, tuner):
    # each 16-bit shape class asks its own tuner (its candidates suit that shape class)
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    asked = []
    for name, t in _gemm._TUNERS.items():
        monkeypatch.setattr(t, "choose", lambda key, run, name=name, t=t: asked.append(name) or t.default)
    torch.manual_seed(15)
    x, w = operand(M, K, torch.float16), operand(24, K, torch.float16)
    check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=K)
    assert asked == [tuner]


@pytest.mark.big_memory
def test_gemm_int64_offsets_path(monkeypatch):
    # the 64-bit offset variant (outputs past 2**31 elements) computes the same result
    monkeypatch.setattr(_gemm, "_needs_int64", lambda *args: True)
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    torch.manual_seed(11)
    x, w = operand(20, 24, torch.float32), operand(18, 24, torch.float32)
    bias = torch.randn(18, device=DEVICE)
    check(ops.addmm(bias, x, w.t()), torch.addmm, bias, x, w.t(), k=24)
    x = operand(3, 24, torch.float16)
    check(ops.mm(x, w.t().half()), torch.mm, x, w.t().half(), k=24)


def test_tuning_on_a_miss(monkeypatch, tmp_path):
    # what a GPU does on a cache miss, with fake timings: every candidate runs into a scratch
    # output (an in-place addmm_ bias is updated once), inapplicable TMA configs are skipped,
    # and the fastest config serves the call
    from gemsops.runtime import Tuner
    from gemsops.runtime import tuner as tuner_mod
    from gemsops.ops.addmm import addmm_inplace

    monkeypatch.setenv("GEMS_CACHE_DIR", str(tmp_path))
    fake = Tuner("mm_fp32_tuning_test", kernels=_gemm._TUNERS["mm"].kernels)
    fast = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, GROUP_M=1, SPLIT_K=2)
    fake.default = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=1, SPLIT_K=1)
    fake.candidates = [dict(TMA_CFG), fake.default, fast]
    monkeypatch.setitem(_gemm._TUNERS, "mm_fp32", fake)
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    monkeypatch.setattr(tuner_mod, "can_benchmark", lambda: True)
    used = []  # the config of each run (the tuner's compile pass, its timing, the call)
    real_runner = _gemm._runner

    def spy(cfg, *args):
        run = real_runner(cfg, *args)
        return lambda *call: (used.append(cfg), run(*call))[1]

    monkeypatch.setattr(_gemm, "_runner", spy)
    monkeypatch.setattr(tuner_mod, "benchmark", lambda fn: (fn(), 1.0 if used[-1] is fast else 2.0)[1])
    torch.manual_seed(12)
    c = torch.randn(20, 18, device=DEVICE)
    x, y = torch.randn(20, 24, device=DEVICE), torch.randn(24, 18, device=DEVICE)
    want = torch.addmm(c, x, y, beta=0.5)
    addmm_inplace(c, x, y, beta=0.5)
    check(c, lambda: want, k=24)
    # compile pass, first run, timed run, then the call itself from the plan
    assert used[-1] is fast and sum(cfg is fast for cfg in used) == 4
    assert tuner_mod.stats.benchmarks_run >= 3


def test_split_k_workspace_cap_falls_back(monkeypatch):
    # a split-K config whose workspace would exceed the cap serves through a non-split config
    monkeypatch.setattr(_gemm, "_MAX_WORKSPACE", 100)
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    torch.manual_seed(13)
    a, b = torch.randn(3, 5, 40, device=DEVICE), torch.randn(3, 40, 20, device=DEVICE)
    check(ops.bmm(a.half(), b.half()), torch.bmm, a.half(), b.half(), k=40)


def test_plan_during_graph_capture(monkeypatch):
    # under CUDA graph capture: no tuning, no new split-K workspace, no cached plan
    monkeypatch.setattr(_gemm, "_PLANS", Plans())
    monkeypatch.setattr(_gemm, "_capturing", lambda: True)
    monkeypatch.setattr(_gemm._TUNERS["mm_small_m"], "choose", None)  # must not be asked
    torch.manual_seed(14)
    x, w = operand(4, 40, torch.float16), operand(24, 40, torch.float16)
    check(ops.mm(x, w.t()), torch.mm, x, w.t(), k=40)
    assert not _gemm._PLANS


if ON_GPU:
    def test_mm_gpu_cuda_graph():
        # warm up (tunes and plans), then capture and replay: decode-sized split-K GEMMs
        x = torch.randn(16, 4096, dtype=torch.bfloat16, device=DEVICE)
        w = torch.randn(4096, 4096, dtype=torch.bfloat16, device=DEVICE) / 64
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            ops.mm(x, w.t())
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = ops.mm(x, w.t())
        for _ in range(3):
            x.copy_(torch.randn_like(x))
            graph.replay()
            torch.cuda.synchronize()
            check(y, torch.mm, x, w.t(), k=4096)


@pytest.mark.skipif(not ON_GPU, reason="the interpreter uses each tuner's default only")
@pytest.mark.parametrize("tuner", sorted(_gemm._TUNERS))
def test_every_candidate_config_computes_the_product(tuner):
    # whichever config the tuner picks on this machine must be right, on partial tiles and
    # both operand layouts of nn.Linear; K = 300 leaves a partial K step (and unaligned rows
    # that TMA configs refuse), K = 304 gives the TMA configs aligned rows
    dtype = torch.float32 if tuner == "mm_fp32" else torch.bfloat16
    torch.manual_seed(2)
    for K in (300, 304):
        M = 40 if tuner == "mm_small_m" else 130
        a = operand(M, K, dtype)
        w = operand(200, K, dtype)
        for b in (w.t(), w.t().contiguous()):
            ref = torch.mm(a.double(), b.double())
            for cfg in _gemm._TUNERS[tuner].candidates:
                out = torch.empty(M, 200, device=DEVICE, dtype=dtype)
                try:
                    launch = run_config(cfg, a, (0, *a.stride()), b, (0, *b.stride()), out, None, (0, 0, 0), 1, 1, 1)
                except _gemm._NotApplicable:
                    continue
                launch()
                assert_close(out, ref.to(dtype), dtype, scale=8, msg=lambda m, cfg=cfg: f"{cfg}: {m}")
